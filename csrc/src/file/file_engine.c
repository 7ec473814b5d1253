/* The file engine: a queue of memory<->file transfers served by a pool of
 * worker threads. Each request is cut into chunks (at most chunk_bytes) that
 * the workers take in turn, round-robin across requests so that a large one
 * does not hold up the others. A request is reported on its agent's event
 * queue once nothing of it is left in a worker, as network transfers are. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/request.h"
#include "core/tuning.h"
#include "file/files.h"

#define DEFAULT_THREADS 4
#define MAX_THREADS 256
#define DEFAULT_CHUNK (8ull << 20)
#define DEFAULT_GDS_BATCH 16
#define MAX_GDS_BATCH 256
/* Small pairs are taken several at a time (up to chunk_bytes in all), so that
 * a worker pays for the queue once per chunk_bytes, not once per pair. */
#define MAX_TAKE 64
#define MIN_SPLIT (256u << 10)

/* base.busy counts the workers moving a part of it; base.queue is the run
 * queue. */
struct file_request {
    struct ixfer_request base; /* first: ixfer_request_end() frees the allocation */
    uint32_t op, kind;
    uint64_t chunk;       /* bytes per take: see split() */
    ixfer_file_pair pairs[];
};

struct ixfer_file_engine {
    struct ixfer_events *events; /* its agent's */
    uint64_t chunk_bytes;
    uint32_t gds_batch;
    pthread_mutex_t lock;
    pthread_cond_t work;
    int stop;
    /* A worker that just finished watches `posted` for ixfer_spin_ns() before
     * it sleeps, so that a stream of transfers (the next one is posted right
     * after the last completes) pays no wake-up; one worker at most. */
    int spinning;
    atomic_uint posted;
    struct ixfer_list queue; /* requests with chunks to hand out */
    struct ixfer_list live;  /* every request not yet reported */
    uint32_t nworkers;
    struct file_worker *workers;
};

/* Bytes per take for a read: one smaller than threads × chunk_bytes is still
 * spread over every thread (in takes of at least MIN_SPLIT), so a 1 MiB read
 * is four copies at once rather than one. */
static uint64_t split(const struct ixfer_file_engine *e, const ixfer_file_pair *pairs,
                      uint32_t count)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++)
        total += pairs[i].len;
    uint64_t share = (total + e->nworkers - 1) / e->nworkers;
    if (share < MIN_SPLIT)
        share = MIN_SPLIT;
    return share < e->chunk_bytes ? share : e->chunk_bytes;
}

static struct file_request *queue_head(struct ixfer_file_engine *e)
{
    return ixfer_list_entry(ixfer_list_first(&e->queue), struct file_request, base.queue);
}

/* Reports and frees r once no worker holds a part of it. Lock held. */
static void maybe_finish(struct ixfer_file_engine *e, struct file_request *r)
{
    if (ixfer_request_settled(&r->base))
        ixfer_request_end(e->events, &r->base);
}

/* Takes the next chunks of the head request: for the gds engine a run of
 * device-memory chunks on one device up to the batch size (a batch binds one
 * context, so a change of device ends it), else chunks up to chunk_bytes in
 * all (at least one), and for the gds engine host chunks only, so that device
 * memory after them still goes to cuFile, not to POSIX staging. Lock held. */
static struct file_request *take(struct ixfer_file_engine *e, struct file_chunk *chunks,
                                 uint32_t *n)
{
    struct file_request *r;
    while ((r = queue_head(e)) && ixfer_request_handed_out(&r->base)) {
        /* failed or canceled while queued */
        ixfer_list_remove(&r->base.queue);
        maybe_finish(e, r);
    }
    if (!r)
        return NULL;
    /* Empty pairs move nothing: skipped, so that the first chunk taken decides
     * what kind of take this is. */
    struct ixfer_request *b = &r->base;
    while (b->next_pair < b->count && r->pairs[b->next_pair].len == 0)
        b->next_pair++;
    int gds = r->kind == IXFER_FILE_ENGINE_GDS;
    int32_t dev = b->next_pair < b->count ? r->pairs[b->next_pair].dev : -1;
    int batch = gds && dev >= 0;
    uint32_t max = batch ? e->gds_batch : MAX_TAKE;
    uint64_t total = 0;
    *n = 0;
    while (*n < max && b->next_pair < b->count) {
        const ixfer_file_pair *p = &r->pairs[b->next_pair];
        uint64_t left = p->len - b->next_offset;
        uint64_t len = left < r->chunk ? left : r->chunk;
        if (len && *n &&
            (batch ? p->dev != dev : total + len > r->chunk || (gds && p->dev >= 0)))
            break;
        total += len;
        if (len)
            chunks[(*n)++] = (struct file_chunk){b->next_pair, b->next_offset, len};
        b->next_offset += len;
        if (b->next_offset == p->len) {
            b->next_pair++;
            b->next_offset = 0;
        }
    }
    ixfer_list_remove(&b->queue);
    if (b->next_pair < b->count) /* round robin: to the back of the queue */
        ixfer_list_push_back(&e->queue, &b->queue);
    b->busy++;
    return r;
}

