/* Notifications (notify.c): fragmenting, sending, receiving, reassembling,
 * and holding a message back until the data it announces has landed. Every
 * function but ixfer_notif_job_new/_free and ixfer_notify_release_event runs
 * on the progress thread (or before it starts, or after it stopped); the
 * public ixfer_notif_* calls in notify.c read counters or free what was
 * delivered. Knows nothing of transfer requests: an attached notification
 * reports back through the callback it was attached with. */
#ifndef IXFER_NET_NOTIFY_H
#define IXFER_NET_NOTIFY_H

#include "net/agent.h"
#include "net/ops.h"

/* The wire format (notify.c describes the header): also used by the fuzzer. */
#define NOTIF_MAGIC 0x464e5849u /* "IXNF" */
#define NOTIF_VERSION 1
/* tcp;ofi_rxm sends up to 16 KiB eagerly; a larger message costs a rendezvous. */
#define FRAG_BYTES 16384
#define HDR_BYTES 64

/* A notification to send. Built on the caller's thread, then owned by the
 * progress thread. A standalone one (ixfer_notify) is ordered by seq and
 * reports IXFER_EVENT_XFER_DONE with user_id once sent. */
struct notif_job *ixfer_notif_job_new(fi_addr_t peer, const uint8_t *data, uint64_t len,
                                      uint64_t seq, uint64_t user_id);
void ixfer_notif_job_free(struct notif_job *job);

/* Told once an attached job was sent, or failed (status), instead of an event. */
typedef void ixfer_notif_sent_fn(struct ixfer_agent *agent, void *ctx, int32_t status,
                                 int32_t fi_errno);
/* Makes job a transfer's notification: unordered, reported through sent(ctx). */
void ixfer_notif_job_attach(struct notif_job *job, ixfer_notif_sent_fn *sent, void *ctx);
/* Makes an attached job a control message: one fragment, handed to the
 * receiving agent's on_control instead of its application. */
void ixfer_notif_job_control(struct notif_job *job);
/* A job (to attach) telling peer that the writes carrying tag are all in
 * place: the notification of tag is delivered whatever it counted. NULL when
 * out of memory. */
struct notif_job *ixfer_notif_job_release(fi_addr_t peer, uint64_t tag);
/* Sends peer a one-byte control message: its receive completion keeps a
 * polling peer looking often, and it wakes the peer's shm rail worker. */
void ixfer_notify_nudge(struct ixfer_agent *a, fi_addr_t peer);
/* Sets what the receiver must count first: expected writes carrying tag. */
void ixfer_notif_job_expect(struct notif_job *job, uint64_t tag, uint64_t expected);

/* Called from ixfer_agent_create after the endpoint is enabled (posts the
 * receive pool) and from agent teardown after the endpoint is closed. */
int32_t ixfer_notify_init(struct ixfer_agent *a, const ixfer_agent_config *cfg);
void ixfer_notify_fini(struct ixfer_agent *a);
/* The agent's event-queue release callback: frees an incoming notification
 * whose IXFER_EVENT_NOTIF event is never drained. */
void ixfer_notify_release_event(const ixfer_event *ev);

/* Queues a job for sending, in order. */
void ixfer_notify_enqueue(struct ixfer_agent *a, struct notif_job *job);
/* One pass: send fragments, repost receives, drop stale messages. Returns
 * whether sending had to stop for lack of provider resources. */
int ixfer_notify_pass(struct ixfer_agent *a);
/* Completion of a send or receive this module posted. */
void ixfer_notify_completion(struct ixfer_agent *a, struct op_ctx *ctx, uint64_t len, int fi_err);
/* A remote write carrying CQ data arrived. */
void ixfer_notify_remote_write(struct ixfer_agent *a, uint64_t data);
/* Standalone job user_id, if still queued: stop sending. */
void ixfer_notify_cancel(struct ixfer_agent *a, uint64_t user_id, int32_t status);
void ixfer_notify_remove_peer(struct ixfer_agent *a, fi_addr_t peer);
void ixfer_notify_forget(struct ixfer_agent *a, const char *name);
/* A fresh tag for the WRITE ops of an attached notification. */
uint64_t ixfer_notify_next_tag(struct ixfer_agent *a);

#endif
