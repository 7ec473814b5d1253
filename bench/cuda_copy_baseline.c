/* The copy ceiling of `ixfer bench` where a side is VRAM: the host<->device
 * copies a staged transfer makes, with no network, as a program would make
 * them without ixfer: cuMemcpyDtoH of the source's device memory into pinned
 * host memory, cuMemcpyHtoD of it into the destination's, one synchronous
 * call per piece, on one thread.
 *   cuda_copy_baseline BYTES INITIATOR_DEV TARGET_DEV
 * A device of -1 is a DRAM side: no copy for it. WRITE's source is the
 * initiator's memory, READ's the target's. Prints "ready", then answers each
 * line on stdin
 *   warmup|run READ|WRITE BLOCK BATCH IOVS ITERS
 * with "ok" (warmup) or "result TOTAL POST_AVG POST_P99 TX_AVG TX_P99" (ns),
 * pieces laid out as lib/bench/layout.ts does; the calls are the transfer:
 * post is 0, tx the iteration.
 * libcuda is opened at run time (no CUDA headers to build it). With
 * IXFER_EMULATE_VRAM=1, as in the shim, device memory is host memory and the
 * copies are memcpy (tests on machines without a GPU). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static struct {
    CUresult (*init)(unsigned);
    CUresult (*device_get)(int *, int);
    CUresult (*primary_ctx_retain)(void **, int);
    CUresult (*ctx_set_current)(void *);
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
} cu;

static int emulate;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda_copy_baseline: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void check(CUresult r, const char *what)
{
    if (r)
        die("%s failed: CUDA error %d", what, r);
}

static void load(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib)
        die("no CUDA driver: %s", dlerror());
#define SYM(field, name)                                                                           \
    if (!(*(void **)&cu.field = dlsym(lib, name)))                                                 \
        die("libcuda.so.1 lacks %s", name);
    SYM(init, "cuInit");
    SYM(device_get, "cuDeviceGet");
    SYM(primary_ctx_retain, "cuDevicePrimaryCtxRetain");
    SYM(ctx_set_current, "cuCtxSetCurrent");
    SYM(mem_alloc, "cuMemAlloc_v2");
    SYM(host_alloc, "cuMemHostAlloc");
    SYM(dtoh, "cuMemcpyDtoH_v2");
    SYM(htod, "cuMemcpyHtoD_v2");
#undef SYM
    check(cu.init(0), "cuInit");
}

/* A side's memory: device memory of dev (its primary context current on
 * return), or NULL for a DRAM side. */
struct side {
    int dev;
    void *ctx;
    CUdeviceptr mem;
};

static void side_open(struct side *s, int dev, uint64_t bytes)
{
    s->dev = dev;
    if (dev < 0)
        return;
    if (emulate) {
        void *p = malloc(bytes);
        if (!p)
            die("out of memory");
        memset(p, 0x5a, bytes);
        s->mem = (CUdeviceptr)(uintptr_t)p;
        return;
    }
    int d;
    check(cu.device_get(&d, dev), "cuDeviceGet");
    check(cu.primary_ctx_retain(&s->ctx, d), "cuDevicePrimaryCtxRetain");
    check(cu.ctx_set_current(s->ctx), "cuCtxSetCurrent");
    check(cu.mem_alloc(&s->mem, bytes), "cuMemAlloc");
}

/* Device to host (to_host) or host to device, one piece. */
static void copy(const struct side *s, int to_host, unsigned char *host, uint64_t off, uint64_t len)
{
    if (emulate) {
        unsigned char *d = (unsigned char *)(uintptr_t)s->mem + off;
        memcpy(to_host ? host + off : d, to_host ? d : host + off, len);
        return;
    }
    /* Two devices: each copy in its own device's context. */
    check(cu.ctx_set_current(s->ctx), "cuCtxSetCurrent");
    check(to_host ? cu.dtoh(host + off, s->mem + off, len) : cu.htod(s->mem + off, host + off, len),
          to_host ? "cuMemcpyDtoH" : "cuMemcpyHtoD");
}

int main(int argc, char **argv)
{
    if (argc != 4)
        die("usage: %s BYTES INITIATOR_DEV TARGET_DEV", argv[0]);
    uint64_t bytes = strtoull(argv[1], NULL, 10);
    const char *e = getenv("IXFER_EMULATE_VRAM");
    emulate = e && !strcmp(e, "1");
    if (!emulate)
        load();
    struct side initiator, target;
    side_open(&initiator, atoi(argv[2]), bytes);
    side_open(&target, atoi(argv[3]), bytes);
    /* Portable: pinned for every device's context. */
    unsigned char *host;
    if (emulate) {
        host = malloc(bytes);
        if (!host)
            die("out of memory");
    } else {
        check(cu.host_alloc((void **)&host, bytes, 1 /* CU_MEMHOSTALLOC_PORTABLE */), "cuMemHostAlloc");
    }
    memset(host, 0xa5, bytes);
    printf("ready\n");
    fflush(stdout);

    char line[256], cmd[16], op[16];
    uint64_t block, batch, iovs, iters;
    while (fgets(line, sizeof line, stdin)) {
        if (!parse_row_command(line, cmd, op, &block, &batch, &iovs, &iters, bytes))
            die("bad command: %s", line);
        int writing = !strcmp(op, "WRITE");
        const struct side *src = writing ? &initiator : &target, *dst = writing ? &target : &initiator;
        uint64_t piece = block / iovs;
        uint64_t *tx = calloc(iters ? iters : 1, sizeof *tx);
        if (!tx)
            die("out of memory");
        uint64_t start = now_ns();
        for (uint64_t it = 0; it < iters; it++) {
            uint64_t t0 = now_ns();
            for (uint64_t b = 0; b < batch; b++)
                for (uint64_t i = 0; i < iovs; i++) {
                    uint64_t off = b * block + i * piece, len = i + 1 == iovs ? block - i * piece : piece;
                    if (src->dev >= 0)
                        copy(src, 1, host, off, len);
                    if (dst->dev >= 0)
                        copy(dst, 0, host, off, len);
                }
            tx[it] = now_ns() - t0;
        }
        uint64_t total = now_ns() - start;
        if (!strcmp(cmd, "warmup"))
            printf("ok\n");
        else
            printf("result %" PRIu64 " 0 0 %" PRIu64 " %" PRIu64 "\n", total, avg(tx, iters), p99(tx, iters));
        fflush(stdout);
        free(tx);
    }
    return 0;
}
