/* The network agent: its libfabric resources and the state its modules share
 * (mr.c registrations, progress.c the progress thread, notify.c
 * notifications). Included only under net/. */
#ifndef IXFER_NET_AGENT_H
#define IXFER_NET_AGENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_rma.h>

#include "core/events.h"
#include "core/list.h"
#include "ixfer.h"

struct ixfer_agent {
    struct ixfer_events events; /* first: see ixfer_agent_events() */
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
    struct ixfer_list mrs;   /* struct ixfer_mr (mr.h) */
    pthread_cond_t mr_idle;  /* a staged region's device copy ended */

    /* Device memory (staging.c): whether the endpoint has FI_HMEM, the
     * config's vram_mode and pool, and the pool itself, made on first use by
     * the progress thread. */
    int hmem;
    uint32_t vram_mode;
    uint64_t staging_bytes, staging_chunk;
    struct staging *staging;
    ixfer_staging_stats staging_stats; /* read with __atomic loads from any thread */
    /* notify.c hands control messages (staging requests and replies) here. */
    void (*on_control)(struct ixfer_agent *a, const uint8_t *msg, uint64_t len);
    uint64_t key_mask;       /* the domain's mr_key_size, as a mask */

    /* Owned by the progress thread (progress.c): struct xfer_request. */
    struct ixfer_list live;  /* every request not yet reported */
    struct ixfer_list postq; /* requests with parts left to post */
    struct ixfer_list peers; /* struct net_peer (peer.h) */

    pthread_t thread;
    struct ixfer_list running; /* progress.c: agents whose thread runs */
    int thread_started;
    atomic_int stop;
    atomic_uint submitted;  /* submissions ever queued, for the watching thread */
    /* The thread sleeps on wake_fd, an eventfd of ours that submitters write
     * while `sleeping` is set, and (wait_epfd >= 0) on the CQ's wait fd in one
     * epoll set; with no usable wait fd it polls the CQ (progress.c). */
    int wake_fd, wait_epfd;
    atomic_int sleeping;

    pthread_mutex_t submit_lock;
    pthread_cond_t submit_done;    /* signals SUBMIT_REMOVE_PEER completion */
    struct ixfer_list submissions; /* struct submission (progress.h) */
};

_Static_assert(offsetof(struct ixfer_agent, events) == 0,
               "ixfer_agent_events() finds the event queue at the start of the agent");

#endif
