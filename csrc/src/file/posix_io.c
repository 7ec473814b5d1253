/* The POSIX path of the file engine: pread/pwrite straight into host memory,
 * and through a per-worker host buffer for device memory (cuMemcpy staging),
 * which is how VRAM reaches files when cuFile is missing or refuses them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/error.h"
#include "file/files.h"
#include "gpu/cuda.h"

#define MAX_VEC 64 /* at most the file engine's MAX_TAKE chunks per call */

/* Moves the bytes of iov[0..cnt) between memory and the file from off,
 * however many calls that takes (preadv/pwritev: several descriptors that are
 * contiguous in the file cost one system call). Returns how many bytes moved;
 * on failure res says why. A read that meets the end of the file fails: the
 * bytes asked for do not exist, and nothing half-read is reported as done. */
static uint64_t rw_vec(int fd, uint32_t op, struct iovec *iov, int cnt, uint64_t off,
                       struct file_result *res)
{
    uint64_t moved = 0;
    while (cnt) {
        ssize_t got = op == IXFER_OP_WRITE ? pwritev(fd, iov, cnt, (off_t)off)
                                           : preadv(fd, iov, cnt, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            res->status = ixfer_errno_status(errno);
            res->err = errno;
            return moved;
        }
        if (got == 0) {
            /* pwrite makes no progress only when the device has no room. */
            res->status = op == IXFER_OP_WRITE ? IXFER_ERR_NO_SPACE : IXFER_ERR_END_OF_FILE;
            res->err = op == IXFER_OP_WRITE ? ENOSPC : 0;
            return moved;
        }
        moved += (uint64_t)got;
        off += (uint64_t)got;
        for (size_t left = (size_t)got; left;) {
            size_t step = left < iov->iov_len ? left : iov->iov_len;
            iov->iov_base = (uint8_t *)iov->iov_base + step;
            iov->iov_len -= step;
            left -= step;
            if (iov->iov_len == 0)
                iov++, cnt--;
        }
        while (cnt && iov->iov_len == 0)
            iov++, cnt--;
    }
    return moved;
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

/* One chunk of device memory, through the worker's staging buffer. */
static void staged_chunk(struct file_worker *w, uint32_t op, const ixfer_file_pair *p,
                         const struct file_chunk *c, uint64_t chunk_bytes, struct file_result *res)
{
    uint64_t mem = p->mem_addr + c->offset;
    int32_t rc = ixfer_cuda_bind(p->dev); /* first: pinning the stage needs the context */
    if (rc == IXFER_OK)
        rc = ensure_stage(w, chunk_bytes);
    if (rc == IXFER_OK && op == IXFER_OP_WRITE)
        rc = ixfer_cuda_dtoh(w->stage, mem, c->len);
    if (rc != IXFER_OK) {
        res->status = rc;
        return;
    }
    struct iovec iov = {w->stage, (size_t)c->len};
    rw_vec(p->file->fd, op, &iov, 1, p->file_offset + c->offset, res);
    if (res->status == IXFER_OK && op == IXFER_OP_READ)
        res->status = ixfer_cuda_htod(mem, w->stage, c->len);
}

void ixfer_posix_run(struct file_worker *w, uint32_t op, const ixfer_file_pair *pairs,
                     const struct file_chunk *chunks, uint32_t n, uint64_t chunk_bytes,
                     struct file_result *res)
{
    for (uint32_t i = 0; i < n && res->status == IXFER_OK;) {
        const ixfer_file_pair *p = &pairs[chunks[i].pair];
        res->pair = chunks[i].pair;
        if (p->dev >= 0) {
            staged_chunk(w, op, p, &chunks[i++], chunk_bytes, res);
            continue;
        }
        /* The run of host chunks that continue each other in the same file. */
        struct iovec iov[MAX_VEC];
        uint64_t lens[MAX_VEC];
        uint64_t off = p->file_offset + chunks[i].offset, end = off;
        int cnt = 0;
        for (; i < n && cnt < MAX_VEC; i++, cnt++) {
            const ixfer_file_pair *q = &pairs[chunks[i].pair];
            if (q->dev >= 0 || q->file != p->file || q->file_offset + chunks[i].offset != end)
                break;
            iov[cnt] = (struct iovec){(void *)(uintptr_t)(q->mem_addr + chunks[i].offset),
                                      (size_t)chunks[i].len};
            lens[cnt] = chunks[i].len;
            end += chunks[i].len;
        }
        uint64_t moved = rw_vec(p->file->fd, op, iov, cnt, off, res);
        if (res->status != IXFER_OK) { /* name the pair where it stopped */
            uint32_t k = i - (uint32_t)cnt;
            for (int j = 0; j < cnt && moved >= lens[j]; j++, k++)
                moved -= lens[j];
            res->pair = chunks[k < i ? k : i - 1].pair;
        }
    }
}

void ixfer_posix_worker_free(struct file_worker *w)
{
    if (w->stage_pinned)
        ixfer_cuda_unpin(w->stage);
    free(w->stage);
    w->stage = NULL;
}
