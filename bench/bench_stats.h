/* Timing and the statistics of nixlbench's columns, shared by the C
 * baselines of `ixfer bench` (fi_rma_baseline.c, file_baseline.c,
 * cuda_copy_baseline.c), and the commands they read. */
#ifndef IXFER_BENCH_STATS_H
#define IXFER_BENCH_STATS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static inline uint64_t avg(const uint64_t *v, size_t n)
{
    long double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return n ? (uint64_t)(s / n) : 0;
}

/* nixlbench's p99: the sorted sample at index floor(n * 0.99). */
static inline uint64_t p99(uint64_t *v, size_t n)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(n * 0.99);
    return v[i < n ? i : n - 1];
}

/* One row of the orchestrator's (lib/bench/c-baseline.ts) commands on stdin,
 * "<cmd> <op> <block> <batch> <iovs> <iterations>", into cmd and op (16
 * bytes each) and the numbers: 0 when it is not one, or its blocks do not
 * fit capacity bytes. */
static inline int parse_row_command(const char *line, char *cmd, char *op, uint64_t *block,
                                    uint64_t *batch, uint64_t *iovs, uint64_t *iters,
                                    uint64_t capacity)
{
    return sscanf(line, "%15s %15s %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, cmd, op, block,
                  batch, iovs, iters) == 6 &&
           *block && *batch && *iovs && *iovs <= *block && *block * *batch <= capacity;
}

#endif
