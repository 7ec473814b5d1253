/* The event queue between the progress thread and JavaScript. A single byte in
 * a pipe says "events are waiting"; the reader drains them all with one call,
 * so the pipe never holds more than one unread byte per drain cycle. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

void ixfer_push_event(struct ixfer_agent *a, const ixfer_event *ev)
{
    pthread_mutex_lock(&a->event_lock);
    if (a->event_count == a->event_cap) {
        uint32_t cap = a->event_cap ? a->event_cap * 2 : 256;
        ixfer_event *grown = realloc(a->events, (size_t)cap * sizeof *grown);
        if (!grown) {
            /* Nothing sane to do without memory; the event is lost and the
             * transfer's waiter will time out. */
            pthread_mutex_unlock(&a->event_lock);
            if (ev->type == IXFER_EVENT_NOTIF)
                ixfer_notif_free((ixfer_notification *)(uintptr_t)ev->user_id);
            return;
        }
        a->events = grown;
        a->event_cap = cap;
    }
    a->events[a->event_count++] = *ev;
    if (!a->signaled) {
        a->signaled = 1;
        ssize_t w = write(a->event_wr, "!", 1);
        (void)w; /* the pipe is non-blocking and holds at most a byte */
    }
    pthread_mutex_unlock(&a->event_lock);
}

uint32_t ixfer_agent_drain(ixfer_agent *a, ixfer_event *out, uint32_t max)
{
    if (!a || !out)
        return 0;
    pthread_mutex_lock(&a->event_lock);
    uint32_t n = a->event_count < max ? a->event_count : max;
    if (n) {
        memcpy(out, a->events, (size_t)n * sizeof *out);
        a->event_count -= n;
        memmove(a->events, a->events + n, (size_t)a->event_count * sizeof *out);
    }
    if (a->event_count == 0)
        a->signaled = 0;
    pthread_mutex_unlock(&a->event_lock);
    return n;
}
