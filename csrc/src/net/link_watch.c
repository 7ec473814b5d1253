/* TCP over a link that dies without a reset (a cable pulled, a port or an
 * interface down) retransmits for about 15 minutes before it reports
 * anything, and an op in flight on it can be neither completed nor posted
 * again (its bytes could still land later, over newer ones). With
 * TCP_USER_TIMEOUT the kernel aborts a connection whose data went
 * unacknowledged that long and drops what it had not sent; libfabric then
 * fails the ops on it and the failover posts them again. Keepalive covers a
 * connection with nothing to send (a READ waiting for its data, the
 * target's end of a stream), which TCP_USER_TIMEOUT then bounds too, so the
 * peer's end of a dead connection goes as well and does not block the new
 * one (rxm refuses a second connection from the same process).
 *
 * libfabric does not hand out its sockets, so the progress thread looks
 * through the process's descriptors and sets the options on the agent's own
 * TCP sockets only: its rails' listeners (bound to a rail's address and
 * port; the sockets they accept inherit the options) and connections from a
 * rail's address to a peer's rail address (rxm binds them to the rail's).
 * Each descriptor is duplicated before it is looked at, so what is checked
 * is what is set even if its owner closes and reuses the number meanwhile
 * (libfabric takes a socket out of its poll sets before closing it, so the
 * duplicate's short life cannot feed it a stale event). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/clock.h"
#include "net/link_watch.h"
#include "net/peer.h"

/* Connections are made when work is first posted to a peer on a rail; a
 * look soon after catches them before a failure can matter. A process with
 * many descriptors makes a look slow: the next one then waits LOOK_COST
 * times as long as it took, which keeps looking under 1% of the thread. */
#define LOOK_EVERY_NS 250000000ull
#define LOOK_COST 100

/* An IP socket address in a form compared by bytes (IPv4 as v4-mapped). */
struct ip_end {
    uint8_t addr[16];
    uint16_t port;
};

static int ip_end_of(const void *sa, size_t len, struct ip_end *out)
{
    sa_family_t fam;
    memset(out, 0, sizeof *out);
    if (len < sizeof fam)
        return 0;
    memcpy(&fam, sa, sizeof fam);
    if (fam == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        out->addr[10] = out->addr[11] = 0xff;
        memcpy(out->addr + 12, &in.sin_addr, 4);
        out->port = in.sin_port;
        return 1;
    }
    if (fam == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        memcpy(out->addr, &in6.sin6_addr, 16);
        out->port = in6.sin6_port;
        return 1;
    }
    return 0;
}

/* 0.0.0.0 or ::: the rail listens on every address. */
static int any_addr(const struct ip_end *e)
{
    static const uint8_t v4any[16] = {[10] = 0xff, [11] = 0xff};
    static const uint8_t v6any[16];
    return !memcmp(e->addr, v4any, 16) || !memcmp(e->addr, v6any, 16);
}

static int ip_end_cmp(const void *x, const void *y)
{
    return memcmp(x, y, sizeof(struct ip_end));
}

/* What is the agent's: its rails' addresses, and its peers' on each rail
 * (sorted). */
struct ours {
    struct ip_end rail[IXFER_MAX_RAILS];
    uint32_t nrails;
    struct ip_end *peer;
    size_t npeers, cap;
};

static void add_peer_end(struct ours *o, struct fid_av *av, fi_addr_t fa)
{
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    struct ip_end e;
    if (fi_av_lookup(av, fa, &ss, &len) || !ip_end_of(&ss, len, &e))
        return;
    if (o->npeers == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        struct ip_end *p = realloc(o->peer, cap * sizeof *p);
        if (!p)
            return; /* that peer's connections are looked at next time */
        o->peer = p;
        o->cap = cap;
    }
    o->peer[o->npeers++] = e;
}

