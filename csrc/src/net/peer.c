/* Peer records, owned by the progress thread. A record outlives its removal
 * from the AV for as long as requests, notification jobs or their
 * completions refer to it, so that an fi_addr is never reused by a new
 * insert while stale work could still be posted to it.
 *
 * A dead peer: rxm (1.17) retries its connection on every post and reports
 * nothing but -FI_EAGAIN, forever. A peer refusing posts while nothing of
 * ours is with the provider has no connection; when its wire is kernel TCP
 * (tcp, sockets) a nonblocking connect to it tells at once
 * whether a process still listens there. Otherwise, or if the probe keeps
 * connecting, the peer is declared gone after a stall deadline. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "net/peer.h"

#define PROBE_AFTER_NS 10000000ull   /* a live peer on a LAN answers rxm in ~1 ms */
#define REPROBE_NS 100000000ull      /* a probe that connected: look again later */
/* A peer serving our staged requests may be slow to reply without being
 * gone: probe it only after this long without a word. */
#define SILENT_PROBE_AFTER_NS 100000000ull
#define STALL_DEFAULT_MS 5000
#define SHM_WATCH_EVERY_NS 10000000ull

/* IXFER_PEER_STALL_MS: how long a peer may refuse every post, with nothing of
 * ours outstanding to it, before its work fails (read once). */
static uint64_t stall_ns(void)
{
    static uint64_t cached;
    uint64_t v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!v) {
        const char *s = getenv("IXFER_PEER_STALL_MS");
        char *end = NULL;
        long ms = s ? strtol(s, &end, 10) : 0;
        if (!s || !*s || *end || ms <= 0 || ms > 86400000)
            ms = STALL_DEFAULT_MS;
        v = (uint64_t)ms * 1000000ull;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

int32_t ixfer_peer_addr_check(const struct ixfer_agent *a, const uint8_t *addr, uint64_t len)
{
    if (len == 0 || len > 4096)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "peer address of %llu bytes",
                          (unsigned long long)len);
    /* The provider reads the address by its format (a string up to its NUL,
     * a sockaddr by its size): hostile bytes must not make it read past what
     * we hold. */
    uint32_t format = a->info->addr_format;
    if (format == FI_ADDR_STR && memchr(addr, 0, len) != addr + len - 1)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM,
                          "a string (FI_ADDR_STR) peer address must be NUL-terminated text");
    if ((format == FI_SOCKADDR_IN && len != sizeof(struct sockaddr_in)) ||
        (format == FI_SOCKADDR_IN6 && len != sizeof(struct sockaddr_in6)))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "peer address of %llu bytes for a %s endpoint",
                          (unsigned long long)len,
                          format == FI_SOCKADDR_IN ? "sockaddr_in" : "sockaddr_in6");
    return IXFER_OK;
}

struct net_peer *ixfer_peer_find(struct ixfer_agent *a, fi_addr_t fa)
{
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        if (p->fa == fa)
            return p->inserts ? p : NULL;
    }
    return NULL;
}

/* Closes a probe socket with a reset, not a FIN: a probe that reached a
 * live peer was accepted by its provider's listener, and libfabric 1.17's
 * tcp keeps a half-closed socket that sent no connection request in its
 * poll set, readable at EOF forever, so that peer's progress thread spins. */
static void probe_abort(int fd)
{
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(fd);
}

static void probe_close(struct net_peer *p)
{
    if (p->probe_fd >= 0)
        probe_abort(p->probe_fd);
    p->probe_fd = -1;
}

/* Not udp;ofi_rxd or verbs;ofi_rxm, whose socket addresses have no TCP
 * listener: a probe would call a live peer gone. */
int ixfer_wire_is_tcp(const struct ixfer_agent *a)
{
    const char *name = a->info->fabric_attr->prov_name;
    size_t core = strcspn(name, ";");
    return (core == 3 && !strncmp(name, "tcp", 3)) || (core == 7 && !strncmp(name, "sockets", 7)) ||
           (core == 3 && !strncmp(name, "net", 3));
}

