/* Agent internals shared by agent.c (resources), progress.c (the progress
 * thread) and events.c (the queue JavaScript drains). */
#ifndef IXFER_AGENT_H
#define IXFER_AGENT_H

#include <pthread.h>
#include <stdatomic.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_rma.h>

#include "ixfer.h"

struct ixfer_mr {
    struct ixfer_agent *agent;
    struct fid_mr *mr;
    void *desc; /* fi_mr_desc, passed with local iovs when FI_MR_LOCAL */
    uint64_t key;
    struct ixfer_mr *prev, *next;
};

/* Every operation's context starts with this (op_context points at it); kind
 * says which module owns the completion. */
enum op_kind { OP_KIND_RMA = 1, OP_KIND_SEND, OP_KIND_RECV };
struct op_ctx {
    struct fi_context2 fi;
    enum op_kind kind;
};

struct xfer_op {
    struct op_ctx ctx;
    struct xfer_request *req;
};

struct notif_job;

/* A queued transfer, owned by the progress thread once submitted. */
struct xfer_request {
    struct xfer_request *live_prev, *live_next; /* all requests not yet reported */
    struct xfer_request *post_next;             /* requests with parts left to post */
    int queued;                                 /* on the post queue */
    struct xfer_op *ops;  /* enough for every provider op; in the same allocation */
    uint32_t ops_used;
    uint64_t user_id;
    uint32_t op;
    fi_addr_t peer;
    uint32_t count;
    uint32_t next_pair;   /* first pair not fully posted */
    uint64_t next_offset; /* bytes of next_pair already posted */
    uint32_t outstanding; /* provider ops posted and not yet completed */
    int32_t status;       /* first failure, or IXFER_OK */
    int32_t fi_errno;
    int cancel_status;    /* nonzero once canceled: the status to report */
    struct notif_job *notif; /* attached notification, or NULL */
    enum { NOTIF_NONE, NOTIF_WAITING, NOTIF_SENDING } notif_state; /* NONE once sent */
    int tagged;              /* WRITE ops carry tag as remote CQ data */
    uint64_t tag;
    ixfer_iov_pair pairs[];
};

struct submission {
    struct submission *next;
    enum { SUBMIT_POST, SUBMIT_CANCEL, SUBMIT_REMOVE_PEER, SUBMIT_NOTIFY, SUBMIT_FORGET } kind;
    struct xfer_request *req; /* SUBMIT_POST */
    struct notif_job *job;    /* SUBMIT_NOTIFY */
    char *name;               /* SUBMIT_FORGET */
    uint64_t user_id;         /* SUBMIT_CANCEL */
    fi_addr_t peer;           /* SUBMIT_REMOVE_PEER */
    int *done;                /* SUBMIT_REMOVE_PEER: set under submit_lock */
    int32_t cancel_status;
};

struct ixfer_agent {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_ep *ep;
    struct fid_cq *cq;
    struct fid_av *av;
    ixfer_provider_info caps;
    uint32_t iov_limit;      /* pairs per provider op */
    uint64_t max_msg_size;
    char name[IXFER_SENDER_MAX];
    uint32_t name_len;
    struct notify_state *notify; /* notify.c; owned by the progress thread */

    pthread_mutex_t mr_lock; /* the list of registrations */
    struct ixfer_mr *mrs;
    uint64_t key_mask;       /* the domain's mr_key_size, as a mask */

    /* Owned by the progress thread. */
    struct xfer_request *live;
    struct xfer_request *postq_head, *postq_tail;

    pthread_t thread;
    int thread_started;
    atomic_int stop;
    atomic_int spinning;    /* the progress thread is watching, not sleeping */
    atomic_uint submitted;  /* submissions ever queued, for the watching thread */

    pthread_mutex_t submit_lock;
    pthread_cond_t submit_done; /* signals SUBMIT_REMOVE_PEER completion */
    struct submission *submit_head, *submit_tail;

    pthread_mutex_t event_lock;
    ixfer_event *events;
    uint32_t event_count, event_cap;
    int signaled;     /* a wake-up byte is in the pipe and not yet drained */
    int event_rd, event_wr;
};

/* Peers that refused work (-FI_EAGAIN) during one posting pass: their later
 * work waits for the next pass, so that one unreachable peer does not hold
 * up the others. */
#define MAX_BLOCKED_PEERS 16
struct blocked_peers {
    fi_addr_t peer[MAX_BLOCKED_PEERS];
    int n;
};

static inline int peer_blocked(const struct blocked_peers *b, fi_addr_t peer)
{
    for (int i = 0; i < b->n; i++)
        if (b->peer[i] == peer)
            return 1;
    return 0;
}

/* Records peer; returns whether the set is now full (the pass should stop). */
static inline int block_peer(struct blocked_peers *b, fi_addr_t peer)
{
    b->peer[b->n++] = peer;
    return b->n == MAX_BLOCKED_PEERS;
}

/* progress.c */
void *ixfer_progress_main(void *arg);

/* Queues a submission and wakes the progress thread. */
void ixfer_submit(struct ixfer_agent *agent, struct submission *s);

/* agent.c: fi_mr_reg with a key of ours (random) unless the provider picks
 * it, bound and enabled where FI_MR_ENDPOINT asks. Returns 0 or -FI_E*. */
int ixfer_reg_mr(struct ixfer_agent *agent, void *buf, size_t len, uint64_t access,
                 struct fid_mr **mr, uint64_t *key);

/* progress.c: notify.c reports that the notification of r was sent (or not). */
void ixfer_request_notified(struct ixfer_agent *agent, struct xfer_request *r, int32_t status,
                            int32_t fi_errno);
/* progress.c: maps a provider error to an ixfer status. */
int32_t ixfer_status_of(int fi_err);

/* events.c: called by the progress thread. */
void ixfer_push_event(struct ixfer_agent *agent, const ixfer_event *ev);

#endif
