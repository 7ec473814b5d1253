/* A rail worker: the one thread that posts to its rail's endpoint and reads
 * its CQ (rail_worker.h). It sleeps on the CQ's wait fd and an eventfd of its
 * own (or polls a CQ without a wait fd, with growing sleeps), as the progress
 * thread does; ops come in on a list under its lock, completions go back in
 * a bounded array under the same lock, followed by ixfer_progress_poke. */
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
#include "net/rail_worker.h"
#include "net/wake.h"

#define CQ_BATCH 64
/* Completions handed back and not yet taken: a worker that fills it waits
 * for the progress thread (which drains it on every pass) before reading
 * its CQ again, so it never grows. */
#define DONE_CAP 256
#define IDLE_WAIT_MS 1000   /* a safety net only, as in progress.c */
#define POLL_MIN_NS 50000
/* Peers refusing work at once that a worker keeps apart (one beyond waits
 * for a slot: it only delays its own give-up). */
#define REFUSERS 32

/* A peer the endpoint keeps refusing ops for (rxm answers "try again" while
 * it cannot connect to it), and since when. */
struct refuser {
    fi_addr_t peer;
    uint64_t since;
};

struct rail_worker {
    struct ixfer_agent *a;
    uint32_t rail;
    rail_issue_fn issue;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t room;      /* done has room again, or stop */
    struct ixfer_list todo;   /* handed over, not yet taken by the thread */
    struct rail_done done[DONE_CAP];
    size_t ndone;
    atomic_uint handed;       /* ops ever handed over: the thread watches it */
    /* Its ops in flight: posted (or handed back failed) by the thread, less
     * those whose completion the progress thread took back (settled). Only
     * the progress thread knows which completions are of its ops: on rail 0
     * it posts others itself, and their contexts are not the worker's to
     * read. */
    uint32_t posted;
    atomic_uint settled;
    atomic_int sleeping, stop;
    int wake_fd, epfd;
    struct refuser refusing[REFUSERS]; /* the thread's: peers refusing now */
    uint32_t nrefusing;
    uint64_t posted_ns;                /* when the thread last posted an op */
};

/* Appends n entries to done, waiting for room; then pokes the progress
 * thread. Returns 0 when told to stop meanwhile (the entries are dropped with
 * their requests at teardown). */
static int hand_back(struct rail_worker *w, const struct rail_done *d, size_t n)
{
    if (!n)
        return 1;
    pthread_mutex_lock(&w->lock);
    size_t at = 0;
    while (at < n) {
        while (w->ndone == DONE_CAP && !atomic_load(&w->stop))
            pthread_cond_wait(&w->room, &w->lock);
        if (atomic_load(&w->stop))
            break;
        size_t k = DONE_CAP - w->ndone < n - at ? DONE_CAP - w->ndone : n - at;
        memcpy(&w->done[w->ndone], d + at, k * sizeof *d);
        w->ndone += k;
        at += k;
        if (at < n) {
            /* Full: let the progress thread drain it while we wait. */
            pthread_mutex_unlock(&w->lock);
            ixfer_progress_poke(w->a);
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    ixfer_progress_poke(w->a);
    return at == n;
}

static uint32_t in_flight(struct rail_worker *w) { return w->posted - atomic_load(&w->settled); }

/* Reads a batch from the CQ and hands it back; returns the entries read. */
static ssize_t read_cq(struct rail_worker *w, struct fi_cq_data_entry *ents)
{
    struct fid_cq *cq = w->a->rails[w->rail].cq;
    struct rail_done d[CQ_BATCH];
    size_t nd = 0;
    ssize_t n = fi_cq_read(cq, ents, CQ_BATCH);
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++) {
            const struct fi_cq_data_entry *e = &ents[i];
            /* A peer's WRITE: only its CQ data matters (0 only wakes us). */
            if (e->flags & (FI_REMOTE_WRITE | FI_REMOTE_READ)) {
                if ((e->flags & FI_REMOTE_CQ_DATA) && e->data)
                    d[nd++] = (struct rail_done){.ctx = NULL, .data = e->data};
            } else if (e->op_context) {
                d[nd++] = (struct rail_done){.ctx = e->op_context, .len = e->len};
            }
        }
    } else if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry err;
        memset(&err, 0, sizeof err);
        if (fi_cq_readerr(cq, &err, 0) == 1 && err.op_context)
            d[nd++] = (struct rail_done){.ctx = err.op_context, .fi_err = err.err ? err.err : FI_EIO};
        n = 1;
    } else {
        n = 0;
    }
    hand_back(w, d, nd);
    return n;
}

