/* The agent's progress thread. It alone posts operations and reads the CQ:
 * data progress is manual on tcp, EFA and CXI, so a target that nobody
 * progresses never receives a write. It sleeps in fi_cq_sread (which also
 * drives the provider) and is woken by fi_cq_signal when work is submitted,
 * unless it is watching for work after activity (spin()), when submitters
 * skip the signal. Posting here rather than on the caller's thread keeps the provider's
 * copying (tcp sends the data while posting) off the JavaScript thread. */
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include <rdma/fi_errno.h>

#include "fabric_api.h"
#include "internal.h"
#include "notify.h"

#define CQ_BATCH 64
#define MAX_IOV 16          /* cap on pairs per op, whatever the provider says */
#define IDLE_WAIT_MS 1000   /* bounded so that a lost wake-up costs a second */

void ixfer_submit(struct ixfer_agent *a, struct submission *s)
{
    s->next = NULL;
    pthread_mutex_lock(&a->submit_lock);
    if (a->submit_tail)
        a->submit_tail->next = s;
    else
        a->submit_head = s;
    a->submit_tail = s;
    pthread_mutex_unlock(&a->submit_lock);
    /* Counted before the flag is read: see spin(). */
    atomic_fetch_add(&a->submitted, 1);
    if (!atomic_load(&a->spinning))
        fi_cq_signal(a->cq);
}

int32_t ixfer_status_of(int fi_err)
{
    switch (fi_err) {
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_ENETDOWN:
    case FI_ESHUTDOWN:
    case FI_EIO:
    /* The shim never calls fi_cancel: a provider-canceled op is one flushed
     * when its connection went down (tcp 1.17 does this when the peer dies
     * or rejects a key). */
    case FI_ECANCELED:
        return IXFER_ERR_REMOTE_DISCONNECT;
    case FI_ETIMEDOUT:
        return IXFER_ERR_TIMEOUT;
    case FI_EACCES:
    case FI_EPERM:
        return IXFER_ERR_NOT_ALLOWED;
    default:
        return IXFER_ERR_BACKEND;
    }
}

static void live_insert(struct ixfer_agent *a, struct xfer_request *r)
{
    r->live_prev = NULL;
    r->live_next = a->live;
    if (a->live)
        a->live->live_prev = r;
    a->live = r;
}

static void enqueue_post(struct ixfer_agent *a, struct xfer_request *r)
{
    r->post_next = NULL;
    r->queued = 1;
    if (a->postq_tail)
        a->postq_tail->post_next = r;
    else
        a->postq_head = r;
    a->postq_tail = r;
}

static void live_remove(struct ixfer_agent *a, struct xfer_request *r)
{
    if (r->live_prev)
        r->live_prev->live_next = r->live_next;
    else
        a->live = r->live_next;
    if (r->live_next)
        r->live_next->live_prev = r->live_prev;
}

static int fully_posted(const struct xfer_request *r)
{
    return r->next_pair >= r->count || r->status != IXFER_OK || r->cancel_status;
}

/* The status a request ends with as things stand. */
static int32_t outcome(const struct xfer_request *r)
{
    if (r->status == IXFER_OK && r->cancel_status && r->next_pair < r->count)
        return r->cancel_status;
    return r->status;
}

/* Hands r's notification to the sender. expected: tagged writes the receiver
 * must count before delivering it. */
static void send_notif(struct ixfer_agent *a, struct xfer_request *r, uint64_t expected)
{
    ixfer_notif_job_expect(r->notif, r->tag, expected);
    r->notif_state = NOTIF_SENDING;
    ixfer_notify_enqueue(a, r->notif);
}

/* Reports and frees a request once nothing of it is left with the provider
 * and its notification, if any, is sent. */
static void maybe_finish(struct ixfer_agent *a, struct xfer_request *r)
{
    if (r->outstanding || !fully_posted(r) || r->queued)
        return;
    int32_t status = outcome(r);
    if (r->notif_state == NOTIF_WAITING && status == IXFER_OK) {
        /* READ, or WRITE without CQ data: the data is in place now. */
        send_notif(a, r, 0);
        return;
    }
    if (r->notif_state == NOTIF_SENDING)
        return;
    if (r->notif_state == NOTIF_WAITING)
        ixfer_notif_job_free(r->notif);
    ixfer_event ev = {.user_id = r->user_id, .type = IXFER_EVENT_XFER_DONE,
                      .status = status, .fi_errno = r->fi_errno};
    live_remove(a, r);
    free(r);
    ixfer_push_event(a, &ev);
}

void ixfer_request_notified(struct ixfer_agent *a, struct xfer_request *r, int32_t status,
                            int32_t fi_errno)
{
    r->notif_state = NOTIF_NONE;
    r->notif = NULL; /* freed by notify.c */
    if (status != IXFER_OK && r->status == IXFER_OK) {
        r->status = status;
        r->fi_errno = fi_errno;
    }
    maybe_finish(a, r);
}

