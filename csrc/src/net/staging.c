/* Staged device memory: VRAM over providers without FI_HMEM.
 *
 * A staged transfer moves in pieces of at most a chunk, each through a
 * bounce buffer: pinned host memory registered with the provider.
 *   - Our own staged memory: a WRITE copies device -> bounce, then moves the
 *     bounce; a READ moves into the bounce, then copies bounce -> device.
 *   - A peer's staged memory cannot be reached by RMA, so the peer does the
 *     RMA (a pull model): we send it a request naming our memory (a
 *     registered host region, or our bounce), it moves the bytes between
 *     that and a bounce of its own, copies to or from its device memory, and
 *     replies. Its reply comes only once the bytes are in place: in its
 *     device memory (our WRITE), or in ours (our READ: its WRITE to us is
 *     delivery-complete), so a transfer's completion and attached
 *     notification mean what they mean for host memory.
 * Device copies run on a copier thread per agent (synchronous copies from
 * pinned memory run at the bus's speed), so they overlap the wire. The pool
 * is split in two: bounces for our own transfers and bounces for serving
 * peers. Serving needs nothing from any peer to finish, so two agents
 * staging towards each other cannot wait on each other's pool.
 * A piece given up while a peer may still touch its bounce (a canceled or
 * timed-out transfer) re-registers the bounce under a new key first: a late
 * RMA of the peer then fails instead of landing in another transfer's data.
 * Requests and replies travel as notify.c's control messages. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "gpu/cuda.h"
#include "net/fabric_api.h"
#include "net/mr.h"
#include "net/notify.h"
#include "net/peer.h"
#include "net/rail_worker.h"
#include "net/staging.h"
#include "net/wake.h"

#define DEFAULT_POOL_BYTES (64ull << 20)
#define DEFAULT_CHUNK_BYTES (1ull << 20)
#define MAX_WINDOW 256     /* our requests awaiting a peer's reply */
#define MAX_SERVES 1024    /* peers' requests held at once */
#define MAX_INITIATORS 256 /* peer addresses learned from requests */
#define MAX_ADDR 4096

/* Control messages, little-endian.
 * Request: 0 u8 MSG_REQ, 1 u8 push (1: serve a READ, write into the
 *   requester), 2 u16 address length, 4 u32 zero, 8 u64 id, 16 u64 device
 *   address, 24 u64 region key, 32 u64 length, 40 u64 requester's address
 *   (virtual, or its region offset without FI_MR_VIRT_ADDR), 48 u64 its key,
 *   56 the requester's fabric address.
 * Reply: 0 u8 MSG_DONE, 1..3 zero, 4 i32 status, 8 u64 id. */
enum { MSG_REQ = 1, MSG_DONE = 2 };
#define REQ_BYTES 56
#define DONE_BYTES 16

enum role { ROLE_PIECE = 1, ROLE_SERVE };

struct bounce {
    struct ixfer_list link; /* on its free list while not taken */
    uint8_t *buf;
    struct fid_mr *mr; /* NULL: its re-registration failed, it is out of use */
    void *desc;
    uint64_t key;
    int serve; /* of the serving half */
};

struct copy_job {
    struct ixfer_list link; /* the copier's queue, then its finished list */
    int to_device;
    uint64_t key, dev_addr, len; /* the staged region's key, and the device range */
    void *host;
    int32_t status;
};

/* What this module posts and copies for: a piece or a serve. */
struct stage_op {
    struct op_ctx ctx; /* first: RMA completions find it */
    enum role role;
    struct copy_job copy;
};

/* A chunk of one of our staged transfers. */
struct piece {
    struct stage_op op; /* first */
    struct ixfer_list link; /* on ready or waiting */
    struct ixfer_list all;  /* on pieces until freed */
    struct xfer_request *req;
    uint32_t pair;
    uint64_t laddr, raddr, rkey, len;
    struct ixfer_mr *lmr;
    int remote_staged;
    struct bounce *b; /* our staged memory goes through it */
    enum { P_COPY_OUT, P_READY, P_RMA, P_WAIT, P_COPY_IN } st;
    uint64_t id;
    int req_sending; /* its request is with notify.c, which will report on it */
    int finished;    /* reported to its transfer; freed once req_sending is clear */
};

