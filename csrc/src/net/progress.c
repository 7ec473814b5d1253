/* The agent's progress thread. It owns every request, peer and
 * notification. With one rail it alone posts operations to and reads the CQ
 * of the rail; with several, each rail has a worker (rail_worker.c) that
 * posts the transfer ops handed to it and reads its CQ, and this thread only
 * keeps the books (and posts notifications and staged pieces on rail 0,
 * rail_worker.h). Data progress is manual on tcp, EFA and CXI, so a target
 * that nobody progresses never receives a write. It sleeps on the CQ's wait
 * fd and an eventfd of its own (or, on CQs without a usable wait fd, polls
 * the CQ with short growing sleeps on that eventfd), and is woken through the
 * eventfd when work is submitted (or a worker hands something back) while it
 * sleeps; after activity it watches for work (spin()) and submitters write
 * nothing. Posting here rather than on the caller's thread keeps the
 * provider's copying (tcp sends the data while posting) off the JavaScript
 * thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/tuning.h"
#include "net/fabric_api.h"
#include "net/link_watch.h"
#include "net/mr.h"
#include "net/notify.h"
#include "net/peer.h"
#include "net/progress.h"
#include "net/staging.h"
#include "net/wake.h"

#define CQ_BATCH 64
#define MAX_IOV 16          /* cap on pairs per op, whatever the provider says */
#define IDLE_WAIT_MS 1000   /* a safety net only: no wake-up can be lost (wait_cq) */
#define POLL_MIN_NS 50000   /* first sleep of a polling thread after activity */
#define CLOSE_DRAIN_NS 1000000000ull /* ops still out when the agent closes: drain_ops */
#define DRAIN_NAP_NS 200000
#define SHM_WATCH_NS 50000000ull /* looks at shm peers with ops out (peer.h) this often */

/* Why not fi_cq_signal + fi_cq_sread: in libfabric 1.17 ofi_cq_sreadfrom
 * checks cq->wakeup and then calls fi_wait, whose util_wait_fd_try starts
 * with fd_signal_reset(): a signal landing between the two is drained and the
 * thread sleeps its whole timeout (one transfer took a second). Our own
 * eventfd is never reset by libfabric. Why poll some CQs: shm's wait
 * object is FI_WAIT_YIELD, whose wait busy-waits on every version and on 1.17
 * ignores the timeout; EFA before 2.5 refuses any wait object. */
int32_t ixfer_progress_open_cq(struct net_rail *r)
{
    r->wait_fd = -1;
    struct fi_cq_attr attr = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_UNSPEC};
    int ret = fi_cq_open(r->domain, &attr, &r->cq, NULL);
    if (ret == 0) {
        enum fi_wait_obj obj = FI_WAIT_NONE;
        int fd = -1;
        if (fi_control(&r->cq->fid, FI_GETWAITOBJ, &obj) == 0 && obj == FI_WAIT_FD &&
            fi_control(&r->cq->fid, FI_GETWAIT, &fd) == 0 && fd >= 0) {
            r->wait_fd = fd;
            return IXFER_OK;
        }
        fi_close(&r->cq->fid);
        r->cq = NULL;
    } else if (ret != -FI_ENOSYS && ret != -FI_EINVAL) {
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_cq_open: %s", ixfer_fab.strerror(-ret));
    }
    attr.wait_obj = FI_WAIT_NONE;
    ret = fi_cq_open(r->domain, &attr, &r->cq, NULL);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_cq_open: %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

void ixfer_submit(struct ixfer_agent *a, struct submission *s)
{
    pthread_mutex_lock(&a->submit_lock);
    ixfer_list_push_back(&a->submissions, &s->link);
    pthread_mutex_unlock(&a->submit_lock);
    ixfer_progress_poke(a);
}

/* Hands r's notification to the sender. expected: tagged writes the receiver
 * must count before delivering it. */
static void send_notif(struct ixfer_agent *a, struct xfer_request *r, uint64_t expected)
{
    ixfer_notif_job_expect(r->notif, r->tag, expected);
    r->notif_state = NOTIF_SENDING;
    ixfer_notify_enqueue(a, r->notif);
}

static void request_notified(struct ixfer_agent *a, void *ctx, int32_t status, int32_t fi_errno);

/* Reports and frees a request once it is settled (core/request.h) and its
 * notification, if any, is sent: the data must be in place before the peer
 * hears of it, and the caller hears of both at once. */
static void maybe_finish(struct ixfer_agent *a, struct xfer_request *r)
{
    if (!ixfer_request_settled(&r->base))
        return;
    int32_t status = ixfer_request_outcome(&r->base);
    if (r->notif_state == NOTIF_WAITING && status == IXFER_OK) {
        /* READ, or WRITE without CQ data: the data is in place now. */
        send_notif(a, r, 0);
        return;
    }
    if (r->notif_state == NOTIF_SENDING)
        return;
    if (r->release && status == IXFER_OK) {
        /* Every piece is in place now, and the receiver may count short. */
        r->release = 0;
        r->notif = ixfer_notif_job_release(r->peer, r->tag);
        if (r->notif) {
            ixfer_notif_job_attach(r->notif, request_notified, r);
            r->notif_state = NOTIF_SENDING;
            ixfer_notify_enqueue(a, r->notif);
            return;
        }
        ixfer_request_fail(&r->base, IXFER_ERR_BACKEND, 0, 0);
        status = IXFER_ERR_BACKEND;
    }
    if (r->notif_state == NOTIF_WAITING)
        ixfer_notif_job_free(r->notif);
    ixfer_peer_unref(a, r->np);
    ixfer_request_end(&a->events, &r->base);
}

/* notify.c reports that the notification of r was sent (or not). */
static void request_notified(struct ixfer_agent *a, void *ctx, int32_t status, int32_t fi_errno)
{
    /* Also the release's report: maybe_finish sends it once the message is out. */
    struct xfer_request *r = ctx;
    r->notif_state = NOTIF_NONE;
    r->notif = NULL; /* freed by notify.c */
    ixfer_request_fail(&r->base, status, fi_errno, 0);
    maybe_finish(a, r);
}

