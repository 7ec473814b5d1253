/* Device memory over providers without FI_HMEM (staging.c): transfers that
 * touch staged device memory, on either side, move in pieces through pinned,
 * registered host bounce buffers, and this agent serves its peers' requests
 * to move bytes in and out of its own staged device memory. Runs on the
 * progress thread, but for the copier thread inside staging.c and the
 * statistics. */
#ifndef IXFER_NET_STAGING_H
#define IXFER_NET_STAGING_H

#include "net/progress.h"

/* Told when a piece of r finished (r->base.busy was decremented, a failure
 * recorded): the progress thread decides whether r is done. */
typedef void ixfer_piece_done_fn(struct ixfer_agent *a, struct xfer_request *r);

/* post_some for a staged request: hands out pieces while bounce buffers and
 * the window of requests to peers last. Returns -FI_EAGAIN when it had to
 * stop for them or for the provider, 0 when r needs no more handing out. */
int ixfer_staging_post_some(struct ixfer_agent *a, struct xfer_request *r,
                            ixfer_piece_done_fn *done);
/* One pass: finished device copies, posts that were refused, peers' requests
 * waiting for a bounce buffer, pieces of canceled requests or gone peers.
 * Returns whether something waits for the provider to take it. */
int ixfer_staging_pass(struct ixfer_agent *a);
/* Completion of an RMA op this module posted (OP_KIND_STAGE). */
void ixfer_staging_completion(struct ixfer_agent *a, struct op_ctx *ctx, int fi_err);
/* A control message from a peer (notify.c): a request to serve, or a reply. */
void ixfer_staging_message(struct ixfer_agent *a, const uint8_t *msg, uint64_t len);
/* Joins the copier thread (the progress thread has stopped: nothing new
 * comes, and the copier must not wake a thread whose fds are closing). */
void ixfer_staging_stop(struct ixfer_agent *a);
/* Teardown, after the endpoint closed: stops the copier, frees the pool. */
void ixfer_staging_fini(struct ixfer_agent *a);

#endif