/* A peer's request, served in cycles of at most our chunk. */
struct serve {
    struct stage_op op;     /* first */
    struct ixfer_list link; /* on wait_bounce or ready_serves */
    struct ixfer_list all;  /* on serves */
    fi_addr_t fa;
    struct net_peer *np;
    uint64_t id, vaddr, key, len, iaddr, ikey;
    uint64_t done, cur; /* bytes finished, bytes of this cycle */
    int push;
    struct bounce *b;
    enum { S_WAIT_BOUNCE, S_COPY_OUT, S_READY, S_RMA, S_COPY_IN } st;
};

/* A requester's address, inserted into our AV to serve it. */
struct initiator {
    struct ixfer_list link; /* most recent first */
    fi_addr_t fa;
    uint32_t inserts;
    uint64_t len;
    uint8_t addr[];
};

struct staging {
    uint8_t *mem;
    uint64_t chunk;
    uint32_t n, pinned, broken;
    struct bounce *bounces;
    struct ixfer_list free_init, free_serve;
    struct ixfer_list pieces, ready_pieces, waiting, ready_serves, wait_bounce, serves, initiators;
    uint32_t remote_pieces, nserves, ninitiators;
    uint64_t next_id;
    uint8_t self[MAX_ADDR];
    size_t self_len;
    ixfer_piece_done_fn *done;

    pthread_t copier;
    int copier_started, stop;
    pthread_mutex_t lock; /* the two lists below and stop */
    pthread_cond_t cond;
    struct ixfer_list copyq, copied;
};

static const uint64_t ACCESS = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#define STAT_ADD(a, field, v) __atomic_add_fetch(&(a)->staging_stats.field, (v), __ATOMIC_RELAXED)

/* ---- the copier ----------------------------------------------------------- */

static int32_t copy_now(struct ixfer_agent *a, struct copy_job *j)
{
    /* The region is looked up by key and counted, so that deregistering it
     * waits for this copy and a peer's request cannot outlive it. */
    struct ixfer_mr *m = ixfer_mr_copy_begin(a, j->key, j->dev_addr, j->len);
    if (!m)
        return IXFER_ERR_NOT_FOUND;
    int32_t rc = ixfer_cuda_bind(m->dev);
    if (rc == IXFER_OK)
        rc = j->to_device ? ixfer_cuda_htod(j->dev_addr, j->host, j->len)
                          : ixfer_cuda_dtoh(j->host, j->dev_addr, j->len);
    ixfer_mr_copy_end(m);
    if (rc == IXFER_OK)
        STAT_ADD(a, copied_bytes, j->len);
    return rc;
}