static void fail_request(struct xfer_request *r, int fi_err)
{
    ixfer_request_fail(&r->base, ixfer_status_of(fi_err), fi_err, 0);
}

/* Whether r goes on the shm rail alone: its peer is on this host. */
static int via_shm(const struct ixfer_agent *a, const struct xfer_request *r)
{
    return a->shm_rail && r->np && r->np->shm && !r->net;
}

/* A peer's shm worker sleeps without a timeout once cold (RAIL_WARM_NS
 * after its last traffic) and cannot be woken from another process: a nudge
 * over rail 0 wakes it (notify.c), before our ops reach it. Sent when the
 * last one is older than the worker's longest poll sleep (it may be in one,
 * or cold), at most SHM_NUDGE_MAX_NS apart while we post, well inside its
 * warm spell; and again while ops stay out (the nudge lost, or late). */
#define SHM_NUDGE_MAX_NS (RAIL_WARM_NS / 3)
#define SHM_RENUDGE_NS 10000000ull

static void shm_nudge(struct ixfer_agent *a, struct net_peer *p, uint64_t now)
{
    p->shm_nudged_ns = now;
    ixfer_notify_nudge(a, p->fa);
}

static void shm_renudge(struct ixfer_agent *a)
{
    uint64_t now = ixfer_now_ns();
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        if (p->shm && p->state == PEER_OK && p->outstanding &&
            now - p->shm_nudged_ns >= SHM_RENUDGE_NS)
            shm_nudge(a, p, now);
    }
}

/* Rails both ends of r have (one, the shm rail, when via_shm). */
static uint32_t shared_rails(const struct ixfer_agent *a, const struct xfer_request *r)
{
    if (via_shm(a, r))
        return 1;
    return r->np && r->np->nrails < a->net_rails ? r->np->nrails : a->net_rails;
}

/* Rail rail went out of use or came back towards peer fa (FI_ADDR_UNSPEC:
 * every peer). */
static void rail_event(struct ixfer_agent *a, uint32_t rail, fi_addr_t fa, int32_t status,
                       int fi_err)
{
    ixfer_event ev = {.user_id = fa, .type = IXFER_EVENT_RAIL, .status = status,
                      .fi_errno = fi_err, .reserved = rail};
    ixfer_events_push(&a->events, &ev);
}

/* Updates rail i's stats.up (whether some live peer that has it may use it)
 * and peers_down (peers not removed it rests for) from the peers' states, on
 * a change only (the table is bounded, peer.c). */
static void rail_recount(struct ixfer_agent *a, uint32_t i)
{
    uint32_t live = 0, live_down = 0, down = 0;
    IXFER_LIST_FOR_EACH(n, &a->peers) {
        const struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
        if (p->state == PEER_REMOVED || p->nrails <= i)
            continue;
        int rests = p->rail[i].state == RAIL_DOWN;
        down += rests;
        live += p->state == PEER_OK;
        live_down += p->state == PEER_OK && rests;
    }
    struct net_rail *rl = &a->rails[i];
    __atomic_store_n(&rl->stats.up, !live || live_down < live, __ATOMIC_RELAXED);
    __atomic_store_n(&rl->stats.peers_down, down, __ATOMIC_RELAXED);
}

/* Whether rail i may take ops for p: up, or cooled off (then it is tried
 * again). */
static int rail_usable(struct ixfer_agent *a, struct net_peer *p, uint32_t i)
{
    struct peer_rail *pr = &p->rail[i];
    if (pr->state == RAIL_DOWN && ixfer_now_ns() >= pr->retry_ns) {
        pr->state = RAIL_TRYING;
        rail_recount(a, i);
    }
    return pr->state != RAIL_DOWN;
}

/* The rail the next op of r takes: the next of the nr shared, in turn, that
 * is usable towards its peer and did not refuse work in this pass (bit i of
 * refused); -1 when none is left, -2 when only a rail busy being tried is.
 * A rail being tried again takes one op at a time until it is back: while
 * its link is still down, only that op waits on it. */
static int pick_rail(struct ixfer_agent *a, struct xfer_request *r, uint32_t nr, uint32_t refused)
{
    if (nr <= 1)
        return 0;
    int trying = 0;
    for (uint32_t k = 0; k < nr; k++) {
        uint32_t i = (a->rr + k) % nr;
        if (refused & (1u << i))
            continue;
        if (!r->np->rails_down)
            return (int)i;
        if (!rail_usable(a, r->np, i))
            continue;
        if (r->np->rail[i].state == RAIL_TRYING && r->np->rail[i].inflight)
            trying = 1;
        else
            return (int)i;
    }
    return trying ? -2 : -1;
}

/* Fills iov/desc/rma with the segments of r from pair *p, offset *off, up to
 * max bytes and limit segments, advancing *p and *off; returns the count and
 * the bytes in *total. */
static size_t fill_iov(const struct xfer_request *r, uint32_t *p, uint64_t *off, uint64_t max,
                       uint32_t limit, uint32_t rail, struct iovec *iov, void **desc,
                       struct fi_rma_iov *rma, uint64_t *total)
{
    size_t n = 0;
    *total = 0;
    while (n < limit && *p < r->base.count && *total < max) {
        const ixfer_iov_pair *pair = &r->pairs[*p];
        uint64_t left = pair->len - *off;
        uint64_t room = max - *total;
        uint64_t seg = left < room ? left : room;
        if (seg) {
            iov[n].iov_base = (void *)(uintptr_t)(pair->local_addr + *off);
            iov[n].iov_len = seg;
            desc[n] = pair->local_mr->rail_desc[rail];
            rma[n].addr = pair->remote_addr + *off;
            rma[n].len = seg;
            rma[n].key = pair->remote_key;
            n++;
            *total += seg;
            *off += seg;
        }
        if (*off == pair->len) {
            (*p)++;
            *off = 0;
        }
    }
    return n;
}