static struct refuser *refuser_of(struct rail_worker *w, fi_addr_t peer)
{
    for (uint32_t i = 0; i < w->nrefusing; i++)
        if (w->refusing[i].peer == peer)
            return &w->refusing[i];
    return NULL;
}

static void refusal_ended(struct rail_worker *w, fi_addr_t peer)
{
    struct refuser *r = refuser_of(w, peer);
    if (r)
        *r = w->refusing[--w->nrefusing];
}

/* The provider refused an op to peer: whether to give its ops up now. A peer
 * is given up after RAIL_REFUSE_NS of refusals while the endpoint shows it
 * is not merely full: nothing of ours in flight, or an op to another peer
 * posted since; the progress thread's failover then hears of FI_ENOTCONN for
 * its ops (the rail may still serve others). */
static int refused_long(struct rail_worker *w, fi_addr_t peer, uint64_t now)
{
    struct refuser *r = refuser_of(w, peer);
    if (!r) {
        if (w->nrefusing < REFUSERS)
            w->refusing[w->nrefusing++] = (struct refuser){.peer = peer, .since = now};
        return 0;
    }
    if (now - r->since < RAIL_REFUSE_NS || (in_flight(w) && w->posted_ns <= r->since))
        return 0;
    refusal_ended(w, peer);
    return 1;
}

/* Posts what it was handed, in order per peer: an op the provider refuses
 * holds back the later ops to its peer for this pass, not those to others
 * (a peer that cannot be reached must not stall the rail for the rest); an
 * op that fails is handed back as failed. Returns whether the provider
 * refused any. */
static int post_queue(struct rail_worker *w, struct ixfer_list *queue)
{
    struct rail_done d[CQ_BATCH];
    size_t nd = 0;
    fi_addr_t held[REFUSERS], gone[REFUSERS];
    uint32_t nheld = 0, ngone = 0;
    int refused = 0;
    uint64_t now = 0;
    for (struct ixfer_list *node = queue->next, *next; node != queue; node = next) {
        next = node->next;
        struct rail_item *it = ixfer_container_of(node, struct rail_item, link);
        int is_gone = 0, is_held = 0;
        for (uint32_t i = 0; i < ngone; i++)
            is_gone |= gone[i] == it->peer;
        for (uint32_t i = 0; i < nheld; i++)
            is_held |= held[i] == it->peer;
        if (is_held)
            continue;
        ssize_t ret = is_gone ? -FI_ENOTCONN : w->issue(w->a, it->ctx);
        if (ret == -FI_EAGAIN) {
            if (!now)
                now = ixfer_now_ns();
            if (refused_long(w, it->peer, now)) {
                gone[ngone++] = it->peer; /* ngone < REFUSERS: one per refuser slot */
                ret = -FI_ENOTCONN;
            } else {
                refused = 1;
                if (nheld == REFUSERS)
                    break; /* the rest wait for the next pass */
                held[nheld++] = it->peer;
                continue;
            }
        }
        ixfer_list_remove(node);
        w->posted++; /* settled when the progress thread takes it back */
        if (ret == 0) {
            if (w->nrefusing) {
                w->posted_ns = ixfer_now_ns();
                refusal_ended(w, it->peer);
            }
            continue;
        }
        d[nd++] = (struct rail_done){.ctx = it->ctx, .fi_err = (int)-ret};
        if (nd == CQ_BATCH) {
            hand_back(w, d, nd);
            nd = 0;
        }
    }
    hand_back(w, d, nd);
    return refused;
}

