/* Waking the progress thread (wake.c): for the threads that hand it work,
 * the submitters (progress.c), the staging copier (staging.c) and the rail
 * workers (rail_worker.c); and the sleep both kinds of thread wake from. */
#ifndef IXFER_NET_WAKE_H
#define IXFER_NET_WAKE_H

#include "net/agent.h"

/* Writes the thread's eventfd. */
void ixfer_progress_signal(struct ixfer_agent *a);
/* After queuing work for the thread: counts it, and signals the thread if
 * it sleeps (a thread watching for work sees the count change). */
void ixfer_progress_poke(struct ixfer_agent *a);

/* A sleeping thread's wait (the progress thread's, a rail worker's): until
 * wake_fd or, where epfd >= 0, an fd of that epoll set (wake_fd among them)
 * is readable, or timeout_ns passes (whole ms with epfd: the provider's fds
 * are waited on only at that grain). Returns whether wake_fd fired (its
 * count is left to read). */
int ixfer_sleep_on(int epfd, int wake_fd, uint64_t timeout_ns);

#endif
