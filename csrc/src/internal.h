/* Shared internals of the shim: error reporting and the dynamically loaded
 * library tables. Not part of the ABI. */
#ifndef IXFER_INTERNAL_H
#define IXFER_INTERNAL_H

#include <time.h>

#include "ixfer.h"

/* Records a printf-style message for ixfer_last_error() and returns code. */
int32_t ixfer_fail(int32_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ixfer_clear_error(void);

/* How long a thread that just worked watches for more before it sleeps
 * (IXFER_SPIN_US; by default 50 us with 4 or more CPUs, else 0). */
uint64_t ixfer_spin_ns(void);

static inline uint64_t ixfer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
