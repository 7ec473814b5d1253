/* The event queue between the shim's threads (the network progress thread,
 * file-engine workers) and JavaScript. It knows events only as values: what
 * an event owns (an incoming notification) is freed, when the event is lost,
 * by the release callback its owner gave. */
#ifndef IXFER_CORE_EVENTS_H
#define IXFER_CORE_EVENTS_H

#include <pthread.h>

#include "ixfer.h"

struct ixfer_events {
    pthread_mutex_t lock;
    ixfer_event *items;
    uint32_t count, cap;
    int signaled; /* a wake-up byte is in the pipe and not yet drained */
    int rd, wr;   /* the pipe; rd is -1 once taken by the caller */
    void (*release)(const ixfer_event *ev);
};

/* Creates the wake-up pipe. release (may be NULL) frees what an event that is
 * never drained owns. On failure q is still safe to pass to _fini. */
int32_t ixfer_events_init(struct ixfer_events *q, void (*release)(const ixfer_event *ev));
/* Releases the events nobody drained and closes what is left of the pipe. */
void ixfer_events_fini(struct ixfer_events *q);
/* Queues ev (copied) and makes the pipe readable. Any thread. */
void ixfer_events_push(struct ixfer_events *q, const ixfer_event *ev);
uint32_t ixfer_events_drain(struct ixfer_events *q, ixfer_event *out, uint32_t max);
/* Hands the pipe's read end to the caller, once. */
int32_t ixfer_events_take_fd(struct ixfer_events *q, int32_t *fd);

/* Every agent begins with its event queue (net/agent.h asserts it), so that
 * an engine that only reports completions, like the file engine, reaches the
 * queue from the public ixfer_agent handle without knowing the network agent. */
static inline struct ixfer_events *ixfer_agent_events(ixfer_agent *agent)
{
    return (struct ixfer_events *)(void *)agent;
}

#endif