static void *copier_main(void *arg)
{
    struct ixfer_agent *a = arg;
    struct staging *g = a->staging;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        while (!g->stop && ixfer_list_empty(&g->copyq))
            pthread_cond_wait(&g->cond, &g->lock);
        if (g->stop)
            break;
        struct copy_job *j = ixfer_container_of(ixfer_list_pop_front(&g->copyq), struct copy_job, link);
        pthread_mutex_unlock(&g->lock);
        j->status = copy_now(a, j);
        pthread_mutex_lock(&g->lock);
        ixfer_list_push_back(&g->copied, &j->link);
        ixfer_progress_poke(a);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

static void copy_start(struct staging *g, struct stage_op *op, int to_device, uint64_t key,
                       uint64_t dev_addr, void *host, uint64_t len)
{
    op->copy = (struct copy_job){.to_device = to_device, .key = key, .dev_addr = dev_addr,
                                 .host = host, .len = len};
    pthread_mutex_lock(&g->lock);
    ixfer_list_push_back(&g->copyq, &op->copy.link);
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* ---- the pool --------------------------------------------------------------- */

static struct bounce *take(struct ixfer_agent *a, struct ixfer_list *free_list)
{
    struct ixfer_list *n = ixfer_list_pop_front(free_list);
    if (!n)
        return NULL;
    uint32_t busy = STAT_ADD(a, chunks_busy, 1);
    if (busy > __atomic_load_n(&a->staging_stats.chunks_peak, __ATOMIC_RELAXED))
        __atomic_store_n(&a->staging_stats.chunks_peak, busy, __ATOMIC_RELAXED);
    return ixfer_container_of(n, struct bounce, link);
}

/* rekey: a peer may still reach the bounce with its old key. */
static void give_back(struct ixfer_agent *a, struct bounce *b, int rekey)
{
    struct staging *g = a->staging;
    __atomic_sub_fetch(&a->staging_stats.chunks_busy, 1, __ATOMIC_RELAXED);
    if (rekey && b->mr) {
        fi_close(&b->mr->fid);
        b->mr = NULL;
        if (ixfer_reg_mr(a, b->buf, g->chunk, ACCESS, &b->mr, &b->key) == 0)
            b->desc = fi_mr_desc(b->mr);
    }
    if (b->mr)
        ixfer_list_push_front(b->serve ? &g->free_serve : &g->free_init, &b->link);
}

/* Makes the pool on first use: a broken one (out of memory, registration
 * refused) fails staged work with IXFER_ERR_BACKEND. */
static struct staging *pool(struct ixfer_agent *a)
{
    if (a->staging)
        return a->staging->broken ? NULL : a->staging;
    struct staging *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    a->staging = g;
    struct ixfer_list *lists[] = {&g->free_init, &g->free_serve, &g->pieces, &g->ready_pieces,
                                  &g->waiting,
                                  &g->ready_serves, &g->wait_bounce, &g->serves,
                                  &g->initiators, &g->copyq, &g->copied};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++)
        ixfer_list_init(lists[i]);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    uint64_t bytes = a->staging_bytes ? a->staging_bytes : DEFAULT_POOL_BYTES;
    g->chunk = a->staging_chunk ? a->staging_chunk : DEFAULT_CHUNK_BYTES;
    g->chunk = (g->chunk + 4095) & ~4095ull;
    g->n = bytes / g->chunk < 2 ? 2 : (uint32_t)(bytes / g->chunk);
    g->self_len = sizeof g->self;
    g->broken = 1;
    g->mem = aligned_alloc(4096, (size_t)g->n * g->chunk);
    g->bounces = calloc(g->n, sizeof *g->bounces);
    if (!g->mem || !g->bounces || fi_getname(&a->ep->fid, g->self, &g->self_len))
        return NULL;
    /* Pinned, device copies run at the bus's speed and need no driver bounce. */
    g->pinned = (uint32_t)ixfer_cuda_pin(g->mem, (uint64_t)g->n * g->chunk);
    for (uint32_t i = 0; i < g->n; i++) {
        struct bounce *b = &g->bounces[i];
        b->buf = g->mem + (size_t)i * g->chunk;
        b->serve = i < g->n / 2;
        if (ixfer_reg_mr(a, b->buf, g->chunk, ACCESS, &b->mr, &b->key))
            return NULL;
        b->desc = fi_mr_desc(b->mr);
        ixfer_list_push_back(b->serve ? &g->free_serve : &g->free_init, &b->link);
    }
    if (pthread_create(&g->copier, NULL, copier_main, a))
        return NULL;
    g->copier_started = 1;
    g->broken = 0;
    __atomic_store_n(&a->staging_stats.pool_bytes, (uint64_t)g->n * g->chunk, __ATOMIC_RELAXED);
    __atomic_store_n(&a->staging_stats.chunk_bytes, g->chunk, __ATOMIC_RELAXED);
    return g;
}

/* ---- our transfers ------------------------------------------------------------ */

static void piece_free(struct piece *pc)
{
    ixfer_list_remove(&pc->all);
    free(pc);
}

static int stopped(const struct xfer_request *r)
{
    return r->base.status != IXFER_OK || r->base.cancel_status;
}

/* Ends pc for its transfer (status: its failure, or IXFER_OK); may free r. */
static void piece_finish(struct ixfer_agent *a, struct piece *pc, int32_t status, int32_t fi_err)
{
    struct staging *g = a->staging;
    struct xfer_request *r = pc->req;
    if (status == IXFER_OK && stopped(r) && pc->st != P_COPY_IN)
        status = r->base.status != IXFER_OK ? r->base.status
                                            : ixfer_cancel_status(r->base.cancel_status);
    if (status != IXFER_OK)
        ixfer_request_fail(&r->base, status, fi_err, pc->pair);
    if (pc->b)
        give_back(a, pc->b, pc->st == P_WAIT && status != IXFER_OK);
    pc->b = NULL;
    if (pc->remote_staged)
        g->remote_pieces--;
    if (ixfer_list_linked(&pc->link))
        ixfer_list_remove(&pc->link);
    pc->finished = 1;
    if (!pc->req_sending)
        piece_free(pc);
    STAT_ADD(a, pieces, 1);
    r->base.busy--;
    g->done(a, r);
}

/* After the bytes moved on the wire: into our device memory, or done. */
static void piece_moved(struct ixfer_agent *a, struct piece *pc)
{
    if (stopped(pc->req)) {
        piece_finish(a, pc, IXFER_OK, 0);
    } else if (pc->b && pc->req->op == IXFER_OP_READ) {
        pc->st = P_COPY_IN;
        copy_start(a->staging, &pc->op, 1, pc->lmr->key, pc->laddr, pc->b->buf, pc->len);
    } else {
        piece_finish(a, pc, IXFER_OK, 0);
    }
}

static void req_sent(struct ixfer_agent *a, void *ctx, int32_t status, int32_t fi_errno)
{
    struct piece *pc = ctx;
    pc->req_sending = 0;
    if (pc->finished)
        piece_free(pc);
    else if (status != IXFER_OK)
        piece_finish(a, pc, status, fi_errno);
}

/* Asks the peer to move pc's bytes between its staged memory and ours. */
static void send_request(struct ixfer_agent *a, struct piece *pc)
{
    struct staging *g = a->staging;
    uint8_t msg[REQ_BYTES + MAX_ADDR];
    uint64_t addr = pc->b ? (uint64_t)(uintptr_t)pc->b->buf : pc->laddr;
    uint64_t base = pc->b ? addr : pc->lmr->addr;
    memset(msg, 0, REQ_BYTES);
    msg[0] = MSG_REQ;
    msg[1] = pc->req->op == IXFER_OP_READ;
    uint16_t alen = (uint16_t)g->self_len;
    memcpy(msg + 2, &alen, 2);
    put64(msg + 8, pc->id);
    put64(msg + 16, pc->raddr);
    put64(msg + 24, pc->rkey);
    put64(msg + 32, pc->len);
    put64(msg + 40, (a->caps.mr_mode & FI_MR_VIRT_ADDR) ? addr : addr - base);
    put64(msg + 48, pc->b ? pc->b->key : pc->lmr->key);
    memcpy(msg + REQ_BYTES, g->self, g->self_len);
    struct notif_job *job = ixfer_notif_job_new(pc->req->peer, msg, REQ_BYTES + g->self_len, 0, 0);
    if (!job) {
        piece_finish(a, pc, IXFER_ERR_BACKEND, 0);
        return;
    }
    ixfer_notif_job_attach(job, req_sent, pc);
    ixfer_notif_job_control(job);
    ixfer_list_remove(&pc->link);
    pc->st = P_WAIT;
    pc->req_sending = 1;
    ixfer_list_push_back(&g->waiting, &pc->link);
    ixfer_notify_enqueue(a, job);
}

/* One RMA between local memory and a peer's; -FI_EAGAIN when refused. */
static ssize_t post_rma(struct ixfer_agent *a, int write, fi_addr_t peer, void *buf, void *desc,
                        uint64_t len, uint64_t raddr, uint64_t rkey, struct op_ctx *ctx)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct fi_rma_iov rma = {.addr = raddr, .len = len, .key = rkey};
    struct fi_msg_rma msg = {.msg_iov = &iov, .desc = &desc, .iov_count = 1, .addr = peer,
                             .rma_iov = &rma, .rma_iov_count = 1, .context = ctx};
    ctx->kind = OP_KIND_STAGE;
    /* As in progress.c: complete once in the target's memory, and CQ data 0
     * to keep a polled target looking. */
    int cq_data = a->wait_epfd < 0 && a->caps.cq_data_size > 0;
    ssize_t ret = write ? fi_writemsg(a->ep, &msg, FI_DELIVERY_COMPLETE | (cq_data ? FI_REMOTE_CQ_DATA : 0))
                        : fi_readmsg(a->ep, &msg, 0);
    if (ret == 0)
        ixfer_rail_worker_nudge(a, 0);
    return ret;
}