/* Whether a connect to addr tells if the peer still listens. */
static int can_probe(const struct ixfer_agent *a, const void *addr, size_t len)
{
    sa_family_t fam;
    if (!ixfer_wire_is_tcp(a))
        return 0;
    if (len < sizeof fam || len > sizeof(struct sockaddr_storage))
        return 0;
    memcpy(&fam, addr, sizeof fam);
    if (a->info->addr_format == FI_SOCKADDR_IN)
        return fam == AF_INET && len >= sizeof(struct sockaddr_in);
    if (a->info->addr_format == FI_SOCKADDR_IN6)
        return fam == AF_INET6 && len >= sizeof(struct sockaddr_in6);
    return 0;
}

int ixfer_peer_added(struct ixfer_agent *a, fi_addr_t fa, const void *addr, size_t len,
                     const fi_addr_t *rail_fa, uint32_t nrails)
{
    struct net_peer *p = NULL;
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        struct net_peer *q = ixfer_container_of(n, struct net_peer, link);
        if (q->fa == fa)
            p = q;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return -1;
        p->fa = fa;
        p->probe_fd = -1;
        if (can_probe(a, addr, len)) {
            memcpy(&p->sa, addr, len);
            p->salen = (socklen_t)len;
        }
        ixfer_list_push_back(&a->peers, &p->link);
    }
    /* The same address inserted again (a reload): a fresh start. An insert
     * of rail 0 only (staging.c's, of an initiator) leaves the rails. */
    p->rail_fa[0] = fa;
    if (!p->nrails)
        p->nrails = 1;
    if (rail_fa && nrails > 1) {
        for (uint32_t i = 1; i < nrails; i++)
            p->rail_fa[i] = rail_fa[i];
        p->nrails = nrails;
        p->rail_inserts++;
    }
    /* The caller's insert (rail_fa given) routes it over shm again or not;
     * staging.c's insert of an initiator it serves leaves its route as it
     * is: requests packed in shm's form go on over shm. */
    if (rail_fa)
        p->shm = 0;
    p->inserts++;
    p->state = PEER_OK;
    p->stall_since_ns = 0;
    p->silent_since_ns = 0;
    probe_close(p);
    return 0;
}

void ixfer_peer_shm_added(struct ixfer_agent *a, fi_addr_t fa, fi_addr_t shm_fa)
{
    struct net_peer *p = ixfer_peer_find(a, fa);
    if (!p) { /* removed meanwhile: the entry goes at once */
        fi_av_remove(a->rails[a->shm_rail].av, &shm_fa, 1, 0);
        return;
    }
    /* libfabric's AV gives one address the same entry each time, so the
     * entries are removed as often as inserted, with the record. */
    p->rail_fa[a->shm_rail] = shm_fa;
    p->shm_inserts++;
    p->shm = 1;
}

static void maybe_free(struct ixfer_agent *a, struct net_peer *p)
{
    if (p->refs)
        return;
    for (; p->av_owed; p->av_owed--)
        fi_av_remove(a->av, &p->fa, 1, 0);
    if (p->inserts)
        return;
    /* The other rails' entries go with the record: every insert with rails
     * named the same addresses. */
    for (; p->rail_inserts; p->rail_inserts--)
        for (uint32_t i = 1; i < p->nrails; i++)
            fi_av_remove(a->rails[i].av, &p->rail_fa[i], 1, 0);
    for (; p->shm_inserts; p->shm_inserts--)
        fi_av_remove(a->rails[a->shm_rail].av, &p->rail_fa[a->shm_rail], 1, 0);
    probe_close(p);
    ixfer_list_remove(&p->link);
    free(p);
}

int ixfer_peer_removed(struct ixfer_agent *a, fi_addr_t fa)
{
    struct net_peer *p = ixfer_peer_find(a, fa);
    if (!p)
        return 1;
    p->inserts--;
    p->av_owed++;
    int gone = !p->inserts;
    if (gone)
        p->state = PEER_REMOVED;
    maybe_free(a, p);
    return gone;
}

void ixfer_peer_ref(struct net_peer *p)
{
    if (p)
        p->refs++;
}

void ixfer_peer_unref(struct ixfer_agent *a, struct net_peer *p)
{
    if (p && !--p->refs)
        maybe_free(a, p);
}

int32_t ixfer_peer_may_post(const struct net_peer *p)
{
    return p && p->state == PEER_OK ? IXFER_OK : IXFER_ERR_REMOTE_DISCONNECT;
}

