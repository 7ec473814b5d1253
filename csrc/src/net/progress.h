/* The progress thread (progress.c) and the work handed to it: transfer
 * requests and submissions, built by the ABI calls in submit.c. */
#ifndef IXFER_NET_PROGRESS_H
#define IXFER_NET_PROGRESS_H

#include "core/request.h"
#include "net/agent.h"
#include "net/ops.h"
#include "net/rail_worker.h"

struct xfer_request;
struct notif_job;
struct net_peer;

struct xfer_op {
    struct op_ctx ctx;
    struct xfer_request *req;
    uint32_t rail;
    fi_addr_t addr; /* the peer on rail, fixed while the op is out */
    /* Its range of the request's pairs, to post it again on another rail
     * when its rail breaks: from (pair, off), len bytes, ending before
     * (next_pair, next_off). */
    uint32_t pair, next_pair;
    uint64_t off, next_off, len;
    int deliver;               /* a WRITE asks FI_DELIVERY_COMPLETE (issue_op) */
    int again;                 /* posted again: carries no tag (notify.c) */
    struct xfer_op *redo_next; /* on the request's redo list */
    struct rail_item handed;   /* while its rail's worker has it (rail_worker.h) */
};

/* A queued transfer, owned by the progress thread once submitted. base.busy
 * counts provider ops posted and not yet completed. */
struct xfer_request {
    struct ixfer_request base; /* first: ixfer_request_end() frees the allocation */
    struct xfer_op *ops;  /* enough for every provider op; in the same allocation */
    uint32_t ops_used;
    uint32_t op;
    fi_addr_t peer;
    struct net_peer *np;     /* its record (peer.h), NULL if unknown */
    struct notif_job *notif; /* attached notification, or NULL */
    enum { NOTIF_NONE, NOTIF_WAITING, NOTIF_SENDING } notif_state; /* NONE once sent */
    int tagged;              /* WRITE ops carry tag as remote CQ data */
    int release;             /* an op was posted again: the receiver needs a release */
    int staged;              /* a pair is staged device memory: staging.c moves it in pieces */
    int net;                 /* never the shm rail (IXFER_POST_NETWORK, or device memory) */
    uint64_t tag;
    uint64_t bytes;          /* of all pairs: decides striping */
    uint32_t last_pair;      /* the last pair with bytes (count when none) */
    struct xfer_op *redo;    /* ops a broken rail gave back, to post again */
    ixfer_iov_pair pairs[];
};

struct submission {
    struct ixfer_list link; /* on the agent's submissions */
    enum { SUBMIT_POST, SUBMIT_CANCEL, SUBMIT_REMOVE_PEER, SUBMIT_NOTIFY, SUBMIT_FORGET,
           SUBMIT_ADD_PEER, SUBMIT_SHM_PEER } kind;
    struct xfer_request *req; /* SUBMIT_POST */
    struct notif_job *job;    /* SUBMIT_NOTIFY */
    char *name;               /* SUBMIT_FORGET */
    uint64_t user_id;         /* SUBMIT_CANCEL */
    fi_addr_t peer;           /* SUBMIT_REMOVE_PEER, SUBMIT_ADD_PEER, SUBMIT_SHM_PEER */
    fi_addr_t shm_fa;         /* SUBMIT_SHM_PEER */
    uint64_t addr_len;        /* SUBMIT_ADD_PEER: rail 0's address, after the submission, */
    uint32_t nrails;          /* ... then the peer's fi_addr_t on each rail, at rail_fa_offset */
    int *done;                /* SUBMIT_REMOVE_PEER: set under submit_lock */
    int32_t cancel_status;
    uint8_t addr[];
};

/* Where SUBMIT_ADD_PEER's rail addresses start in addr[]. */
static inline size_t rail_fa_offset(uint64_t addr_len)
{
    return (size_t)((addr_len + 7) & ~7ull);
}

/* Queues a submission and wakes the progress thread. Any thread. */
void ixfer_submit(struct ixfer_agent *agent, struct submission *s);

/* Posts r on the caller's thread when the progress thread sleeps and
 * nothing submitted earlier waits: returns
 * whether r was taken; if not, the caller submits it. */
int ixfer_progress_try_post(struct ixfer_agent *agent, struct xfer_request *r);

/* Opens a rail's CQ on its domain, with a wait fd where the provider gives a
 * usable one (rail->wait_fd; the thread polls unless every rail has one). */
int32_t ixfer_progress_open_cq(struct net_rail *rail);
int32_t ixfer_progress_start(struct ixfer_agent *agent);
/* Stops and joins the thread; what it owned stays for _discard. */
void ixfer_progress_stop(struct ixfer_agent *agent);
/* Frees submissions and requests left at teardown, after the endpoint closed:
 * no event is pushed for them. */
void ixfer_progress_discard(struct ixfer_agent *agent);

#endif
