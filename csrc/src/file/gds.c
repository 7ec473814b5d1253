/* The cuFile paths of the file engine (GPUDirect Storage): file handle and
 * buffer registration, synchronous cuFileRead/cuFileWrite ('gds_mt', called
 * from the worker pool) and the batch API ('gds'). cuFile's types are
 * declared here from its documented ABI, so building needs no cufile.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "core/error.h"
#include "file/files.h"
#include "gpu/cuda.h"

/* CUfileError_t: two ints, returned in a register. */
typedef struct { int err; int cu_err; } cufile_error;

enum { CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1, CUFILE_BATCH = 1, CUFILE_READ = 0, CUFILE_WRITE = 1 };
/* CUfileStatus_t: an entry is final once neither waiting nor pending; any
 * final status but complete is a failure here. */
enum { CUFILE_WAITING = 1, CUFILE_PENDING = 2, CUFILE_COMPLETE = 0x10 };

/* How long a batch whose status cuFile cannot report is waited for after it
 * was canceled: attempts, STATUS_RETRY_NS apart. */
#define STATUS_RETRIES 50
#define STATUS_RETRY_NS 100000000L

typedef struct {
    int type;
    union { int fd; void *handle; } handle;
    const void *fs_ops;
} cufile_descr;

typedef struct {
    int mode;
    union {
        struct { void *dev_base; off_t file_offset; off_t dev_offset; size_t size; } batch;
    } u;
    void *fh;
    int opcode;
    void *cookie;
} cufile_io_params;

typedef struct {
    void *cookie;
    int status;
    size_t ret;
} cufile_io_event;

static struct {
    cufile_error (*driver_open)(void);
    cufile_error (*handle_register)(void **fh, cufile_descr *d);
    void (*handle_deregister)(void *fh);
    cufile_error (*buf_register)(const void *base, size_t len, int flags);
    cufile_error (*buf_deregister)(const void *base);
    ssize_t (*read)(void *fh, void *base, size_t size, off_t file_off, off_t dev_off);
    ssize_t (*write)(void *fh, const void *base, size_t size, off_t file_off, off_t dev_off);
    cufile_error (*batch_setup)(void **batch, unsigned nr);
    cufile_error (*batch_submit)(void *batch, unsigned nr, cufile_io_params *io, unsigned flags);
    cufile_error (*batch_status)(void *batch, unsigned min_nr, unsigned *nr, cufile_io_event *ev,
                                 struct timespec *timeout);
    cufile_error (*batch_cancel)(void *batch); /* optional */
    void (*batch_destroy)(void *batch);
} cf;

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int open_state; /* 0 untried, 1 open, <0 the status it failed with */
static char open_error[512];

#define SYM(field, name) (*(void **)&cf.field = ixfer_cufile_sym(name))

/* Opens libcufile and its driver once, in device 0's context. */
static int32_t gds_open(void)
{
    pthread_mutex_lock(&open_lock);
    if (open_state == 0) {
        int32_t rc = ixfer_cufile_load();
        if (rc == IXFER_OK &&
            (!SYM(driver_open, "cuFileDriverOpen") || !SYM(handle_register, "cuFileHandleRegister") ||
             !SYM(handle_deregister, "cuFileHandleDeregister") ||
             !SYM(buf_register, "cuFileBufRegister") || !SYM(buf_deregister, "cuFileBufDeregister") ||
             !SYM(read, "cuFileRead") || !SYM(write, "cuFileWrite") ||
             !SYM(batch_setup, "cuFileBatchIOSetUp") || !SYM(batch_submit, "cuFileBatchIOSubmit") ||
             !SYM(batch_status, "cuFileBatchIOGetStatus") || !SYM(batch_destroy, "cuFileBatchIODestroy")))
            rc = ixfer_fail(IXFER_ERR_LIBRARY_MISSING, "%s lacks the cuFile entry points",
                            ixfer_cufile_path());
        if (rc == IXFER_OK)
            SYM(batch_cancel, "cuFileBatchIOCancel");
        if (rc == IXFER_OK)
            rc = ixfer_cuda_bind(0);
        if (rc == IXFER_OK) {
            cufile_error e = cf.driver_open();
            if (e.err)
                rc = ixfer_fail(IXFER_ERR_BACKEND, "cuFileDriverOpen failed: cuFile error %d "
                                "(CUDA error %d)", e.err, e.cu_err);
        }
        open_state = rc == IXFER_OK ? 1 : rc;
        if (rc != IXFER_OK)
            snprintf(open_error, sizeof open_error, "%s", ixfer_last_error());
    }
    int32_t state = open_state;
    pthread_mutex_unlock(&open_lock);
    if (state < 0)
        return ixfer_fail(state, "%s", open_error);
    return IXFER_OK;
}

