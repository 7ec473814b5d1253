/* Rail workers (rail_worker.c): with several rails, each rail gets a thread
 * of its own that alone reads its CQ and posts its transfer ops, so that the
 * provider's copying (tcp moves the bytes in the thread that posts and reads
 * the CQ) runs on several cores and the progress thread only keeps the
 * books. The progress thread keeps owning every request: it hands ops over
 * and takes their completions back. On rail 0 it still posts notification
 * sends and receives and staged pieces itself (the domain is FI_THREAD_SAFE,
 * fabric_info.c: any thread may post to an endpoint while another reads its
 * CQ), then nudges the worker, whose CQ reads drive that traffic on; their
 * completions come back through the worker like the others. */
#ifndef IXFER_NET_RAIL_WORKER_H
#define IXFER_NET_RAIL_WORKER_H

#include <sys/types.h>

#include "net/agent.h"

/* What a worker hands back: the completion of an op (ctx, its context as
 * posted, with fi_err 0 or the error, and len, what a receive got), or (ctx
 * NULL) a peer's write that carried CQ data. */
struct rail_done {
    void *ctx;
    uint64_t data, len;
    int fi_err;
};

/* A peer a rail keeps refusing work for this long while the rail shows room
 * (nothing in flight, or another peer's op posted since: a connection that
 * cannot be made again, tcp's rxm answering -FI_EAGAIN while it retries) is
 * as unreachable on it as one whose ops fail. */
#define RAIL_REFUSE_NS 500000000ull

/* The shm rail's worker (its CQ has no wait fd) polls it only this long after its
 * last op, completion or nudge, then sleeps until woken (or a second has
 * passed). A peer using our rail keeps us warm by nudging more often than
 * this (progress.c). */
#define RAIL_WARM_NS 300000000ull

/* An op as handed to a worker: ctx is its context (what the CQ reports),
 * peer its destination on the rail. */
struct rail_item {
    struct ixfer_list link;
    void *ctx;
    fi_addr_t peer;
};

/* Posts the op whose context is ctx on its rail: 0, or what the provider
 * returned. Called on the worker's thread; reads only what does not change
 * while the op is handed out. */
typedef ssize_t (*rail_issue_fn)(struct ixfer_agent *a, void *ctx);

/* Starts a worker for every rail (none with one rail). */
int32_t ixfer_rail_workers_start(struct ixfer_agent *a, rail_issue_fn issue);
/* Stops and frees them (before the endpoints close); ops they held are
 * dropped with the requests (ixfer_progress_discard). Safe to call twice. */
void ixfer_rail_workers_stop(struct ixfer_agent *a);
/* Progress thread: queues an op for rail's worker. The worker retries
 * -FI_EAGAIN itself; an op it cannot post comes back as a failed completion
 * (FI_ENOTCONN, for the ops queued to that peer, when the rail refused work
 * to it for long with nothing in flight). */
void ixfer_rail_worker_hand(struct ixfer_agent *a, uint32_t rail, struct rail_item *item);
/* Progress thread: it posted to rail's endpoint itself, or a peer said it
 * is about to use the rail (notify.c's nudge); the worker, if any, reads the
 * CQ soon (tcp sends what the post left over from CQ reads) and stays warm. */
void ixfer_rail_worker_nudge(struct ixfer_agent *a, uint32_t rail);
/* Progress thread: the completion of an op handed to rail's worker was taken
 * back (the worker keeps count of its ops in flight). */
void ixfer_rail_worker_settled(struct ixfer_agent *a, uint32_t rail);
/* Progress thread: takes up to max of what rail's worker handed back. */
size_t ixfer_rail_worker_take(struct ixfer_agent *a, uint32_t rail, struct rail_done *out,
                              size_t max);

#endif
