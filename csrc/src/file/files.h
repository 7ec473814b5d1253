/* Internals of the file engine: files (file.c), the request queue and its
 * worker pool (file_engine.c), and the two I/O paths the workers call:
 * POSIX with device staging (posix_io.c) and cuFile (gds.c). */
#ifndef IXFER_FILE_FILES_H
#define IXFER_FILE_FILES_H

#include <pthread.h>

#include "ixfer.h"

struct ixfer_file {
    int fd;
    int owned;      /* opened by ixfer_file_open: closed with the file */
    uint32_t flags; /* IXFER_FILE_* */
    uint32_t mem_align, offset_align;
    void *cufile;   /* CUfileHandle_t once registered */
};

/* A slice of one pair that a worker moves in one I/O call. */
struct file_chunk {
    uint32_t pair;
    uint64_t offset; /* from the start of the pair */
    uint64_t len;
};

/* The result of a chunk (or a batch of them). */
struct file_result {
    int32_t status; /* IXFER_OK or the failure */
    int32_t err;    /* errno, or cuFile's error, for the message */
    uint32_t pair;  /* the pair that failed */
};

/* What a worker thread keeps between chunks. */
struct file_worker {
    struct ixfer_file_engine *engine;
    pthread_t thread;
    void *stage;      /* host buffer for device memory on the POSIX path */
    int stage_pinned;
    void *batch;      /* CUfileBatchHandle_t, set up on first use */
};

/* posix_io.c: moves chunks with preadv/pwritev (one call for chunks that
 * follow each other in a file), staging device memory through w->stage
 * (chunk_bytes long). */
void ixfer_posix_run(struct file_worker *w, uint32_t op, const ixfer_file_pair *pairs,
                     const struct file_chunk *chunks, uint32_t n, uint64_t chunk_bytes,
                     struct file_result *res);
void ixfer_posix_worker_free(struct file_worker *w);

/* cufile.c: a symbol of the opened cuFile library, or NULL. */
void *ixfer_cufile_sym(const char *name);

/* gds.c */
void ixfer_gds_chunk(uint32_t op, const ixfer_file_pair *pair, const struct file_chunk *c,
                     struct file_result *res);
void ixfer_gds_batch(struct file_worker *w, uint32_t op, const ixfer_file_pair *pairs,
                     const struct file_chunk *chunks, uint32_t n, uint32_t batch_max,
                     struct file_result *res);
void ixfer_gds_worker_free(struct file_worker *w);
void ixfer_gds_file_release(struct ixfer_file *f);

#endif