int32_t ixfer_file_use_cufile(ixfer_file *f)
{
    if (!f)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (f->cufile)
        return IXFER_OK;
    int32_t rc = gds_open();
    if (rc != IXFER_OK)
        return rc;
    cufile_descr d = {.type = CU_FILE_HANDLE_TYPE_OPAQUE_FD, .handle.fd = f->fd};
    cufile_error e = cf.handle_register(&f->cufile, &d);
    if (e.err) {
        f->cufile = NULL;
        return ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "cuFileHandleRegister refused the file: "
                          "cuFile error %d%s", e.err, e.err == 5027 ? " (no udev record of its "
                          "disk: see 'cuFile error 5027' in ixfer's README)" : "");
    }
    return IXFER_OK;
}

void ixfer_gds_file_release(struct ixfer_file *f)
{
    if (f->cufile)
        cf.handle_deregister(f->cufile);
    f->cufile = NULL;
}

int32_t ixfer_cufile_buf_register(uint64_t addr, uint64_t len)
{
    int32_t rc = gds_open();
    if (rc != IXFER_OK)
        return rc;
    cufile_error e = cf.buf_register((const void *)(uintptr_t)addr, (size_t)len, 0);
    return e.err ? ixfer_fail(IXFER_ERR_BACKEND, "cuFileBufRegister failed: cuFile error %d "
                              "(CUDA error %d)", e.err, e.cu_err)
                 : IXFER_OK;
}

int32_t ixfer_cufile_buf_deregister(uint64_t addr)
{
    int32_t rc = gds_open();
    if (rc != IXFER_OK)
        return rc;
    cufile_error e = cf.buf_deregister((const void *)(uintptr_t)addr);
    return e.err ? ixfer_fail(IXFER_ERR_BACKEND, "cuFileBufDeregister failed: cuFile error %d",
                              e.err)
                 : IXFER_OK;
}

/* cuFileRead/cuFileWrite return -1 with errno for filesystem errors and
 * -CUfileOpError for their own. */
static void fail_ret(ssize_t ret, struct file_result *res)
{
    if (ret == -1) {
        res->status = ixfer_errno_status(errno);
        res->err = errno;
    } else {
        res->status = IXFER_ERR_BACKEND;
        res->err = (int32_t)-ret;
    }
}

void ixfer_gds_chunk(uint32_t op, const ixfer_file_pair *p, const struct file_chunk *c,
                     struct file_result *res)
{
    res->pair = c->pair;
    if ((res->status = ixfer_cuda_bind(p->dev)) != IXFER_OK)
        return;
    void *base = (void *)(uintptr_t)p->mem_base;
    uint64_t dev_off = p->mem_addr - p->mem_base + c->offset;
    uint64_t file_off = p->file_offset + c->offset;
    uint64_t left = c->len;
    while (left) {
        ssize_t got = op == IXFER_OP_WRITE
                          ? cf.write(p->file->cufile, base, left, (off_t)file_off, (off_t)dev_off)
                          : cf.read(p->file->cufile, base, left, (off_t)file_off, (off_t)dev_off);
        if (got < 0) {
            fail_ret(got, res);
            return;
        }
        if (got == 0) {
            res->status = op == IXFER_OP_WRITE ? IXFER_ERR_NO_SPACE : IXFER_ERR_END_OF_FILE;
            res->err = op == IXFER_OP_WRITE ? ENOSPC : 0;
            return;
        }
        left -= (uint64_t)got;
        dev_off += (uint64_t)got;
        file_off += (uint64_t)got;
    }
}