/* Posts op (its range of its request) on its rail: 0, or what the provider
 * returned. On a rail with a worker, the worker's thread calls it: it reads
 * only what stays fixed while the op is out (the op, and the request's
 * pairs, kind and tag). */
static ssize_t issue_op(struct ixfer_agent *a, void *ctx)
{
    struct xfer_op *op = ctx;
    const struct xfer_request *r = op->req;
    uint32_t limit = a->iov_limit < MAX_IOV ? a->iov_limit : MAX_IOV;
    struct iovec iov[MAX_IOV];
    void *desc[MAX_IOV];
    struct fi_rma_iov rma[MAX_IOV];
    uint32_t p = op->pair;
    uint64_t off = op->off, total;
    size_t n = fill_iov(r, &p, &off, op->len, limit, op->rail, iov, desc, rma, &total);
    struct fi_msg_rma msg = {
        .msg_iov = iov, .desc = desc, .iov_count = n,
        .addr = op->addr,
        .rma_iov = rma, .rma_iov_count = n, .context = op,
        .data = r->tagged && !op->again ? r->tag : 0,
    };
    /* A WRITE is complete only once the data is in the target's memory
     * (fi_cq(3) FI_DELIVERY_COMPLETE), not merely handed to the network:
     * done() promises the bytes are there. A polled target (shm) sleeps
     * up to IXFER_POLL_MAX_US between looks and cannot be woken from
     * another process, yet serves our WRITE itself: CQ data (tag 0, which
     * no notification uses) gives it a completion, so it keeps looking
     * often while WRITEs stream in (about 1.1 ms per WRITE without). */
    const struct net_rail *rl = &a->rails[op->rail];
    int cq_data = msg.data || (rl->wait_fd < 0 && rl->caps.cq_data_size > 0);
    struct fid_ep *ep = rl->ep;
    return r->op == IXFER_OP_WRITE
               ? fi_writemsg(ep, &msg, (op->deliver ? FI_DELIVERY_COMPLETE : 0) |
                                           (cq_data ? FI_REMOTE_CQ_DATA : 0))
               : fi_readmsg(ep, &msg, 0);
}

/* Posts op (its range of r) on rail, or hands it to the rail's worker
 * (which reports a failure to post as a failed completion): 0, or what the
 * provider returned. */
static ssize_t post_op(struct ixfer_agent *a, struct xfer_request *r, struct xfer_op *op,
                       uint32_t rail)
{
    op->ctx.kind = OP_KIND_RMA;
    op->req = r;
    op->rail = rail;
    op->addr = rail ? r->np->rail_fa[rail] : r->peer;
    struct net_rail *rl = &a->rails[rail];
    ssize_t ret = 0;
    if (rl->worker) {
        op->handed.ctx = op;
        op->handed.peer = op->addr;
        ixfer_rail_worker_hand(a, rail, &op->handed);
    } else {
        ret = issue_op(a, op);
    }
    if (ret == 0) {
        ixfer_peer_posted(r->np);
        rl->inflight++;
        r->np->rail[rail].inflight++;
        rl->refused_since = 0;
        a->rr = rail + 1;
        __atomic_store_n(&rl->stats.ops, rl->stats.ops + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&rl->stats.bytes, rl->stats.bytes + op->len, __ATOMIC_RELAXED);
        r->base.busy++;
    }
    return ret;
}

static int rail_broke(struct ixfer_agent *a, struct xfer_request *r, uint32_t rail, int fi_err);

/* rail refused an op of r (-FI_EAGAIN): takes it out of use when it has
 * refused for RAIL_REFUSE_NS with nothing in flight. */
static void rail_refused(struct ixfer_agent *a, struct xfer_request *r, uint32_t rail)
{
    struct net_rail *rl = &a->rails[rail];
    if (rl->inflight)
        return; /* merely busy */
    uint64_t now = ixfer_now_ns();
    if (!rl->refused_since)
        rl->refused_since = now;
    else if (now - rl->refused_since >= RAIL_REFUSE_NS)
        rail_broke(a, r, rail, FI_ENOTCONN);
}

/* Posts as much of r as the provider takes: first the ops a failed rail gave
 * back, then the rest. Returns -FI_EAGAIN when it had to stop for lack of
 * resources, 0 when r needs no more posting. */
