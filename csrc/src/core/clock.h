/* The monotonic clock that waits, spins and staleness are measured with. */
#ifndef IXFER_CORE_CLOCK_H
#define IXFER_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t ixfer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