/* After activity, watches for ops and completions for up to ixfer_spin_ns()
 * before sleeping (as the progress thread's spin()). */
static int spin(struct rail_worker *w, struct fi_cq_data_entry *ents)
{
    unsigned seen = atomic_load(&w->handed);
    int busy = 0;
    uint64_t start = ixfer_now_ns(), limit = ixfer_spin_ns();
    do {
        busy = atomic_load(&w->handed) != seen || read_cq(w, ents) > 0;
    } while (!busy && !atomic_load(&w->stop) && ixfer_now_ns() - start < limit);
    return busy;
}

static void *worker_main(void *arg)
{
    struct rail_worker *w = arg;
    struct net_rail *rl = &w->a->rails[w->rail];
    struct fi_cq_data_entry ents[CQ_BATCH];
    struct ixfer_list queue; /* taken from todo, not yet posted, in order */
    ixfer_list_init(&queue);
    uint64_t poll_ns = POLL_MIN_NS, busy_ns = ixfer_now_ns();
    int backoff_ms = 0, active = 0;
    unsigned last_seen = atomic_load(&w->handed);
    while (!atomic_load(&w->stop)) {
        unsigned seen = atomic_load(&w->handed);
        if (seen != last_seen) { /* an op, or a peer's nudge (rail_worker.h) */
            last_seen = seen;
            busy_ns = ixfer_now_ns();
            poll_ns = POLL_MIN_NS;
        }
        pthread_mutex_lock(&w->lock);
        ixfer_list_splice_back(&queue, &w->todo);
        pthread_mutex_unlock(&w->lock);
        int refused = post_queue(w, &queue);
        if (read_cq(w, ents) > 0) {
            active = 1;
            backoff_ms = 0;
            poll_ns = POLL_MIN_NS;
            busy_ns = ixfer_now_ns();
            continue;
        }
        if (active && !refused && ixfer_spin_ns() && spin(w, ents)) {
            poll_ns = POLL_MIN_NS;
            continue;
        }
        active = 0;
        /* Sleep until the CQ may have something, an op is handed over, or
         * (after a refusal) a short growing back-off ends. */
        uint64_t timeout_ns = IDLE_WAIT_MS * 1000000ull;
        if (rl->wait_fd < 0) {
            /* The shm rail's CQ is read often only while warm: our ops
             * out, or traffic lately. Cold, an eventfd write wakes us (a peer
             * that starts using the rail nudges us first), or the safety
             * net: an op whose nudge never came (a peer of an older ixfer)
             * waits for it at most. Other polled rails (EFA before 2.5) have
             * remote peers, which send no nudge: they keep polling. */
            int shm = w->a->shm_rail && w->rail == w->a->shm_rail;
            if (!shm || in_flight(w) || !ixfer_list_empty(&queue) ||
                ixfer_now_ns() - busy_ns < RAIL_WARM_NS) {
                timeout_ns = poll_ns;
                uint64_t max = ixfer_poll_max_ns();
                poll_ns = poll_ns * 2 < max ? poll_ns * 2 : max;
            }
        }
        if (refused) {
            backoff_ms = backoff_ms ? (backoff_ms < 16 ? backoff_ms * 2 : 16) : 1;
            if (backoff_ms * 1000000ull < timeout_ns)
                timeout_ns = backoff_ms * 1000000ull;
        }
        struct fid *cq = &rl->cq->fid;
        if (rl->wait_fd < 0 || fi_trywait(rl->fabric, &cq, 1) == 0) {
            atomic_store(&w->sleeping, 1);
            /* hand() counts before it reads `sleeping` (all seq_cst). */
            if (atomic_load(&w->handed) == seen && !atomic_load(&w->stop)) {
                ixfer_sleep_on(w->epfd, w->wake_fd, timeout_ns);
            }
            atomic_store(&w->sleeping, 0);
            uint64_t count;
            ssize_t r = read(w->wake_fd, &count, sizeof count); /* nonblocking */
            (void)r;
        }
    }
    return NULL;
}