/* Records the outcome of one final batch entry in res (the first failure wins). */
static void batch_entry(uint32_t op, const struct file_chunk *c, const cufile_io_event *ev,
                        struct file_result *res)
{
    if (res->status != IXFER_OK || (ev->status == CUFILE_COMPLETE && ev->ret == c->len))
        return;
    res->pair = c->pair;
    if (ev->status == CUFILE_COMPLETE) { /* short: the end of the file, or no room */
        res->status = op == IXFER_OP_WRITE ? IXFER_ERR_NO_SPACE : IXFER_ERR_END_OF_FILE;
        res->err = op == IXFER_OP_WRITE ? ENOSPC : 0;
    } else {
        res->status = IXFER_ERR_BACKEND;
        res->err = (int32_t)ev->ret;
    }
}

/* The chunks all lie on one device: take() ends a batch where the device
 * changes, since only one context is bound for it. */
void ixfer_gds_batch(struct file_worker *w, uint32_t op, const ixfer_file_pair *pairs,
                     const struct file_chunk *chunks, uint32_t n, uint32_t batch_max,
                     struct file_result *res)
{
    const ixfer_file_pair *first = &pairs[chunks[0].pair];
    res->pair = chunks[0].pair;
    if ((res->status = ixfer_cuda_bind(first->dev)) != IXFER_OK)
        return;
    if (!w->batch) {
        cufile_error e = cf.batch_setup(&w->batch, batch_max);
        if (e.err) {
            w->batch = NULL;
            res->status = IXFER_ERR_BACKEND;
            res->err = e.err;
            return;
        }
    }
    cufile_io_params io[n];
    cufile_io_event ev[n];
    for (uint32_t i = 0; i < n; i++) {
        const ixfer_file_pair *p = &pairs[chunks[i].pair];
        io[i] = (cufile_io_params){
            .mode = CUFILE_BATCH,
            .u.batch = {(void *)(uintptr_t)p->mem_base,
                        (off_t)(p->file_offset + chunks[i].offset),
                        (off_t)(p->mem_addr - p->mem_base + chunks[i].offset), chunks[i].len},
            .fh = p->file->cufile,
            .opcode = op == IXFER_OP_WRITE ? CUFILE_WRITE : CUFILE_READ,
            .cookie = (void *)(uintptr_t)i,
        };
    }
    cufile_error e = cf.batch_submit(w->batch, n, io, 0);
    if (e.err) {
        res->status = IXFER_ERR_BACKEND;
        res->err = e.err;
        return;
    }
    /* Wait in cuFile for all of them (a blocking call in this worker, never a
     * spin: the timeout only bounds each wait). The request is reported only
     * once every entry is final: until then the DMA of an entry may still be
     * writing into the caller's memory (or reading from it). */
    uint32_t done = 0, failed_polls = 0;
    int status_failed = 0;
    while (done < n) {
        unsigned nr = n - done;
        struct timespec timeout = {1, 0};
        e = cf.batch_status(w->batch, nr, &nr, ev, &timeout);
        if (e.err) {
            if (res->status == IXFER_OK) {
                res->status = IXFER_ERR_BACKEND;
                res->err = e.err;
            }
            /* Stop what is still running, then keep asking for the entries'
             * final status: cancel makes them final sooner, and a status error
             * may pass. */
            if (!status_failed && cf.batch_cancel)
                cf.batch_cancel(w->batch);
            status_failed = 1;
            if (++failed_polls == STATUS_RETRIES)
                break;
            nanosleep(&(struct timespec){0, STATUS_RETRY_NS}, NULL);
            continue;
        }
        failed_polls = 0;
        for (unsigned i = 0; i < nr; i++) {
            uint32_t k = (uint32_t)(uintptr_t)ev[i].cookie;
            if (ev[i].status == CUFILE_WAITING || ev[i].status == CUFILE_PENDING)
                continue; /* not final: asked for again */
            done++;
            batch_entry(op, &chunks[k], &ev[i], res);
        }
    }
    /* After a status error the handle is not trusted again: a fresh one for
     * the next batch. If cuFile never reported some entries final, whether
     * their DMA stopped is unknowable here; the request still fails (it cannot
     * wait forever), and the README says not to reuse its memory at once. */
    if (status_failed)
        ixfer_gds_worker_free(w);
}

void ixfer_gds_worker_free(struct file_worker *w)
{
    if (w->batch)
        cf.batch_destroy(w->batch);
    w->batch = NULL;
}
