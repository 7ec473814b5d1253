/* The POSIX path of the file engine: pread/pwrite straight into host memory,
 * and through a per-worker host buffer for device memory (cuMemcpy staging),
 * which is how VRAM reaches files when cuFile is missing or refuses them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "cuda_internal.h"
#include "files.h"
#include "internal.h"

/* Moves len bytes between buf and the file at off, however many calls that
 * takes. A read that meets the end of the file fails: the bytes asked for do
 * not exist, and nothing half-read is reported as done. */
static void rw_full(int fd, uint32_t op, uint8_t *buf, uint64_t len, uint64_t off,
                    struct file_result *res)
{
    while (len) {
        size_t n = len < (1ull << 30) ? (size_t)len : (size_t)1 << 30;
        ssize_t got = op == IXFER_OP_WRITE ? pwrite(fd, buf, n, (off_t)off)
                                           : pread(fd, buf, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            res->status = ixfer_file_errno_status(errno);
            res->err = errno;
            return;
        }
        if (got == 0) {
            /* pwrite makes no progress only when the device has no room. */
            res->status = op == IXFER_OP_WRITE ? IXFER_ERR_NO_SPACE : IXFER_ERR_END_OF_FILE;
            res->err = op == IXFER_OP_WRITE ? ENOSPC : 0;
            return;
        }
        buf += got;
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
}

static int32_t ensure_stage(struct file_worker *w, uint64_t bytes)
{
    if (w->stage)
        return IXFER_OK;
    /* Page-aligned, so that O_DIRECT files accept it. */
    if (posix_memalign(&w->stage, 4096, (size_t)bytes)) {
        w->stage = NULL;
        return ixfer_fail(IXFER_ERR_BACKEND, "cannot allocate a staging buffer");
    }
    w->stage_pinned = ixfer_cuda_pin(w->stage, bytes);
    return IXFER_OK;
}

void ixfer_posix_chunk(struct file_worker *w, uint32_t op, const ixfer_file_pair *p,
                       const struct file_chunk *c, uint64_t chunk_bytes, struct file_result *res)
{
    res->pair = c->pair;
    uint64_t off = p->file_offset + c->offset;
    uint64_t mem = p->mem_addr + c->offset;
    if (p->dev < 0) {
        rw_full(p->file->fd, op, (uint8_t *)(uintptr_t)mem, c->len, off, res);
        return;
    }
    /* Chunks are at most chunk_bytes: one staging copy each. */
    int32_t rc = ensure_stage(w, chunk_bytes);
    if (rc == IXFER_OK)
        rc = ixfer_cuda_bind(p->dev);
    if (rc == IXFER_OK && op == IXFER_OP_WRITE)
        rc = ixfer_cuda_dtoh(w->stage, mem, c->len);
    if (rc != IXFER_OK) {
        res->status = rc;
        return;
    }
    rw_full(p->file->fd, op, w->stage, c->len, off, res);
    if (res->status == IXFER_OK && op == IXFER_OP_READ)
        res->status = ixfer_cuda_htod(mem, w->stage, c->len);
}

void ixfer_posix_worker_free(struct file_worker *w)
{
    if (w->stage_pinned)
        ixfer_cuda_unpin(w->stage);
    free(w->stage);
    w->stage = NULL;
}
