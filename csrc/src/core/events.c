/* A single byte in a pipe says "events are waiting"; the reader drains them
 * all with one call, so the pipe never holds more than one unread byte per
 * drain cycle. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/events.h"

int32_t ixfer_events_init(struct ixfer_events *q, void (*release)(const ixfer_event *ev))
{
    *q = (struct ixfer_events){.rd = -1, .wr = -1, .release = release};
    pthread_mutex_init(&q->lock, NULL);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK))
        return ixfer_fail(IXFER_ERR_BACKEND, "pipe2: %s", strerror(errno));
    q->rd = fds[0];
    q->wr = fds[1];
    return IXFER_OK;
}

void ixfer_events_fini(struct ixfer_events *q)
{
    if (q->release)
        for (uint32_t i = 0; i < q->count; i++)
            q->release(&q->items[i]);
    if (q->rd >= 0)
        close(q->rd);
    if (q->wr >= 0)
        close(q->wr);
    free(q->items);
    pthread_mutex_destroy(&q->lock);
}

void ixfer_events_push(struct ixfer_events *q, const ixfer_event *ev)
{
    pthread_mutex_lock(&q->lock);
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 256;
        ixfer_event *grown = realloc(q->items, (size_t)cap * sizeof *grown);
        if (!grown) {
            /* Nothing sane to do without memory; the event is lost and the
             * transfer's waiter will time out. */
            pthread_mutex_unlock(&q->lock);
            if (q->release)
                q->release(ev);
            return;
        }
        q->items = grown;
        q->cap = cap;
    }
    q->items[q->count++] = *ev;
    int signal = !q->signaled;
    q->signaled = 1;
    pthread_mutex_unlock(&q->lock);
    /* Written unlocked: the reader it wakes goes straight for the lock. A
     * byte that lands after the reader emptied the queue costs one empty
     * drain. */
    if (signal) {
        ssize_t w = write(q->wr, "!", 1);
        (void)w; /* non-blocking; the reader drains whatever accumulated */
    }
}

uint32_t ixfer_events_drain(struct ixfer_events *q, ixfer_event *out, uint32_t max)
{
    pthread_mutex_lock(&q->lock);
    uint32_t n = q->count < max ? q->count : max;
    if (n) {
        memcpy(out, q->items, (size_t)n * sizeof *out);
        q->count -= n;
        memmove(q->items, q->items + n, (size_t)q->count * sizeof *out);
    }
    if (q->count == 0)
        q->signaled = 0;
    pthread_mutex_unlock(&q->lock);
    return n;
}

int32_t ixfer_events_take_fd(struct ixfer_events *q, int32_t *fd)
{
    if (q->rd < 0)
        return ixfer_fail(IXFER_ERR_NOT_ALLOWED, "the event descriptor was already taken");
    *fd = q->rd;
    q->rd = -1;
    return IXFER_OK;
}