/* A ready piece: a request to the peer, or an RMA. Returns -FI_EAGAIN when
 * the provider refused. */
static int piece_go(struct ixfer_agent *a, struct piece *pc)
{
    struct xfer_request *r = pc->req;
    int32_t st = ixfer_peer_may_post(r->np);
    if (stopped(r) || st != IXFER_OK) {
        piece_finish(a, pc, st, 0);
        return 0;
    }
    if (pc->remote_staged) {
        send_request(a, pc);
        return 0;
    }
    ssize_t ret = post_rma(a, r->op == IXFER_OP_WRITE, r->peer,
                           pc->b ? pc->b->buf : (void *)(uintptr_t)pc->laddr,
                           pc->b ? pc->b->desc : pc->lmr->desc, pc->len, pc->raddr, pc->rkey,
                           &pc->op.ctx);
    if (ret == -FI_EAGAIN) {
        ixfer_peer_refused(r->np);
        return -FI_EAGAIN;
    }
    if (ret) {
        piece_finish(a, pc, ixfer_status_of((int)-ret), (int32_t)-ret);
        return 0;
    }
    ixfer_peer_posted(r->np);
    ixfer_list_remove(&pc->link);
    pc->st = P_RMA;
    return 0;
}

int ixfer_staging_post_some(struct ixfer_agent *a, struct xfer_request *r,
                            ixfer_piece_done_fn *done)
{
    struct staging *g = pool(a);
    if (!g) {
        ixfer_request_fail(&r->base, IXFER_ERR_BACKEND, 0, r->base.next_pair);
        return 0;
    }
    g->done = done;
    while (!ixfer_request_handed_out(&r->base)) {
        const ixfer_iov_pair *pair = &r->pairs[r->base.next_pair];
        uint64_t off = r->base.next_offset;
        if (off < pair->len) {
            int remote_staged = (pair->flags & IXFER_PAIR_REMOTE_STAGED) != 0;
            if (remote_staged && g->remote_pieces >= MAX_WINDOW)
                return -FI_EAGAIN;
            struct bounce *b = NULL;
            if (pair->local_mr->staged && !(b = take(a, &g->free_init)))
                return -FI_EAGAIN;
            struct piece *pc = calloc(1, sizeof *pc);
            if (!pc) {
                if (b)
                    give_back(a, b, 0);
                ixfer_request_fail(&r->base, IXFER_ERR_BACKEND, 0, r->base.next_pair);
                break;
            }
            uint64_t len = pair->len - off < g->chunk ? pair->len - off : g->chunk;
            *pc = (struct piece){.op.role = ROLE_PIECE, .req = r, .pair = r->base.next_pair,
                                 .laddr = pair->local_addr + off, .raddr = pair->remote_addr + off,
                                 .rkey = pair->remote_key, .len = len, .lmr = pair->local_mr,
                                 .remote_staged = remote_staged, .b = b, .id = ++g->next_id};
            ixfer_list_push_back(&g->pieces, &pc->all);
            g->remote_pieces += (uint32_t)remote_staged;
            r->base.busy++;
            r->base.next_offset += len;
            if (b && r->op == IXFER_OP_WRITE) {
                pc->st = P_COPY_OUT;
                copy_start(g, &pc->op, 0, pc->lmr->key, pc->laddr, b->buf, len);
            } else {
                pc->st = P_READY;
                ixfer_list_push_back(&g->ready_pieces, &pc->link);
            }
        }
        if (r->base.next_offset >= pair->len) {
            r->base.next_pair++;
            r->base.next_offset = 0;
        }
    }
    return 0;
}