void ixfer_peer_posted(struct net_peer *p)
{
    if (p->shm && !p->outstanding)
        p->shm_heard_ns = ixfer_now_ns();
    p->outstanding++;
    p->stall_since_ns = 0;
    p->silent_since_ns = 0;
}

void ixfer_peer_op_done(struct net_peer *p, int fi_err)
{
    if (!p)
        return;
    p->outstanding--;
    if (p->shm)
        p->shm_heard_ns = ixfer_now_ns();
    /* The connection broke (rxm flushes its ops as canceled): probe on the
     * next refusal instead of waiting PROBE_AFTER_NS. A bad remote key also
     * drops a connection while the peer lives, so this alone is no verdict. */
    if (fi_err == FI_ECANCELED || fi_err == FI_ENOTCONN || fi_err == FI_ECONNRESET ||
        fi_err == FI_ECONNABORTED || fi_err == EPIPE || fi_err == FI_ECONNREFUSED)
        p->stall_since_ns = ixfer_now_ns() - PROBE_AFTER_NS;
}

/* One step of the probe; returns whether it found nobody listening. */
static int probe_step(struct net_peer *p, uint64_t now)
{
    if (p->probe_fd < 0) {
        if (now < p->next_probe_ns)
            return 0;
        int fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return 0;
        if (connect(fd, (struct sockaddr *)&p->sa, p->salen) == 0) {
            probe_abort(fd);
            p->next_probe_ns = now + REPROBE_NS;
            return 0;
        }
        if (errno != EINPROGRESS) {
            int err = errno;
            close(fd);
            return err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH;
        }
        p->probe_fd = fd;
    }
    struct pollfd pfd = {.fd = p->probe_fd, .events = POLLOUT};
    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(p->probe_fd, SOL_SOCKET, SO_ERROR, &err, &len);
    probe_close(p);
    p->next_probe_ns = now + REPROBE_NS;
    return err == ECONNREFUSED || err == ECONNRESET || err == ENETUNREACH ||
           err == EHOSTUNREACH;
}

void ixfer_peer_refused(struct net_peer *p)
{
    if (!p || p->state != PEER_OK || p->outstanding)
        return; /* ops in flight: the provider is merely busy */
    uint64_t now = ixfer_now_ns();
    if (!p->stall_since_ns)
        p->stall_since_ns = now;
    uint64_t stalled = now - p->stall_since_ns;
    if ((p->salen && stalled >= PROBE_AFTER_NS && probe_step(p, now)) || stalled >= stall_ns()) {
        p->state = PEER_GONE;
        probe_close(p);
    }
}

int ixfer_peer_silent(struct net_peer *p)
{
    if (!p || p->state != PEER_OK || p->outstanding)
        return 0;
    uint64_t now = ixfer_now_ns();
    if (!p->silent_since_ns)
        p->silent_since_ns = now;
    uint64_t silent = now - p->silent_since_ns;
    if ((p->salen && silent >= SILENT_PROBE_AFTER_NS && probe_step(p, now)) ||
        silent >= stall_ns()) {
        p->state = PEER_GONE;
        probe_close(p);
        return 0;
    }
    return 1;
}

void ixfer_peer_heard(struct net_peer *p)
{
    if (p)
        p->silent_since_ns = 0;
}

int ixfer_peers_watch_shm(struct ixfer_agent *a, int *gone)
{
    uint64_t now = ixfer_now_ns();
    if (now < a->shm_watch_ns) /* the thread passes here often; the peers may be many */
        return a->shm_watching;
    a->shm_watch_ns = now + SHM_WATCH_EVERY_NS;
    int again = 0;
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        if (!p->shm || p->state != PEER_OK || !p->outstanding)
            continue;
        if (p->salen && now - p->shm_heard_ns >= SILENT_PROBE_AFTER_NS && probe_step(p, now)) {
            p->state = PEER_GONE;
            probe_close(p);
            *gone = 1;
            continue;
        }
        again = 1;
    }
    a->shm_watching = again;
    return again;
}

void ixfer_peers_fini(struct ixfer_agent *a)
{
    IXFER_LIST_FOR_EACH_SAFE(n, &a->peers) {
        struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        probe_close(p);
        free(p);
    }
    ixfer_list_init(&a->peers);
}