static int post_some(struct ixfer_agent *a, struct xfer_request *r)
{
    uint32_t limit = a->iov_limit < MAX_IOV ? a->iov_limit : MAX_IOV;
    /* A transfer of stripe_min bytes or more is cut into one piece per
     * shared rail (whole pages); every op takes the next rail in turn, so
     * small transfers spread across them too. */
    uint32_t nr = shared_rails(a, r);
    uint64_t cut = a->max_msg_size;
    if (nr > 1 && r->bytes >= a->stripe_min) {
        uint64_t piece = ((r->bytes + nr - 1) / nr + 4095) & ~4095ull;
        if (piece < cut)
            cut = piece;
    }
    uint32_t refused = 0; /* rails that refused work in this call */
    for (;;) {
        int more = r->redo != NULL;
        if (!more && ixfer_request_handed_out(&r->base))
            break;
        if (more && (r->base.status != IXFER_OK || r->base.cancel_status)) {
            r->redo = NULL; /* nothing more is posted for it */
            break;
        }
        int rail = via_shm(a, r) ? (int)a->shm_rail : pick_rail(a, r, nr, refused);
        if (rail == -2)
            return -FI_EAGAIN; /* the rail's answer comes soon: not the peer's silence */
        if (rail < 0 && refused) {
            ixfer_peer_refused(r->np);
            return -FI_EAGAIN;
        }
        if (rail < 0) {
            ixfer_request_fail(&r->base, IXFER_ERR_REMOTE_DISCONNECT, FI_ENOTCONN, 0);
            r->redo = NULL;
            break;
        }
        struct xfer_op *op;
        if (more) {
            op = r->redo;
        } else {
            op = &r->ops[r->ops_used];
            op->again = 0;
            op->pair = r->base.next_pair;
            op->off = r->base.next_offset;
            uint32_t p = op->pair;
            uint64_t off = op->off;
            struct iovec iov[MAX_IOV];
            void *desc[MAX_IOV];
            struct fi_rma_iov rma[MAX_IOV];
            if (fill_iov(r, &p, &off, cut, limit, 0, iov, desc, rma, &op->len) == 0) {
                /* only empty pairs were left */
                r->base.next_pair = p;
                r->base.next_offset = 0;
                break;
            }
            op->next_pair = p;
            op->next_off = off;
            /* Only the request's last op asks for delivery where WRITEs are
             * placed in order on the one connection its ops take: its
             * completion vouches for every op before it, and the others
             * complete once sent, so the target acks once per request, not
             * once per op (tcp acks FI_TRANSMIT_COMPLETE too: 1.17
             * tcpx_set_ack_flags, hence no flag). A WRITE the target cannot
             * place drops the connection (tcp 1.17 tcpx_progress_rx ->
             * tcpx_ep_disable), so the last op fails with it. Several rails
             * are several connections: every op asks there. */
            op->deliver = !a->ordered_writes || nr > 1 || p > r->last_pair;
        }
        ssize_t ret = post_op(a, r, op, (uint32_t)rail);
        if (ret == -FI_EAGAIN && nr > 1) {
            /* Another rail may take it; a rail that keeps refusing is out. */
            rail_refused(a, r, (uint32_t)rail);
            refused |= 1u << rail;
            continue;
        }
        if (ret == -FI_EAGAIN) {
            ixfer_peer_refused(r->np);
            return -FI_EAGAIN;
        }
        if (ret && rail_broke(a, r, (uint32_t)rail, (int)-ret))
            continue; /* the same op, on another rail */
        if (ret) {
            fail_request(r, (int)-ret);
            r->redo = NULL;
            break;
        }
        if (more) {
            r->redo = op->redo_next;
            __atomic_store_n(&a->rails[rail].stats.reposted, a->rails[rail].stats.reposted + 1,
                             __ATOMIC_RELAXED);
        } else {
            r->ops_used++;
            r->base.next_pair = op->next_pair;
            r->base.next_offset = op->next_off;
        }
    }
    return 0;
}

/* Whether fi_err says the connection under a rail broke, rather than
 * something about this one op (a bad key, a bad address). */
static int link_error(int fi_err)
{
    return fi_err == FI_ECONNRESET || fi_err == FI_ECONNABORTED || fi_err == FI_ENOTCONN ||
           fi_err == EPIPE || fi_err == FI_ECONNREFUSED || fi_err == FI_ECANCELED ||
           fi_err == FI_ETIMEDOUT || fi_err == FI_EHOSTUNREACH || fi_err == FI_ENETUNREACH ||
           fi_err == FI_ENETDOWN || fi_err == FI_EIO;
}

/* Takes rail out of use towards p until its cooldown ends; returns whether
 * that is news (a failed retry is not). */
static int rail_rests(struct ixfer_agent *a, struct net_peer *p, uint32_t rail)
{
    struct peer_rail *pr = &p->rail[rail];
    int news = pr->state == RAIL_UP;
    p->rails_down += news;
    pr->state = RAIL_DOWN;
    pr->retry_ns = ixfer_now_ns() + a->rail_cooldown_ns;
    return news;
}

/* An op of r on rail failed with fi_err (on completion or when posted):
 * when the connection under the rail broke and another rail the peer shares
 * is usable, takes the rail out of use towards that peer (towards every
 * peer when the local network is down) until its cooldown ends, and returns
 * 1: the op goes on another rail. */
static int rail_broke(struct ixfer_agent *a, struct xfer_request *r, uint32_t rail, int fi_err)
{
    uint32_t nr = shared_rails(a, r);
    if (nr <= 1 || !link_error(fi_err) || r->base.status != IXFER_OK || r->base.cancel_status)
        return 0;
    struct net_rail *rl = &a->rails[rail];
    int news = 0;
    fi_addr_t whom = r->np->fa;
    if (fi_err == FI_ENETDOWN) {
        whom = FI_ADDR_UNSPEC;
        IXFER_LIST_FOR_EACH(n, &a->peers) {
            struct net_peer *p = ixfer_container_of(n, struct net_peer, link);
            /* A peer sharing one rail has nowhere else to go (its
             * requests never pick a rail): resting it would stick. */
            uint32_t shared = p->nrails < a->net_rails ? p->nrails : a->net_rails;
            if (p->nrails > rail && shared > 1)
                news |= rail_rests(a, p, rail);
        }
    } else {
        news = rail_rests(a, r->np, rail);
    }
    if (news) {
        __atomic_store_n(&rl->stats.downs, rl->stats.downs + 1, __ATOMIC_RELAXED);
        rail_event(a, rail, whom, ixfer_status_of(fi_err), fi_err);
    }
    rl->refused_since = 0;
    rail_recount(a, rail);
    for (uint32_t i = 0; i < nr; i++)
        if (i != rail && rail_usable(a, r->np, i))
            return 1;
    return 0;
}

/* op of r failed with fi_err: when its rail broke (rail_broke), queues op
 * to be posted again elsewhere and returns 1 (the request goes on). */
static int fail_over(struct ixfer_agent *a, struct xfer_request *r, struct xfer_op *op, int fi_err)
{
    if (!rail_broke(a, r, op->rail, fi_err))
        return 0;
    /* Its first attempt may have landed and been counted: the receiver counts
     * first attempts only, and hears of the rest from a release. */
    op->again = 1;
    r->release |= r->tagged;
    op->redo_next = r->redo;
    r->redo = op;
    if (!ixfer_list_linked(&r->base.queue))
        ixfer_list_push_back(&a->postq, &r->base.queue);
    return 1;
}