static void worker_free(struct rail_worker *w)
{
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    pthread_cond_destroy(&w->room);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static int32_t worker_start(struct ixfer_agent *a, uint32_t i, rail_issue_fn issue)
{
    struct rail_worker *w = calloc(1, sizeof *w);
    if (!w)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    w->a = a;
    w->rail = i;
    w->issue = issue;
    w->epfd = -1;
    ixfer_list_init(&w->todo);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->room, NULL);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0) {
        int32_t rc = ixfer_fail(IXFER_ERR_BACKEND, "eventfd: %s", strerror(errno));
        worker_free(w);
        return rc;
    }
    int fd = a->rails[i].wait_fd;
    if (fd >= 0) {
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        struct epoll_event wev = {.events = EPOLLIN, .data.fd = w->wake_fd};
        if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &wev)) {
            int32_t rc = ixfer_fail(IXFER_ERR_BACKEND, "epoll (rail %u): %s", i, strerror(errno));
            worker_free(w);
            return rc;
        }
    }
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
        worker_free(w);
        return ixfer_fail(IXFER_ERR_BACKEND, "cannot start the worker of rail %u", i);
    }
    a->rails[i].worker = w;
    return IXFER_OK;
}

int32_t ixfer_rail_workers_start(struct ixfer_agent *a, rail_issue_fn issue)
{
    /* Rail 0 stays the progress thread's while it is the one network rail
     * (an agent with an shm rail too), as it is on an agent of one rail. */
    for (uint32_t i = a->net_rails > 1 ? 0 : 1; i < a->nrails; i++) {
        int32_t rc = worker_start(a, i, issue);
        if (rc != IXFER_OK) {
            ixfer_rail_workers_stop(a);
            return rc;
        }
    }
    return IXFER_OK;
}

void ixfer_rail_workers_stop(struct ixfer_agent *a)
{
    for (uint32_t i = 0; i < a->nrails; i++) {
        struct rail_worker *w = a->rails[i].worker;
        if (!w)
            continue;
        atomic_store(&w->stop, 1);
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof one);
        (void)r;
        pthread_mutex_lock(&w->lock);
        pthread_cond_broadcast(&w->room);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        worker_free(w);
        a->rails[i].worker = NULL;
    }
}

void ixfer_rail_worker_hand(struct ixfer_agent *a, uint32_t rail, struct rail_item *item)
{
    struct rail_worker *w = a->rails[rail].worker;
    pthread_mutex_lock(&w->lock);
    ixfer_list_push_back(&w->todo, &item->link);
    pthread_mutex_unlock(&w->lock);
    ixfer_rail_worker_nudge(a, rail);
}

void ixfer_rail_worker_nudge(struct ixfer_agent *a, uint32_t rail)
{
    struct rail_worker *w = a->rails[rail].worker;
    if (!w)
        return;
    /* Counted before `sleeping` is read: see worker_main. */
    atomic_fetch_add(&w->handed, 1);
    if (atomic_load(&w->sleeping)) {
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof one);
        (void)r;
    }
}

void ixfer_rail_worker_settled(struct ixfer_agent *a, uint32_t rail)
{
    atomic_fetch_add(&a->rails[rail].worker->settled, 1);
}

size_t ixfer_rail_worker_take(struct ixfer_agent *a, uint32_t rail, struct rail_done *out,
                              size_t max)
{
    struct rail_worker *w = a->rails[rail].worker;
    pthread_mutex_lock(&w->lock);
    size_t n = w->ndone < max ? w->ndone : max;
    memcpy(out, w->done, n * sizeof *out);
    memmove(w->done, w->done + n, (w->ndone - n) * sizeof *out);
    w->ndone -= n;
    if (n)
        pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->lock);
    return n;
}
