/* The lifecycle of a transfer request, shared by the network progress thread
 * and the file engine: the only place that decides what status a request ends
 * with and when it is reported.
 *
 * An engine embeds struct ixfer_request first in its own request (which adds
 * the pairs and whatever the engine needs) and keeps two lists: live (every
 * request not yet reported, for cancel by id and for teardown) and a queue of
 * requests with parts still to hand out (provider ops, worker chunks).
 *
 *   queued --hand out parts--> handed out --parts finish--> settled --> reported
 *
 * A request is handed out when every pair was given to the engine's backend,
 * or it failed, or it was canceled (nothing more is handed out then). It is
 * settled when it is handed out, off the queue, and no part is busy; the
 * engine may hold it back further (the network engine sends an attached
 * notification first), then ixfer_request_end() reports and frees it. Each
 * engine serializes access to its requests itself (a thread, or a lock). */
#ifndef IXFER_CORE_REQUEST_H
#define IXFER_CORE_REQUEST_H

#include "core/events.h"
#include "core/list.h"

struct ixfer_request {
    struct ixfer_list live;  /* on the engine's list of requests not yet reported */
    struct ixfer_list queue; /* on the engine's queue while parts are left to hand out */
    uint64_t user_id;
    uint32_t count;          /* pairs */
    uint32_t next_pair;      /* first pair not fully handed out */
    uint64_t next_offset;    /* bytes of next_pair already handed out */
    uint32_t busy;           /* parts handed out and not finished */
    int32_t status;          /* first failure, or IXFER_OK */
    int32_t err;             /* its provider error or errno, for the message */
    uint32_t failed_pair;    /* the pair it failed on, where the engine knows */
    int32_t cancel_status;   /* nonzero once canceled: the status to report */
    int reported;            /* ixfer_request_report ran: ending it only frees it */
};

/* Zeroes r (unlinked, nothing handed out) for user_id with count pairs. */
void ixfer_request_init(struct ixfer_request *r, uint64_t user_id, uint32_t count);

/* Records the first failure; later ones (and IXFER_OK) are ignored. */
void ixfer_request_fail(struct ixfer_request *r, int32_t status, int32_t err, uint32_t pair);

/* A cancel status that is not a failure is reported as IXFER_ERR_CANCELED. */
static inline int32_t ixfer_cancel_status(int32_t status)
{
    return status < 0 ? status : IXFER_ERR_CANCELED;
}

/* Stops handing out r; the first cancel wins. Returns whether this one took. */
int ixfer_request_cancel(struct ixfer_request *r, int32_t status);

/* The live request with user_id, or NULL. */
struct ixfer_request *ixfer_request_find(struct ixfer_list *live, uint64_t user_id);

static inline int ixfer_request_handed_out(const struct ixfer_request *r)
{
    return r->next_pair >= r->count || r->status != IXFER_OK || r->cancel_status;
}

static inline int ixfer_request_settled(const struct ixfer_request *r)
{
    return !r->busy && !ixfer_list_linked(&r->queue) && ixfer_request_handed_out(r);
}

/* The status r ends with as things stand: its failure, else its cancel if
 * that left pairs undone, else IXFER_OK. */
int32_t ixfer_request_outcome(const struct ixfer_request *r);

/* Reports r on events (IXFER_EVENT_XFER_DONE with its outcome, error and
 * failed pair), takes it off its live list and frees it: r must be the start
 * of its allocation. */
void ixfer_request_end(struct ixfer_events *events, struct ixfer_request *r);

/* Reports r's outcome now, while parts of it are still out (to a peer that
 * will never answer); r stays live until ixfer_request_end frees it. */
void ixfer_request_report(struct ixfer_events *events, struct ixfer_request *r);

#endif