/* An op to p on a rail being tried again succeeded: it is back for p. */
static void rail_back(struct ixfer_agent *a, struct net_peer *p, uint32_t i)
{
    struct net_rail *rl = &a->rails[i];
    if (p->rail[i].state != RAIL_TRYING)
        return;
    p->rail[i].state = RAIL_UP;
    p->rails_down--;
    __atomic_store_n(&rl->stats.rejoins, rl->stats.rejoins + 1, __ATOMIC_RELAXED);
    rail_recount(a, i);
    rail_event(a, i, p->fa, IXFER_OK, 0);
}

/* Takes r in: live, and queued for posting. */
static void accept_request(struct ixfer_agent *a, struct xfer_request *r)
{
    r->np = ixfer_peer_find(a, r->peer);
    ixfer_peer_ref(r->np);
    if (r->notif)
        ixfer_notif_job_attach(r->notif, request_notified, r);
    if (r->tagged)
        r->tag = ixfer_notify_next_tag(a);
    /* A polled target (shm) sleeps up to IXFER_POLL_MAX_US between
     * looks, and our READ gives it no completion to stay awake on
     * (a WRITE carries CQ data for that): a one-fragment message
     * does, so a stream of READs is served at its short poll. A peer
     * reached over our shm rail is nudged at shm_nudge's pace. */
    if (via_shm(a, r)) {
        uint64_t now = ixfer_now_ns(), max = ixfer_poll_max_ns();
        if (now - r->np->shm_nudged_ns >= (max < SHM_NUDGE_MAX_NS ? max : SHM_NUDGE_MAX_NS))
            shm_nudge(a, r->np, now);
    } else if (r->op == IXFER_OP_READ && a->wait_epfd < 0) {
        ixfer_notify_nudge(a, r->peer);
    }
    ixfer_list_push_front(&a->live, &r->base.live);
    ixfer_list_push_back(&a->postq, &r->base.queue);
}

/* Returns whether there were any. */
static int take_submissions(struct ixfer_agent *a)
{
    struct ixfer_list taken;
    ixfer_list_init(&taken);
    pthread_mutex_lock(&a->submit_lock);
    ixfer_list_splice_back(&taken, &a->submissions);
    pthread_mutex_unlock(&a->submit_lock);
    int any = !ixfer_list_empty(&taken);
    struct ixfer_list *node;
    while ((node = ixfer_list_pop_front(&taken))) {
        struct submission *s = ixfer_container_of(node, struct submission, link);
        if (s->kind == SUBMIT_POST) {
            accept_request(a, s->req);
        } else if (s->kind == SUBMIT_CANCEL) {
            /* Canceled requests still in the post queue are finished when the
             * post pass reaches them; the others once their ops complete. */
            struct ixfer_request *r = ixfer_request_find(&a->live, s->user_id);
            if (r)
                ixfer_request_cancel(r, s->cancel_status);
            else
                ixfer_notify_cancel(a, s->user_id, s->cancel_status);
        } else if (s->kind == SUBMIT_NOTIFY) {
            ixfer_notify_enqueue(a, s->job);
        } else if (s->kind == SUBMIT_FORGET) {
            ixfer_notify_forget(a, s->name);
            free(s->name);
        } else if (s->kind == SUBMIT_ADD_PEER) {
            fi_addr_t fas[IXFER_MAX_RAILS];
            memcpy(fas, s->addr + rail_fa_offset(s->addr_len), s->nrails * sizeof(fi_addr_t));
            ixfer_peer_added(a, s->peer, s->addr, s->addr_len, fas, s->nrails);
            for (uint32_t i = 0; i < s->nrails; i++)
                rail_recount(a, i);
        } else if (s->kind == SUBMIT_SHM_PEER) {
            ixfer_peer_shm_added(a, s->peer, s->shm_fa);
        } else {
            /* The record stays while these refer to it: canceling them only
             * stops their posting. */
            if (ixfer_peer_removed(a, s->peer)) {
                IXFER_LIST_FOR_EACH(n, &a->live) {
                    struct xfer_request *r = ixfer_container_of(n, struct xfer_request, base.live);
                    if (r->peer == s->peer)
                        ixfer_request_cancel(&r->base, IXFER_ERR_REMOTE_DISCONNECT);
                }
                ixfer_notify_remove_peer(a, s->peer);
                for (uint32_t i = 0; i < a->nrails; i++)
                    rail_recount(a, i);
            }
            pthread_mutex_lock(&a->submit_lock);
            *s->done = 1;
            pthread_cond_broadcast(&a->submit_done);
            pthread_mutex_unlock(&a->submit_lock);
        }
        free(s);
    }
    return any;
}

/* r is fully posted, or stopped (and may be freed on return). */
static void posted(struct ixfer_agent *a, struct xfer_request *r)
{
    /* Tagged WRITEs: the receiver holds the notification until it has
     * counted them all, so it can go as soon as they are posted. */
    if (r->tagged && r->notif_state == NOTIF_WAITING && ixfer_request_outcome(&r->base) == IXFER_OK)
        send_notif(a, r, r->ops_used);
    maybe_finish(a, r);
}

/* One pass over the post queue. A peer that returns -FI_EAGAIN is skipped for
 * the rest of the pass, so that one unreachable peer does not hold up others.
 * Returns whether anything was left unposted. */
static int post_pass(struct ixfer_agent *a)
{
    struct blocked_peers blocked = {.n = 0};
    IXFER_LIST_FOR_EACH_SAFE(node, &a->postq) {
        struct xfer_request *r = ixfer_container_of(node, struct xfer_request, base.queue);
        int skip = peer_blocked(&blocked, r->peer), full = 0;
        int32_t st = ixfer_peer_may_post(r->np);
        if (st != IXFER_OK)
            ixfer_request_cancel(&r->base, st);
        if (!skip && !r->base.cancel_status &&
            (r->staged ? ixfer_staging_post_some(a, r, maybe_finish) : post_some(a, r)) == -FI_EAGAIN) {
            full = block_peer(&blocked, r->peer);
            skip = 1;
        }
        if (full)
            break;
        if (skip)
            continue;
        ixfer_list_remove(&r->base.queue);
        posted(a, r);
    }
    return !ixfer_list_empty(&a->postq);
}