static void run(struct file_worker *w, struct file_request *r, const struct file_chunk *chunks,
                uint32_t n, struct file_result *res)
{
    struct ixfer_file_engine *e = w->engine;
    *res = (struct file_result){IXFER_OK, 0, 0};
    if (n && r->kind == IXFER_FILE_ENGINE_GDS && r->pairs[chunks[0].pair].dev >= 0) {
        ixfer_gds_batch(w, r->op, r->pairs, chunks, n, e->gds_batch, res);
        return;
    }
    if (r->kind != IXFER_FILE_ENGINE_GDS_MT) {
        ixfer_posix_run(w, r->op, r->pairs, chunks, n, e->chunk_bytes, res);
        return;
    }
    for (uint32_t i = 0; i < n && res->status == IXFER_OK; i++) {
        const ixfer_file_pair *p = &r->pairs[chunks[i].pair];
        if (p->dev >= 0)
            ixfer_gds_chunk(r->op, p, &chunks[i], res);
        else
            ixfer_posix_run(w, r->op, r->pairs, &chunks[i], 1, e->chunk_bytes, res);
    }
}

/* Waits up to ixfer_spin_ns(), without the lock, for a new request. Lock held on
 * entry and on return. */
static void spin(struct ixfer_file_engine *e)
{
    e->spinning = 1;
    unsigned seen = atomic_load_explicit(&e->posted, memory_order_acquire);
    pthread_mutex_unlock(&e->lock);
    uint64_t start = ixfer_now_ns(), limit = ixfer_spin_ns();
    while (atomic_load_explicit(&e->posted, memory_order_acquire) == seen &&
           ixfer_now_ns() - start < limit)
        ;
    pthread_mutex_lock(&e->lock);
    e->spinning = 0;
}

static void *worker_main(void *arg)
{
    struct file_worker *w = arg;
    struct ixfer_file_engine *e = w->engine;
    struct file_chunk chunks[MAX_GDS_BATCH > MAX_TAKE ? MAX_GDS_BATCH : MAX_TAKE];
    int just_worked = 0;
    pthread_mutex_lock(&e->lock);
    while (!e->stop) {
        uint32_t n = 0;
        struct file_request *r = take(e, chunks, &n);
        if (!r) {
            if (just_worked && !e->spinning && ixfer_spin_ns()) {
                just_worked = 0;
                spin(e);
                continue;
            }
            just_worked = 0;
            pthread_cond_wait(&e->work, &e->lock);
            continue;
        }
        just_worked = 1;
        if (!ixfer_list_empty(&e->queue)) /* more to take: pass the wake-up on */
            pthread_cond_signal(&e->work);
        pthread_mutex_unlock(&e->lock);
        struct file_result res;
        run(w, r, chunks, n, &res);
        pthread_mutex_lock(&e->lock);
        ixfer_request_fail(&r->base, res.status, res.err, res.pair);
        r->base.busy--;
        maybe_finish(e, r);
    }
    pthread_mutex_unlock(&e->lock);
    ixfer_posix_worker_free(w);
    ixfer_gds_worker_free(w);
    return NULL;
}

static void engine_free(struct ixfer_file_engine *e)
{
    pthread_mutex_lock(&e->lock);
    e->stop = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    for (uint32_t i = 0; i < e->nworkers; i++)
        pthread_join(e->workers[i].thread, NULL);
    IXFER_LIST_FOR_EACH_SAFE(node, &e->live)
        free(ixfer_container_of(node, struct file_request, base.live));
    free(e->workers);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    free(e);
}

int32_t ixfer_file_engine_create(ixfer_agent *agent, const ixfer_file_engine_config *cfg,
                                 ixfer_file_engine **out)
{
    if (!agent || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    ixfer_file_engine_config c = cfg ? *cfg : (ixfer_file_engine_config){0};
    if (c.threads > MAX_THREADS || c.gds_batch > MAX_GDS_BATCH)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "file engine: at most %d threads and %d batch "
                          "entries", MAX_THREADS, MAX_GDS_BATCH);
    struct ixfer_file_engine *e = calloc(1, sizeof *e);
    if (!e)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    /* Only the agent's event queue: the file engine knows nothing else of it. */
    e->events = ixfer_agent_events(agent);
    ixfer_list_init(&e->queue);
    ixfer_list_init(&e->live);
    e->chunk_bytes = c.chunk_bytes ? c.chunk_bytes : DEFAULT_CHUNK;
    e->gds_batch = c.gds_batch ? c.gds_batch : DEFAULT_GDS_BATCH;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    uint32_t want = c.threads ? c.threads : DEFAULT_THREADS;
    e->workers = calloc(want, sizeof *e->workers);
    if (!e->workers) {
        engine_free(e);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    }
    for (; e->nworkers < want; e->nworkers++) {
        struct file_worker *w = &e->workers[e->nworkers];
        w->engine = e;
        if (pthread_create(&w->thread, NULL, worker_main, w)) {
            engine_free(e);
            return ixfer_fail(IXFER_ERR_BACKEND, "cannot start file engine threads");
        }
    }
    *out = e;
    return IXFER_OK;
}

