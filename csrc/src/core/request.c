#include <stdlib.h>

#include "core/request.h"

void ixfer_request_init(struct ixfer_request *r, uint64_t user_id, uint32_t count)
{
    *r = (struct ixfer_request){.user_id = user_id, .count = count};
}

void ixfer_request_fail(struct ixfer_request *r, int32_t status, int32_t err, uint32_t pair)
{
    if (status == IXFER_OK || r->status != IXFER_OK)
        return;
    r->status = status;
    r->err = err;
    r->failed_pair = pair;
}

int ixfer_request_cancel(struct ixfer_request *r, int32_t status)
{
    if (r->cancel_status)
        return 0;
    r->cancel_status = ixfer_cancel_status(status);
    return 1;
}

struct ixfer_request *ixfer_request_find(struct ixfer_list *live, uint64_t user_id)
{
    IXFER_LIST_FOR_EACH(node, live) {
        struct ixfer_request *r = ixfer_container_of(node, struct ixfer_request, live);
        if (r->user_id == user_id)
            return r;
    }
    return NULL;
}

int32_t ixfer_request_outcome(const struct ixfer_request *r)
{
    if (r->status == IXFER_OK && r->cancel_status && r->next_pair < r->count)
        return r->cancel_status;
    return r->status;
}

void ixfer_request_report(struct ixfer_events *events, struct ixfer_request *r)
{
    if (r->reported)
        return;
    r->reported = 1;
    /* err is set only with a failure: a request that was only canceled has none. */
    ixfer_event ev = {.user_id = r->user_id, .type = IXFER_EVENT_XFER_DONE,
                      .status = ixfer_request_outcome(r), .fi_errno = r->err,
                      .reserved = r->failed_pair};
    ixfer_events_push(events, &ev);
}

void ixfer_request_end(struct ixfer_events *events, struct ixfer_request *r)
{
    ixfer_request_report(events, r);
    ixfer_list_remove(&r->live);
    free(r);
}