/* Posting here saves the hand-off to a sleeping progress thread (a wake-up
 * before the first byte moves); the thread still reaps the completion, its
 * sleep taking in the CQ's wait fd. A thread that is awake takes a
 * submission at once, so the caller's thread is not spent then. Kept to
 * what posts in a few syscalls,
 * with none of the thread's other duties (notifications, staging), on one
 * rail, and to a thread that sleeps on a wait fd: a polling one would see
 * the completion only after its current sleep. The provider is thread safe
 * (FI_THREAD_SAFE) and wakes a sleeping thread itself when a send must
 * wait for room (tcp 1.17 tcpx_tx_queue_insert signals its CQ's wait). */
int ixfer_progress_try_post(struct ixfer_agent *a, struct xfer_request *r)
{
    uint64_t max = ixfer_inline_post_max();
    if (!atomic_load(&a->sleeping) || a->net_rails != 1 || a->wait_epfd < 0 || r->notif ||
        r->staged || !max || r->bytes > max || atomic_load(&a->stop) ||
        pthread_mutex_trylock(&a->post_lock))
        return 0;
    /* Order: nothing submitted before r (a peer being added, a cancel, a
     * post) may be overtaken. A peer on this host is served on the shm
     * rail, which its worker alone posts to. */
    pthread_mutex_lock(&a->submit_lock);
    int queued = !ixfer_list_empty(&a->submissions);
    pthread_mutex_unlock(&a->submit_lock);
    const struct net_peer *np = ixfer_peer_find(a, r->peer);
    if (queued || !ixfer_list_empty(&a->postq) || (a->shm_rail && np && np->shm && !r->net)) {
        pthread_mutex_unlock(&a->post_lock);
        return 0;
    }
    accept_request(a, r);
    int left = post_pass(a);
    pthread_mutex_unlock(&a->post_lock);
    if (left) /* the provider pushed back: the thread retries */
        ixfer_progress_poke(a);
    return 1;
}

static void op_done(struct ixfer_agent *a, const struct fi_cq_data_entry *e, void *context,
                    int fi_err)
{
    /* A peer's WRITE or READ: its op_context is not ours, and not always
     * NULL (shm 1.17 reports the initiator's message id, a pointer of the
     * other process). */
    if (e && (e->flags & (FI_REMOTE_WRITE | FI_REMOTE_READ))) {
        if ((e->flags & FI_REMOTE_CQ_DATA) && e->data) /* 0: only to wake us */
            ixfer_notify_remote_write(a, e->data);
        return;
    }
    if (!context)
        return;
    struct op_ctx *ctx = context;
    if (ctx->kind == OP_KIND_STAGE) {
        ixfer_staging_completion(a, ctx, fi_err);
        return;
    }
    if (ctx->kind != OP_KIND_RMA) {
        ixfer_notify_completion(a, ctx, e ? e->len : 0, fi_err);
        return;
    }
    struct xfer_op *op = context;
    struct xfer_request *r = op->req;
    a->rails[op->rail].inflight--;
    r->np->rail[op->rail].inflight--;
    if (a->rails[op->rail].worker)
        ixfer_rail_worker_settled(a, op->rail);
    if (fi_err) {
        struct net_rail *rl = &a->rails[op->rail];
        __atomic_store_n(&rl->stats.failed, rl->stats.failed + 1, __ATOMIC_RELAXED);
        if (fail_over(a, r, op, fi_err)) {
            /* The peer is reached on another rail: not a sign it is gone. */
            ixfer_peer_op_done(r->np, 0);
            r->base.busy--;
            return;
        }
        fail_request(r, fi_err);
    } else if (r->np && r->np->rails_down) {
        rail_back(a, r->np, op->rail);
    }
    ixfer_peer_op_done(r->np, fi_err);
    r->base.busy--;
    /* A request still on the post queue is finished when the queue lets go. */
    maybe_finish(a, r);
}

/* Handles what fi_cq_read returned on cq; returns the number of entries. */
static ssize_t handle_cq(struct ixfer_agent *a, struct fid_cq *cq, struct fi_cq_data_entry *ents,
                         ssize_t n)
{
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++)
            op_done(a, &ents[i], ents[i].op_context, 0);
        return n;
    }
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry err;
        memset(&err, 0, sizeof err);
        if (fi_cq_readerr(cq, &err, 0) == 1) {
            op_done(a, NULL, err.op_context, err.err ? err.err : FI_EIO);
            return 1;
        }
    }
    return 0;
}

/* The rails whose CQ this thread reads: rail 0 where it is the agent's one
 * network rail, none where there are several (each has a worker). Later
 * rails (the shm rail too) have workers. */
static uint32_t own_rails(const struct ixfer_agent *a)
{
    return a->net_rails > 1 ? 0 : 1;
}

/* Handles a batch of what each rail worker handed back; returns the
 * entries. */
static ssize_t take_from_workers(struct ixfer_agent *a)
{
    ssize_t total = 0;
    struct rail_done d[CQ_BATCH];
    for (uint32_t i = own_rails(a); i < a->nrails; i++) {
        size_t n = ixfer_rail_worker_take(a, i, d, CQ_BATCH);
        for (size_t k = 0; k < n; k++) {
            struct fi_cq_data_entry e = {.op_context = d[k].ctx, .len = d[k].len};
            if (d[k].ctx)
                op_done(a, &e, d[k].ctx, d[k].fi_err);
            else
                ixfer_notify_remote_write(a, d[k].data);
        }
        total += (ssize_t)n;
    }
    return total;
}

/* Reads a batch from every CQ this thread reads, and what the workers
 * handed back; returns the entries handled. */
static ssize_t read_cqs(struct ixfer_agent *a, struct fi_cq_data_entry *ents)
{
    ssize_t total = 0;
    for (uint32_t i = 0; i < own_rails(a); i++) {
        struct fid_cq *cq = a->rails[i].cq;
        total += handle_cq(a, cq, ents, fi_cq_read(cq, ents, CQ_BATCH));
    }
    return total + take_from_workers(a);
}

