#define _GNU_SOURCE /* ppoll */
#include <poll.h>
#include <sys/epoll.h>
#include <time.h>
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

int ixfer_sleep_on(int epfd, int wake_fd, uint64_t timeout_ns)
{
    int woken = 0;
    if (epfd >= 0) { /* wake_fd is in the set */
        struct epoll_event ev[2];
        int n = epoll_wait(epfd, ev, 2, (int)(timeout_ns / 1000000));
        for (int i = 0; i < n; i++)
            woken |= ev[i].data.fd == wake_fd;
    } else {
        struct pollfd p = {.fd = wake_fd, .events = POLLIN};
        struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000ull),
                              .tv_nsec = (long)(timeout_ns % 1000000000ull)};
        woken = ppoll(&p, 1, &ts, NULL) > 0;
    }
    return woken;
}
