#include <unistd.h>

#include "net/wake.h"

void ixfer_progress_signal(struct ixfer_agent *a)
{
    uint64_t one = 1;
    /* Fails only when the counter is saturated, and it is readable then. */
    ssize_t w = write(a->wake_fd, &one, sizeof one);
    (void)w;
}

void ixfer_progress_poke(struct ixfer_agent *a)
{
    /* Counted before the flag is read: see wait_cq() in progress.c (all seq_cst). */
    atomic_fetch_add(&a->submitted, 1);
    if (atomic_load(&a->sleeping))
        ixfer_progress_signal(a);
}