/* fi_trywait(3) on every CQ this thread reads: 0 when all are armed and empty. */
static int trywait_all(struct ixfer_agent *a)
{
    for (uint32_t i = 0; i < own_rails(a); i++) {
        struct fid *cq = &a->rails[i].cq->fid;
        if (fi_trywait(a->rails[i].fabric, &cq, 1))
            return -1;
    }
    return 0;
}

/* After activity, the thread watches for the next submission or completion
 * for up to ixfer_spin_ns() before it sleeps: a stream of transfers then pays neither
 * the submitter's wake-up write nor the thread's wake-up. Returns whether
 * something came. */
static int spin(struct ixfer_agent *a, struct fi_cq_data_entry *ents)
{
    /* Submitters write nothing meanwhile (the thread is not `sleeping`): the
     * count they bump is what it watches. */
    unsigned seen = atomic_load(&a->submitted);
    int busy = 0;
    uint64_t start = ixfer_now_ns(), limit = ixfer_spin_ns();
    do {
        busy = atomic_load(&a->submitted) != seen || read_cqs(a, ents) > 0;
    } while (!busy && ixfer_now_ns() - start < limit);
    return busy;
}

/* Sleeps until a CQ may have something, wake_fd is written, or timeout_ns
 * passes; seen is the submission count read before the last
 * take_submissions, so work submitted since is never slept through. Then
 * reads the CQs and returns the entries handled. With wait fds the protocol
 * is fi_trywait(3)'s: it succeeds only when nothing is ready, and arms the
 * provider's fds. */
static ssize_t wait_cq(struct ixfer_agent *a, struct fi_cq_data_entry *ents,
                       uint64_t timeout_ns, unsigned seen)
{
    if (a->wait_epfd < 0 || trywait_all(a) == 0) {
        atomic_store(&a->sleeping, 1);
        pthread_mutex_unlock(&a->post_lock);
        /* A submitter that read sleeping == 0 counted its work before. */
        int woken = 0; /* wake_fd is readable: drained below */
        if (atomic_load(&a->submitted) == seen && !atomic_load(&a->stop)) {
            /* wake_fd is in wait_epfd's set: ixfer_progress_start */
            woken = ixfer_sleep_on(a->wait_epfd, a->wake_fd, timeout_ns);
        } else {
            woken = 1; /* a submitter may have written it */
        }
        pthread_mutex_lock(&a->post_lock);
        atomic_store(&a->sleeping, 0);
        /* Drained only when it fired (a completion's wake-up needs no read):
         * a write it missed leaves it readable, which costs one more loop. */
        uint64_t count;
        ssize_t r = woken ? read(a->wake_fd, &count, sizeof count) : 0; /* nonblocking */
        (void)r;
    }
    return read_cqs(a, ents);
}

/* shm never completes ops towards a dead process: a request with ops out
 * to an shm peer found gone ends now (its memory is no longer read or
 * written: nobody on the other side does it), and is freed at close. */
static void end_for_gone_shm_peers(struct ixfer_agent *a)
{
    IXFER_LIST_FOR_EACH(n, &a->live) {
        struct xfer_request *r = ixfer_container_of(n, struct xfer_request, base.live);
        if (r->base.busy && via_shm(a, r) && r->np->state == PEER_GONE) {
            ixfer_request_fail(&r->base, IXFER_ERR_REMOTE_DISCONNECT, FI_ENOTCONN, 0);
            ixfer_request_report(&a->events, &r->base);
        }
    }
}

/* Ops the provider still holds, but those to a gone shm peer (they never
 * complete). */
static uint64_t ops_out(struct ixfer_agent *a)
{
    uint64_t n = 0;
    IXFER_LIST_FOR_EACH(node, &a->peers) {
        const struct net_peer *p = ixfer_container_of(node, struct net_peer, link);
        n += p->shm && p->state == PEER_GONE ? 0 : p->outstanding;
    }
    return n;
}

/* When the agent closes, the ops the provider still holds get up to
 * CLOSE_DRAIN_NS to complete or fail before the endpoints close; nothing
 * new is posted. libfabric 1.17's tcp, closing a connection while a READ's
 * response is arriving, reports that READ twice (tcpx_ep_flush_all_queues:
 * the op heads rma_read_queue and is also cur_rx.entry), the second time
 * with a NULL context that rxm's rxm_handle_comp_error dereferences. */
static void drain_ops(struct ixfer_agent *a, struct fi_cq_data_entry *ents)
{
    const struct timespec nap = {0, DRAIN_NAP_NS};
    uint64_t end = ixfer_now_ns() + CLOSE_DRAIN_NS;
    while (ops_out(a) && ixfer_now_ns() < end)
        if (read_cqs(a, ents) == 0)
            nanosleep(&nap, NULL);
}

