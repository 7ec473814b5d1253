/* Settings read once from the environment and the machine, shared by the
 * network progress thread and the file engine's workers (hence in core). */
#ifndef IXFER_CORE_TUNING_H
#define IXFER_CORE_TUNING_H

#include <stdint.h>

/* How long a thread that just worked watches for more before it sleeps
 * (IXFER_SPIN_US; by default 50 us with 4 or more CPUs, else 0). */
uint64_t ixfer_spin_ns(void);

/* The longest idle sleep between two CQ reads of a thread that polls
 * (IXFER_POLL_MAX_US, default 1000 us). */
uint64_t ixfer_poll_max_ns(void);

/* The largest transfer (bytes) a caller may post on its own thread when the
 * network progress thread is idle (IXFER_INLINE_POST_MAX, default 65536;
 * 0: never). */
uint64_t ixfer_inline_post_max(void);

#endif