static void fail_request(struct xfer_request *r, int fi_err)
{
    if (r->status == IXFER_OK) {
        r->status = ixfer_status_of(fi_err);
        r->fi_errno = fi_err;
    }
}

/* Posts as much of r as the provider takes. Returns -FI_EAGAIN when it had to
 * stop for lack of resources, 0 when r needs no more posting. */
static int post_some(struct ixfer_agent *a, struct xfer_request *r)
{
    uint32_t limit = a->iov_limit < MAX_IOV ? a->iov_limit : MAX_IOV;
    while (!fully_posted(r)) {
        struct iovec iov[MAX_IOV];
        void *desc[MAX_IOV];
        struct fi_rma_iov rma[MAX_IOV];
        size_t n = 0;
        uint64_t total = 0;
        uint32_t p = r->next_pair;
        uint64_t off = r->next_offset;
        while (n < limit && p < r->count && total < a->max_msg_size) {
            const ixfer_iov_pair *pair = &r->pairs[p];
            uint64_t left = pair->len - off;
            uint64_t room = a->max_msg_size - total;
            uint64_t seg = left < room ? left : room;
            if (seg) {
                iov[n].iov_base = (void *)(uintptr_t)(pair->local_addr + off);
                iov[n].iov_len = seg;
                desc[n] = pair->local_mr->desc;
                rma[n].addr = pair->remote_addr + off;
                rma[n].len = seg;
                rma[n].key = pair->remote_key;
                n++;
                total += seg;
                off += seg;
            }
            if (off == pair->len) {
                p++;
                off = 0;
            }
        }
        if (n == 0) { /* only empty pairs were left */
            r->next_pair = p;
            r->next_offset = 0;
            break;
        }
        struct xfer_op *op = &r->ops[r->ops_used];
        op->ctx.kind = OP_KIND_RMA;
        op->req = r;
        struct fi_msg_rma msg = {
            .msg_iov = iov, .desc = desc, .iov_count = n, .addr = r->peer,
            .rma_iov = rma, .rma_iov_count = n, .context = op, .data = r->tag,
        };
        /* A WRITE is complete only once the data is in the target's memory
         * (fi_cq(3) FI_DELIVERY_COMPLETE), not merely handed to the network:
         * done() promises the bytes are there. */
        ssize_t ret = r->op == IXFER_OP_WRITE
                          ? fi_writemsg(a->ep, &msg, FI_DELIVERY_COMPLETE |
                                                         (r->tagged ? FI_REMOTE_CQ_DATA : 0))
                          : fi_readmsg(a->ep, &msg, 0);
        if (ret == -FI_EAGAIN)
            return -FI_EAGAIN;
        if (ret) {
            fail_request(r, (int)-ret);
            break;
        }
        r->ops_used++;
        r->outstanding++;
        r->next_pair = p;
        r->next_offset = off;
    }
    return 0;
}

/* Returns whether there were any. */
static int take_submissions(struct ixfer_agent *a)
{
    pthread_mutex_lock(&a->submit_lock);
    struct submission *s = a->submit_head;
    a->submit_head = a->submit_tail = NULL;
    pthread_mutex_unlock(&a->submit_lock);
    int any = s != NULL;
    while (s) {
        struct submission *next = s->next;
        if (s->kind == SUBMIT_POST) {
            if (s->req->tagged)
                s->req->tag = ixfer_notify_next_tag(a);
            live_insert(a, s->req);
            enqueue_post(a, s->req);
        } else if (s->kind == SUBMIT_CANCEL) {
            /* Canceled requests still in the post queue are finished when the
             * post pass reaches them; the others once their ops complete. */
            struct xfer_request *r = a->live;
            while (r && r->user_id != s->user_id)
                r = r->live_next;
            if (r && !r->cancel_status)
                r->cancel_status = s->cancel_status;
            else if (!r)
                ixfer_notify_cancel(a, s->user_id, s->cancel_status);
        } else if (s->kind == SUBMIT_NOTIFY) {
            ixfer_notify_enqueue(a, s->job);
        } else if (s->kind == SUBMIT_FORGET) {
            ixfer_notify_forget(a, s->name);
            free(s->name);
        } else {
            for (struct xfer_request *r = a->live; r; r = r->live_next)
                if (r->peer == s->peer && !r->cancel_status)
                    r->cancel_status = IXFER_ERR_REMOTE_DISCONNECT;
            ixfer_notify_remove_peer(a, s->peer);
            fi_av_remove(a->av, &s->peer, 1, 0);
            pthread_mutex_lock(&a->submit_lock);
            *s->done = 1;
            pthread_cond_broadcast(&a->submit_done);
            pthread_mutex_unlock(&a->submit_lock);
        }
        free(s);
        s = next;
    }
    return any;
}