void ixfer_file_engine_destroy(ixfer_file_engine *e)
{
    if (e)
        engine_free(e);
}

int32_t ixfer_file_xfer_post(ixfer_file_engine *e, uint32_t op, uint32_t kind,
                             const ixfer_file_pair *pairs, uint32_t count, uint64_t user_id)
{
    if (!e || (count && !pairs))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (op != IXFER_OP_WRITE && op != IXFER_OP_READ)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown op %u", op);
    if (kind > IXFER_FILE_ENGINE_GDS_MT)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown file engine %u", kind);
    for (uint32_t i = 0; i < count; i++) {
        const ixfer_file_pair *p = &pairs[i];
        if (!p->file)
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "pair %u has no file", i);
        if (!(p->file->flags & (op == IXFER_OP_WRITE ? IXFER_FILE_WRITE : IXFER_FILE_READ)))
            return ixfer_fail(IXFER_ERR_NOT_ALLOWED, "pair %u: the file is not open for %s", i,
                              op == IXFER_OP_WRITE ? "writing" : "reading");
        if (p->len && !p->mem_addr)
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "pair %u has no memory address", i);
        /* Offsets are off_t, and no range may wrap around the address space. */
        if (p->len > UINT64_MAX - p->mem_addr || p->file_offset > (uint64_t)INT64_MAX ||
            p->len > (uint64_t)INT64_MAX - p->file_offset)
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "pair %u: its memory or file range "
                              "overflows", i);
        if (kind != IXFER_FILE_ENGINE_POSIX && p->dev >= 0) {
            /* cuFile addresses device memory as mem_base plus mem_addr -
             * mem_base: a base above the address would wrap to a huge offset. */
            if (!p->mem_base || p->mem_base > p->mem_addr)
                return ixfer_fail(IXFER_ERR_INVALID_PARAM, "pair %u: memory base 0x%llx does not "
                                  "contain address 0x%llx", i, (unsigned long long)p->mem_base,
                                  (unsigned long long)p->mem_addr);
            if (!p->file->cufile)
                return ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "pair %u: the file is not registered "
                                  "with cuFile", i);
        }
    }
    struct file_request *r = calloc(1, sizeof *r + (size_t)count * sizeof *pairs);
    if (!r)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    ixfer_request_init(&r->base, user_id, count);
    /* Buffered writes to one file take the inode's lock in turn: spreading
     * them over threads only adds contention. */
    r->chunk = op == IXFER_OP_READ ? split(e, pairs, count) : e->chunk_bytes;
    r->op = op;
    r->kind = kind;
    if (count)
        memcpy(r->pairs, pairs, (size_t)count * sizeof *pairs);
    pthread_mutex_lock(&e->lock);
    ixfer_list_push_front(&e->live, &r->base.live);
    ixfer_list_push_back(&e->queue, &r->base.queue);
    /* Skip empty pairs now so that an all-empty request finishes at once. */
    while (r->base.next_pair < count && pairs[r->base.next_pair].len == 0)
        r->base.next_pair++;
    if (r->base.next_pair == count) {
        ixfer_list_remove(&r->base.queue);
        maybe_finish(e, r);
    } else {
        /* One worker (none if one is spinning); it wakes another if it leaves
         * work behind (worker_main): waking them all costs the poster a
         * context switch per worker. */
        atomic_fetch_add_explicit(&e->posted, 1, memory_order_release);
        if (!e->spinning)
            pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->lock);
    return IXFER_OK;
}

int32_t ixfer_file_xfer_cancel(ixfer_file_engine *e, uint64_t user_id, int32_t status)
{
    if (!e)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    pthread_mutex_lock(&e->lock);
    struct ixfer_request *r = ixfer_request_find(&e->live, user_id);
    if (r && ixfer_request_cancel(r, status)) {
        if (ixfer_list_linked(&r->queue)) /* I/O not yet started is dropped */
            ixfer_list_remove(&r->queue);
        maybe_finish(e, ixfer_container_of(r, struct file_request, base));
    }
    pthread_mutex_unlock(&e->lock);
    return IXFER_OK;
}