static void on_reply(struct ixfer_agent *a, uint64_t id, int32_t status)
{
    IXFER_LIST_FOR_EACH(node, &a->staging->waiting) {
        struct piece *pc = ixfer_container_of(node, struct piece, link);
        if (pc->id != id)
            continue;
        ixfer_list_remove(&pc->link);
        ixfer_peer_heard(pc->req->np);
        /* The peer is done with our memory either way. */
        if (status != IXFER_OK) {
            pc->st = P_RMA;
            piece_finish(a, pc, status < 0 && status >= IXFER_ERR_NO_SPACE ? status
                                                                         : IXFER_ERR_BACKEND, 0);
        } else {
            piece_moved(a, pc);
        }
        return;
    }
    /* Unknown: a piece given up since (canceled, timed out). */
}

/* ---- serving peers --------------------------------------------------------------- */

static void reply_sent(struct ixfer_agent *a, void *ctx, int32_t status, int32_t fi_errno)
{
    (void)a, (void)ctx, (void)status, (void)fi_errno;
}

static void reply(struct ixfer_agent *a, fi_addr_t fa, uint64_t id, int32_t status)
{
    uint8_t msg[DONE_BYTES] = {MSG_DONE};
    memcpy(msg + 4, &status, 4);
    put64(msg + 8, id);
    struct notif_job *job = ixfer_notif_job_new(fa, msg, sizeof msg, 0, 0);
    if (!job)
        return; /* the requester's deadline ends its wait */
    ixfer_notif_job_attach(job, reply_sent, NULL);
    ixfer_notif_job_control(job);
    ixfer_notify_enqueue(a, job);
}

