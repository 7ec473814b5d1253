/* Waking the progress thread (wake.c): for the threads that hand it work,
 * the submitters (progress.c), the staging copier (staging.c) and the rail
 * workers (rail_worker.c). */
#ifndef IXFER_NET_WAKE_H
#define IXFER_NET_WAKE_H

#include "net/agent.h"

/* Writes the thread's eventfd. */
void ixfer_progress_signal(struct ixfer_agent *a);
/* After queuing work for the thread: counts it, and signals the thread if
 * it sleeps (a thread watching for work sees the count change). */
void ixfer_progress_poke(struct ixfer_agent *a);

#endif