static void collect(struct ixfer_agent *a, struct ours *o)
{
    o->nrails = 0;
    for (uint32_t i = 0; i < a->net_rails; i++) { /* the shm rail has no socket */
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        if (!fi_getname(&a->rails[i].ep->fid, &ss, &len) && ip_end_of(&ss, len, &o->rail[o->nrails]))
            o->nrails++;
    }
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        if (!p->inserts)
            continue;
        for (uint32_t i = 0; i < p->nrails && i < a->net_rails; i++)
            add_peer_end(o, a->rails[i].av, i ? p->rail_fa[i] : p->fa);
    }
    if (o->npeers > 1)
        qsort(o->peer, o->npeers, sizeof *o->peer, ip_end_cmp);
}

/* Whether the socket from local to remote (remote NULL: not connected) is
 * one of the agent's. */
static int is_ours(const struct ours *o, const struct ip_end *local, const struct ip_end *remote)
{
    for (uint32_t i = 0; i < o->nrails; i++) {
        const struct ip_end *r = &o->rail[i];
        int any = any_addr(r);
        if (!any && memcmp(r->addr, local->addr, 16))
            continue;
        if (r->port == local->port)
            return 1; /* a listener, or a connection it accepted */
        if (remote && o->npeers && bsearch(remote, o->peer, o->npeers, sizeof *o->peer, ip_end_cmp))
            return 1;
    }
    return 0;
}

static int get_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len))
        return -1;
    return v;
}

/* The options on fd (a TCP socket): the kernel aborts the connection after
 * timeout_ms without an acknowledgement of data or of a keepalive probe;
 * probes start after a third of it without a word from the peer (at least
 * 1 s: their unit). */
static void arm(int fd, uint32_t timeout_ms)
{
    int ms = (int)timeout_ms, on = 1;
    int idle = ms / 3000 > 0 ? ms / 3000 : 1;
    int count = ms / 1000 / idle + 1;
    if (count > 127)
        count = 127;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    /* Last: it marks the socket done for the next look. */
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
}

/* Connections being made from a rail's address, kept open (duplicated)
 * until their peer is known. */
#define MAX_CONNECTING 64
struct connecting {
    int fd[MAX_CONNECTING];
    ino_t ino[MAX_CONNECTING];
    size_t n;
};

/* Whether local is a rail's address (any port but the rail's own). */
static int from_rail(const struct ours *o, const struct ip_end *local)
{
    for (uint32_t i = 0; i < o->nrails; i++)
        if ((any_addr(&o->rail[i]) || !memcmp(o->rail[i].addr, local->addr, 16)) &&
            o->rail[i].port != local->port)
            return 1;
    return 0;
}

/* Looks at descriptor fd (a copy of it) when it is a socket. One that is
 * still connecting from a rail's address (after a link died, rxm's new
 * connection waits on SYN retransmissions that come ever further apart) goes
 * to c: its peer's address is not known yet. */
static void look_at(const struct ours *o, int fd, uint32_t timeout_ms, struct connecting *c)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return;
    struct stat st;
    struct sockaddr_storage ls, rs;
    socklen_t llen = sizeof ls, rlen = sizeof rs;
    struct ip_end local, remote;
    if (fstat(d, &st) == 0 && S_ISSOCK(st.st_mode) && get_int(d, SOL_SOCKET, SO_TYPE) == SOCK_STREAM &&
        get_int(d, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP &&
        get_int(d, IPPROTO_TCP, TCP_USER_TIMEOUT) != (int)timeout_ms &&
        !getsockname(d, (struct sockaddr *)&ls, &llen) && ip_end_of(&ls, llen, &local)) {
        int connected = !getpeername(d, (struct sockaddr *)&rs, &rlen) && ip_end_of(&rs, rlen, &remote);
        if (is_ours(o, &local, connected ? &remote : NULL)) {
            arm(d, timeout_ms);
        } else if (!connected && c->n < MAX_CONNECTING && from_rail(o, &local)) {
            struct tcp_info ti;
            socklen_t tlen = sizeof ti;
            if (!getsockopt(d, IPPROTO_TCP, TCP_INFO, &ti, &tlen) && ti.tcpi_state == TCP_SYN_SENT) {
                c->fd[c->n] = d;
                c->ino[c->n++] = st.st_ino;
                return;
            }
        }
    }
    close(d);
}