static void serve_end(struct ixfer_agent *a, struct serve *sv, int32_t status)
{
    struct staging *g = a->staging;
    if (sv->b)
        give_back(a, sv->b, 0);
    if (ixfer_list_linked(&sv->link))
        ixfer_list_remove(&sv->link);
    ixfer_list_remove(&sv->all);
    g->nserves--;
    if (status == IXFER_OK)
        STAT_ADD(a, served, 1);
    else
        STAT_ADD(a, serve_failed, 1);
    if (ixfer_peer_may_post(sv->np) == IXFER_OK)
        reply(a, sv->fa, sv->id, status);
    ixfer_peer_unref(a, sv->np);
    free(sv);
}

/* Starts the next cycle of sv (it holds a bounce), or ends it. */
static void serve_cycle(struct ixfer_agent *a, struct serve *sv)
{
    struct staging *g = a->staging;
    if (sv->done == sv->len) {
        serve_end(a, sv, IXFER_OK);
        return;
    }
    sv->cur = sv->len - sv->done < g->chunk ? sv->len - sv->done : g->chunk;
    if (sv->push) {
        sv->st = S_COPY_OUT;
        copy_start(g, &sv->op, 0, sv->key, sv->vaddr + sv->done, sv->b->buf, sv->cur);
    } else {
        sv->st = S_READY;
        ixfer_list_push_back(&g->ready_serves, &sv->link);
    }
}

static int serve_go(struct ixfer_agent *a, struct serve *sv)
{
    if (ixfer_peer_may_post(sv->np) != IXFER_OK) {
        serve_end(a, sv, IXFER_ERR_REMOTE_DISCONNECT);
        return 0;
    }
    ssize_t ret = post_rma(a, sv->push, sv->fa, sv->b->buf, sv->b->desc, sv->cur,
                           sv->iaddr + sv->done, sv->ikey, &sv->op.ctx);
    if (ret == -FI_EAGAIN) {
        ixfer_peer_refused(sv->np);
        return -FI_EAGAIN;
    }
    if (ret) {
        serve_end(a, sv, ixfer_status_of((int)-ret));
        return 0;
    }
    ixfer_peer_posted(sv->np);
    ixfer_list_remove(&sv->link);
    sv->st = S_RMA;
    return 0;
}

/* The fi_addr to serve the requester at addr: inserted once, again after
 * it was found gone (a re-insert gives its record a fresh start). */
static int learn(struct ixfer_agent *a, const uint8_t *addr, uint64_t len, fi_addr_t *out)
{
    struct staging *g = a->staging;
    struct initiator *found = NULL;
    IXFER_LIST_FOR_EACH(node, &g->initiators) {
        struct initiator *in = ixfer_container_of(node, struct initiator, link);
        if (in->len == len && !memcmp(in->addr, addr, len)) {
            found = in;
            ixfer_list_remove(&in->link);
            break;
        }
    }
    if (!found) {
        if (ixfer_peer_addr_check(a, addr, len) != IXFER_OK)
            return -1;
        if (g->ninitiators >= MAX_INITIATORS) {
            struct initiator *old = ixfer_container_of(ixfer_list_last(&g->initiators),
                                                       struct initiator, link);
            ixfer_list_remove(&old->link);
            for (; old->inserts; old->inserts--)
                ixfer_peer_removed(a, old->fa);
            free(old);
            g->ninitiators--;
        }
        if (!(found = calloc(1, sizeof *found + len)))
            return -1;
        found->len = len;
        memcpy(found->addr, addr, len);
        g->ninitiators++;
    }
    ixfer_list_push_front(&g->initiators, &found->link);
    if (!found->inserts || ixfer_peer_may_post(ixfer_peer_find(a, found->fa)) != IXFER_OK) {
        fi_addr_t fa = FI_ADDR_UNSPEC;
        if (fi_av_insert(a->av, addr, 1, &fa, 0, NULL) != 1 || fa == FI_ADDR_UNSPEC ||
            ixfer_peer_added(a, fa, addr, len, NULL, 1))
            return -1;
        found->fa = fa;
        found->inserts++;
    }
    *out = found->fa;
    return 0;
}