static void *progress_main(void *arg)
{
    struct ixfer_agent *a = arg;
    struct fi_cq_data_entry ents[CQ_BATCH];
    int backoff_ms = 0, active = 0;
    uint64_t poll_ns = POLL_MIN_NS;
    pthread_mutex_lock(&a->post_lock);
    while (!atomic_load(&a->stop)) {
        unsigned seen = atomic_load(&a->submitted);
        ixfer_link_watch_tick(a);
        if (take_submissions(a)) {
            active = 1;
            poll_ns = POLL_MIN_NS;
        }
        int pending = post_pass(a);
        int staging = ixfer_staging_pass(a);
        pending |= (staging & STAGING_STALLED) != 0;
        pending |= ixfer_notify_pass(a);
        int watch = 0;
        if (a->shm_rail) {
            if (ixfer_now_ns() >= a->shm_watch_ns) /* at the watch's pace */
                shm_renudge(a);
            int gone = 0;
            watch = ixfer_peers_watch_shm(a, &gone);
            if (gone)
                end_for_gone_shm_peers(a);
        }
        if (read_cqs(a, ents) > 0 || (staging & STAGING_WORKED)) {
            backoff_ms = 0;
            active = 1;
            poll_ns = POLL_MIN_NS;
            continue;
        }
        if (active && !pending && ixfer_spin_ns()) {
            active = spin(a, ents);
            if (active)
                continue;
        }
        /* Nothing completed. Sleep until something does, a submission wakes
         * us, or (when a peer refused more work) a short, growing back-off
         * ends and posting is retried. A polling thread sleeps 50 us after
         * activity, doubling up to ixfer_poll_max_ns() while idle. */
        uint64_t timeout_ns = IDLE_WAIT_MS * 1000000ull;
        if (a->wait_epfd < 0 && own_rails(a)) {
            timeout_ns = poll_ns;
            uint64_t max = ixfer_poll_max_ns();
            poll_ns = poll_ns * 2 < max ? poll_ns * 2 : max;
        }
        if (pending) {
            backoff_ms = backoff_ms ? (backoff_ms < 16 ? backoff_ms * 2 : 16) : 1;
            if (backoff_ms * 1000000ull < timeout_ns)
                timeout_ns = backoff_ms * 1000000ull;
        }
        if (watch && timeout_ns > SHM_WATCH_NS)
            timeout_ns = SHM_WATCH_NS;
        active = 0;
        if (wait_cq(a, ents, timeout_ns, seen) > 0) {
            backoff_ms = 0;
            active = 1;
            poll_ns = POLL_MIN_NS;
        }
    }
    if (atomic_load(&a->drain_at_stop))
        drain_ops(a, ents);
    pthread_mutex_unlock(&a->post_lock);
    return NULL;
}

/* Agents whose thread runs. A process that exits with an agent open (Node
 * does not close it) runs libfabric's destructor while the thread may be
 * inside the provider, retrying a dead peer's connection: the atexit handler,
 * which runs before library destructors, stops every thread first. */
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ixfer_list running = {&running, &running};
static pthread_once_t exit_hook = PTHREAD_ONCE_INIT;

/* The progress thread first: it hands the workers ops; they only poke it. */
static void stop_thread(struct ixfer_agent *a)
{
    atomic_store(&a->stop, 1);
    ixfer_progress_signal(a);
    pthread_join(a->thread, NULL);
    ixfer_rail_workers_stop(a);
}

static void stop_all_at_exit(void)
{
    pthread_mutex_lock(&running_lock);
    struct ixfer_list *n;
    while ((n = ixfer_list_pop_front(&running)))
        stop_thread(ixfer_container_of(n, struct ixfer_agent, running));
    pthread_mutex_unlock(&running_lock);
}

static void add_exit_hook(void) { atexit(stop_all_at_exit); }

int32_t ixfer_progress_start(struct ixfer_agent *a)
{
    a->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->wake_fd < 0)
        return ixfer_fail(IXFER_ERR_BACKEND, "eventfd: %s", strerror(errno));
    /* One epoll set over the wait fd of rail 0, unless its worker reads it,
     * and wake_fd; where rail 0 has none the thread polls. Workers sleep on
     * (or poll) their own rail's fd and poke us. */
    uint32_t own = own_rails(a);
    int all_fds = 1;
    for (uint32_t i = 0; i < own; i++)
        all_fds &= a->rails[i].wait_fd >= 0;
    if (all_fds)
        a->wait_epfd = epoll_create1(EPOLL_CLOEXEC);
    for (uint32_t i = 0; a->wait_epfd >= 0 && i <= own; i++) {
        int fd = i < own ? a->rails[i].wait_fd : a->wake_fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(a->wait_epfd, EPOLL_CTL_ADD, fd, &ev))
            return ixfer_fail(IXFER_ERR_BACKEND, "epoll_ctl: %s", strerror(errno));
    }
    int32_t rc = ixfer_rail_workers_start(a, issue_op);
    if (rc != IXFER_OK)
        return rc;
    pthread_once(&exit_hook, add_exit_hook);
    pthread_mutex_lock(&running_lock);
    int failed = pthread_create(&a->thread, NULL, progress_main, a);
    if (!failed)
        ixfer_list_push_back(&running, &a->running);
    pthread_mutex_unlock(&running_lock);
    if (failed) {
        ixfer_rail_workers_stop(a);
        return ixfer_fail(IXFER_ERR_BACKEND, "cannot start the progress thread");
    }
    a->thread_started = 1;
    return IXFER_OK;
}

void ixfer_progress_stop(struct ixfer_agent *a)
{
    if (a->thread_started) {
        atomic_store(&a->drain_at_stop, 1); /* not at process exit: nothing closes then */
        pthread_mutex_lock(&running_lock);
        /* Not on the list any more: stopped by the exit hook already. */
        int mine = ixfer_list_linked(&a->running);
        if (mine)
            ixfer_list_remove(&a->running);
        pthread_mutex_unlock(&running_lock);
        if (mine)
            stop_thread(a);
        a->thread_started = 0;
    }
    ixfer_staging_stop(a);
    if (a->wait_epfd >= 0)
        close(a->wait_epfd);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    a->wait_epfd = a->wake_fd = -1;
}

void ixfer_progress_discard(struct ixfer_agent *a)
{
    IXFER_LIST_FOR_EACH_SAFE(node, &a->submissions) {
        struct submission *s = ixfer_container_of(node, struct submission, link);
        if (s->req)
            ixfer_notif_job_free(s->req->notif);
        free(s->req);
        ixfer_notif_job_free(s->job);
        free(s->name);
        free(s);
    }
    ixfer_list_init(&a->submissions);
    IXFER_LIST_FOR_EACH_SAFE(node, &a->live) {
        struct xfer_request *r = ixfer_container_of(node, struct xfer_request, base.live);
        if (r->notif_state == NOTIF_WAITING) /* else notify.c owned it */
            ixfer_notif_job_free(r->notif);
        free(r);
    }
    ixfer_list_init(&a->live);
    ixfer_list_init(&a->postq);
}
