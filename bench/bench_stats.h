/* Timing and the statistics of nixlbench's columns, shared by the C
 * baselines of `ixfer bench` (fi_rma_baseline.c, file_baseline.c). */
#ifndef IXFER_BENCH_STATS_H
#define IXFER_BENCH_STATS_H

#include <stdint.h>
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

#endif