static void on_request(struct ixfer_agent *a, const uint8_t *m, uint64_t len)
{
    uint16_t alen;
    memcpy(&alen, m + 2, 2);
    if (len != REQ_BYTES + (uint64_t)alen || m[1] > 1)
        return;
    struct staging *g = pool(a);
    fi_addr_t fa;
    if (!g || learn(a, m + REQ_BYTES, alen, &fa))
        return;
    uint64_t id = get64(m + 8), vaddr = get64(m + 16), key = get64(m + 24), n = get64(m + 32);
    /* Checked now for a clear answer, and again by each copy (the region may go). */
    struct ixfer_mr *region = n ? ixfer_mr_copy_begin(a, key, vaddr, n) : NULL;
    if (region)
        ixfer_mr_copy_end(region);
    int32_t refusal = !region ? IXFER_ERR_NOT_FOUND
                      : g->nserves >= MAX_SERVES ? IXFER_ERR_NOT_ALLOWED : IXFER_OK;
    struct serve *sv = refusal ? NULL : calloc(1, sizeof *sv);
    if (!sv) {
        STAT_ADD(a, serve_failed, 1);
        reply(a, fa, id, refusal ? refusal : IXFER_ERR_BACKEND);
        return;
    }
    *sv = (struct serve){.op.role = ROLE_SERVE, .fa = fa, .np = ixfer_peer_find(a, fa), .id = id,
                         .vaddr = vaddr, .key = key, .len = n, .iaddr = get64(m + 40),
                         .ikey = get64(m + 48), .push = m[1], .st = S_WAIT_BOUNCE};
    ixfer_peer_ref(sv->np);
    ixfer_list_push_back(&g->serves, &sv->all);
    ixfer_list_push_back(&g->wait_bounce, &sv->link);
    g->nserves++;
}

/* Anything else (notify.c's one-byte nudges) needs no answer. */
void ixfer_staging_message(struct ixfer_agent *a, const uint8_t *msg, uint64_t len)
{
    if (len >= REQ_BYTES && msg[0] == MSG_REQ) {
        on_request(a, msg, len);
    } else if (len == DONE_BYTES && msg[0] == MSG_DONE && a->staging) {
        int32_t status;
        memcpy(&status, msg + 4, 4);
        on_reply(a, get64(msg + 8), status);
    }
}

/* ---- completions and the pass ------------------------------------------------------- */

static void copied(struct ixfer_agent *a, struct stage_op *op)
{
    int32_t status = op->copy.status;
    if (op->role == ROLE_PIECE) {
        struct piece *pc = ixfer_container_of(op, struct piece, op);
        if (status != IXFER_OK || pc->st == P_COPY_IN || stopped(pc->req)) {
            piece_finish(a, pc, status, 0);
        } else {
            pc->st = P_READY;
            ixfer_list_push_back(&a->staging->ready_pieces, &pc->link);
        }
        return;
    }
    struct serve *sv = ixfer_container_of(op, struct serve, op);
    if (status != IXFER_OK) {
        serve_end(a, sv, status);
    } else if (sv->st == S_COPY_IN) {
        sv->done += sv->cur;
        serve_cycle(a, sv);
    } else {
        sv->st = S_READY;
        ixfer_list_push_back(&a->staging->ready_serves, &sv->link);
    }
}

void ixfer_staging_completion(struct ixfer_agent *a, struct op_ctx *ctx, int fi_err)
{
    struct stage_op *op = (struct stage_op *)ctx;
    if (op->role == ROLE_PIECE) {
        struct piece *pc = ixfer_container_of(op, struct piece, op);
        ixfer_peer_op_done(pc->req->np, fi_err);
        if (fi_err)
            piece_finish(a, pc, ixfer_status_of(fi_err), fi_err);
        else
            piece_moved(a, pc);
        return;
    }
    struct serve *sv = ixfer_container_of(op, struct serve, op);
    ixfer_peer_op_done(sv->np, fi_err);
    if (fi_err) {
        serve_end(a, sv, ixfer_status_of(fi_err));
    } else if (sv->push) {
        sv->done += sv->cur;
        serve_cycle(a, sv);
    } else {
        sv->st = S_COPY_IN;
        copy_start(a->staging, &sv->op, 1, sv->key, sv->vaddr + sv->done, sv->b->buf, sv->cur);
    }
}