/* r is fully posted, or stopped (and may be freed on return). */
static void posted(struct ixfer_agent *a, struct xfer_request *r)
{
    /* Tagged WRITEs: the receiver holds the notification until it has
     * counted them all, so it can go as soon as they are posted. */
    if (r->tagged && r->notif_state == NOTIF_WAITING && outcome(r) == IXFER_OK)
        send_notif(a, r, r->ops_used);
    maybe_finish(a, r);
}

/* One pass over the post queue. A peer that returns -FI_EAGAIN is skipped for
 * the rest of the pass, so that one unreachable peer does not hold up others.
 * Returns whether anything was left unposted. */
static int post_pass(struct ixfer_agent *a)
{
    struct blocked_peers blocked = {.n = 0};
    struct xfer_request *prev = NULL, *r = a->postq_head;
    while (r) {
        struct xfer_request *next = r->post_next;
        int skip = peer_blocked(&blocked, r->peer), full = 0;
        if (!skip && !r->cancel_status && post_some(a, r) == -FI_EAGAIN) {
            full = block_peer(&blocked, r->peer);
            skip = 1;
        }
        if (skip) {
            prev = r;
            if (full)
                break;
        } else {
            if (prev)
                prev->post_next = next;
            else
                a->postq_head = next;
            if (a->postq_tail == r)
                a->postq_tail = prev;
            r->queued = 0;
            posted(a, r);
        }
        r = next;
    }
    return a->postq_head != NULL;
}

static void op_done(struct ixfer_agent *a, const struct fi_cq_data_entry *e, void *context,
                    int fi_err)
{
    if (e && (e->flags & FI_REMOTE_CQ_DATA) && (e->flags & FI_REMOTE_WRITE))
        ixfer_notify_remote_write(a, e->data);
    if (!context) /* remote writes carry no context of ours */
        return;
    struct op_ctx *ctx = context;
    if (ctx->kind != OP_KIND_RMA) {
        ixfer_notify_completion(a, ctx, e ? e->len : 0, fi_err);
        return;
    }
    struct xfer_request *r = ((struct xfer_op *)context)->req;
    if (fi_err)
        fail_request(r, fi_err);
    r->outstanding--;
    /* A request still on the post queue is finished when the queue lets go. */
    maybe_finish(a, r);
}

/* Handles what fi_cq_read/sread returned; returns the number of entries. */
static ssize_t handle_cq(struct ixfer_agent *a, struct fi_cq_data_entry *ents, ssize_t n)
{
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++)
            op_done(a, &ents[i], ents[i].op_context, 0);
        return n;
    }
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry err;
        memset(&err, 0, sizeof err);
        if (fi_cq_readerr(a->cq, &err, 0) == 1) {
            op_done(a, NULL, err.op_context, err.err ? err.err : FI_EIO);
            return 1;
        }
    }
    return 0;
}

/* After activity, the thread watches for the next submission or completion
 * for up to ixfer_spin_ns() before it sleeps: a stream of transfers then pays neither
 * the submitter's wake-up write nor the thread's wake-up. Returns whether
 * something came. */
static int spin(struct ixfer_agent *a, struct fi_cq_data_entry *ents)
{
    unsigned seen = atomic_load(&a->submitted);
    atomic_store(&a->spinning, 1);
    int busy = 0;
    uint64_t start = ixfer_now_ns(), limit = ixfer_spin_ns();
    do {
        busy = atomic_load(&a->submitted) != seen ||
               handle_cq(a, ents, fi_cq_read(a->cq, ents, CQ_BATCH)) > 0;
    } while (!busy && ixfer_now_ns() - start < limit);
    atomic_store(&a->spinning, 0);
    /* A submitter that saw the flag up did not signal; it counted its
     * submission before reading the flag, so looking again now that the flag
     * is down cannot miss it (all seq_cst). */
    return busy || atomic_load(&a->submitted) != seen;
}

void *ixfer_progress_main(void *arg)
{
    struct ixfer_agent *a = arg;
    struct fi_cq_data_entry ents[CQ_BATCH];
    int backoff_ms = 0, active = 0;
    while (!atomic_load(&a->stop)) {
        active |= take_submissions(a);
        int pending = post_pass(a);
        pending |= ixfer_notify_pass(a);
        if (handle_cq(a, ents, fi_cq_read(a->cq, ents, CQ_BATCH)) > 0) {
            backoff_ms = 0;
            active = 1;
            continue;
        }
        if (active && !pending && ixfer_spin_ns()) {
            active = spin(a, ents);
            if (active)
                continue;
        }
        /* Nothing completed. Sleep in the provider until something does, a
         * submission signals us, or (when a peer refused more work) a short,
         * growing back-off ends and posting is retried. */
        int timeout = IDLE_WAIT_MS;
        if (pending) {
            backoff_ms = backoff_ms ? (backoff_ms < 16 ? backoff_ms * 2 : 16) : 1;
            timeout = backoff_ms;
        }
        if (handle_cq(a, ents, fi_cq_sread(a->cq, ents, CQ_BATCH, NULL, timeout)) > 0) {
            backoff_ms = 0;
            active = 1;
        }
    }
    return NULL;
}