/* Arms the connections in c whose peer (as sock_diag reports it for their
 * inode) is a peer's rail address, and closes them all. */
static void settle_connecting(const struct ours *o, struct connecting *c, uint32_t timeout_ms)
{
    int nl = c->n ? socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG) : -1;
    struct timeval wait = {.tv_sec = 0, .tv_usec = 100000}; /* the kernel answers at once */
    if (nl >= 0)
        setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    static const uint8_t families[] = {AF_INET, AF_INET6};
    for (size_t f = 0; nl >= 0 && f < sizeof families; f++) {
        struct {
            struct nlmsghdr h;
            struct inet_diag_req_v2 r;
        } req = {
            .h = {.nlmsg_len = sizeof req, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                  .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
            .r = {.sdiag_family = families[f], .sdiag_protocol = IPPROTO_TCP,
                  .idiag_states = 1u << TCP_SYN_SENT},
        };
        if (send(nl, &req, sizeof req, 0) != (ssize_t)sizeof req)
            break;
        long buf[8192 / sizeof(long)];
        for (int done = 0; !done;) {
            int n = (int)recv(nl, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) {
                    done = 1; /* NLMSG_DONE, or an error */
                    break;
                }
                const struct inet_diag_msg *m = NLMSG_DATA(h);
                struct ip_end remote = {.port = m->id.idiag_dport};
                if (m->idiag_family == AF_INET) {
                    remote.addr[10] = remote.addr[11] = 0xff;
                    memcpy(remote.addr + 12, m->id.idiag_dst, 4);
                } else {
                    memcpy(remote.addr, m->id.idiag_dst, 16);
                }
                for (size_t i = 0; i < c->n; i++)
                    if (c->ino[i] == m->idiag_inode && o->npeers &&
                        bsearch(&remote, o->peer, o->npeers, sizeof *o->peer, ip_end_cmp))
                        arm(c->fd[i], timeout_ms);
            }
        }
    }
    if (nl >= 0)
        close(nl);
    for (size_t i = 0; i < c->n; i++)
        close(c->fd[i]);
    c->n = 0;
}

void ixfer_link_watch_tick(struct ixfer_agent *a)
{
    if (!a->link_timeout_ms)
        return;
    /* Submissions count notifications, which make connections too. */
    uint64_t ops = atomic_load(&a->submitted);
    for (uint32_t i = 0; i < a->nrails; i++)
        ops += a->rails[i].stats.ops;
    if (a->link_looked && ops == a->link_ops)
        return;
    uint64_t now = ixfer_now_ns();
    if (a->link_looked && now < a->link_next_ns)
        return;
    a->link_looked = 1;
    a->link_ops = ops;
    if (!ixfer_wire_is_tcp(a)) {
        a->link_timeout_ms = 0; /* no kernel TCP under it */
        return;
    }
    a->link_next_ns = now + LOOK_EVERY_NS;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return;
    struct ours o = {.nrails = 0};
    struct connecting c = {.n = 0};
    collect(a, &o);
    struct dirent *e;
    while ((e = readdir(dir))) {
        char *end, target[16];
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd < 0 || fd == dirfd(dir))
            continue;
        /* By name first: only sockets are touched. */
        ssize_t n = readlinkat(dirfd(dir), e->d_name, target, sizeof target);
        if (n >= 7 && !memcmp(target, "socket:", 7))
            look_at(&o, (int)fd, a->link_timeout_ms, &c);
    }
    closedir(dir);
    settle_connecting(&o, &c, a->link_timeout_ms);
    free(o.peer);
    uint64_t took = ixfer_now_ns() - now;
    a->link_next_ns = now + (took * LOOK_COST > LOOK_EVERY_NS ? took * LOOK_COST : LOOK_EVERY_NS);
}