int ixfer_staging_pass(struct ixfer_agent *a)
{
    struct staging *g = a->staging;
    if (!g || g->broken)
        return 0;
    int result = 0;
    struct ixfer_list done;
    ixfer_list_init(&done);
    pthread_mutex_lock(&g->lock);
    ixfer_list_splice_back(&done, &g->copied);
    pthread_mutex_unlock(&g->lock);
    struct ixfer_list *node;
    while ((node = ixfer_list_pop_front(&done))) {
        copied(a, ixfer_container_of(ixfer_container_of(node, struct copy_job, link),
                                     struct stage_op, copy));
        result = STAGING_WORKED;
    }
    while (!ixfer_list_empty(&g->wait_bounce) && !ixfer_list_empty(&g->free_serve)) {
        struct serve *sv = ixfer_container_of(ixfer_list_pop_front(&g->wait_bounce),
                                              struct serve, link);
        sv->b = take(a, &g->free_serve);
        serve_cycle(a, sv);
        result = STAGING_WORKED;
    }
    IXFER_LIST_FOR_EACH_SAFE(n, &g->ready_serves) {
        if (serve_go(a, ixfer_container_of(n, struct serve, link)) == -FI_EAGAIN) {
            result |= STAGING_STALLED;
            break;
        }
        result |= STAGING_WORKED;
    }
    IXFER_LIST_FOR_EACH_SAFE(n, &g->ready_pieces) {
        if (piece_go(a, ixfer_container_of(n, struct piece, link)) == -FI_EAGAIN) {
            result |= STAGING_STALLED;
            break;
        }
        result |= STAGING_WORKED;
    }
    /* Waiting on a peer that will not answer: given up with its transfer, or
     * when the peer is found gone (nothing else of ours may be posted to a
     * dead peer, so its silence is what tells: pieces of one transfer come
     * in runs, and one look per run is enough). */
    struct net_peer *looked = NULL;
    IXFER_LIST_FOR_EACH_SAFE(n, &g->waiting) {
        struct piece *pc = ixfer_container_of(n, struct piece, link);
        struct net_peer *np = pc->req->np;
        /* Only once its request went out: the send itself restarts the
         * peer's clock, which an earlier silence may have left running. */
        if (!pc->req_sending && !stopped(pc->req) && np != looked && ixfer_peer_may_post(np) == IXFER_OK) {
            looked = np;
            if (ixfer_peer_silent(np))
                result |= STAGING_STALLED;
        }
        int32_t st = ixfer_peer_may_post(np);
        if (stopped(pc->req) || st != IXFER_OK) {
            piece_finish(a, pc, st, 0);
            result |= STAGING_WORKED;
        }
    }
    return result;
}

/* ---- statistics and teardown ---------------------------------------------------------- */

int32_t ixfer_staging_stats_get(ixfer_agent *agent, ixfer_staging_stats *out)
{
    if (!agent || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    const ixfer_staging_stats *s = &agent->staging_stats;
    *out = (ixfer_staging_stats){
        .pool_bytes = __atomic_load_n(&s->pool_bytes, __ATOMIC_RELAXED),
        .chunk_bytes = __atomic_load_n(&s->chunk_bytes, __ATOMIC_RELAXED),
        .chunks_busy = __atomic_load_n(&s->chunks_busy, __ATOMIC_RELAXED),
        .chunks_peak = __atomic_load_n(&s->chunks_peak, __ATOMIC_RELAXED),
        .pieces = __atomic_load_n(&s->pieces, __ATOMIC_RELAXED),
        .served = __atomic_load_n(&s->served, __ATOMIC_RELAXED),
        .serve_failed = __atomic_load_n(&s->serve_failed, __ATOMIC_RELAXED),
        .copied_bytes = __atomic_load_n(&s->copied_bytes, __ATOMIC_RELAXED),
    };
    return IXFER_OK;
}

void ixfer_staging_stop(struct ixfer_agent *a)
{
    struct staging *g = a->staging;
    if (!g || !g->copier_started)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = 1;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->copier, NULL);
    g->copier_started = 0;
}

void ixfer_staging_fini(struct ixfer_agent *a)
{
    struct staging *g = a->staging;
    if (!g)
        return;
    ixfer_staging_stop(a);
    /* The requests the pieces belong to are progress.c's to free. */
    IXFER_LIST_FOR_EACH_SAFE(n, &g->serves)
        free(ixfer_container_of(n, struct serve, all));
    IXFER_LIST_FOR_EACH_SAFE(n, &g->pieces)
        free(ixfer_container_of(n, struct piece, all));
    IXFER_LIST_FOR_EACH_SAFE(n, &g->initiators)
        free(ixfer_container_of(n, struct initiator, link));
    for (uint32_t i = 0; g->bounces && i < g->n; i++)
        if (g->bounces[i].mr)
            fi_close(&g->bounces[i].mr->fid);
    if (g->pinned)
        ixfer_cuda_unpin(g->mem);
    free(g->bounces);
    free(g->mem);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
    a->staging = NULL;
}
