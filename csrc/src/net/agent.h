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

/* One rail: an endpoint with its CQ and AV. Rail 0's objects are the
 * agent's own (info, fabric, domain, ep, cq, av below, which notify.c and
 * staging.c use); a later rail opens its own fabric and domain unless it is
 * on rail dom's (then it shares them, and their registrations). */
struct net_rail {
    struct fi_info *info;       /* owned by rails after 0 */
    struct fid_fabric *fabric;  /* owned when own_domain */
    struct fid_domain *domain;  /* owned when own_domain */
    struct fid_ep *ep;
    struct fid_cq *cq;
    struct fid_av *av;
    uint32_t dom;               /* the rail whose domain (and registrations) it uses */
    int own_domain;
    int wait_fd;                /* the CQ's wait fd, or -1 */
    ixfer_provider_info caps;
    ixfer_rail_stats stats;     /* written by the progress thread, read atomically */
    /* Whether it is in use is a matter of each peer (peer.h: struct
     * peer_rail). Progress thread: */
    uint32_t inflight;          /* transfer ops posted on it, not completed */
    uint64_t refused_since;     /* first refusal while inflight was 0, or 0 */
    struct rail_worker *worker; /* rail_worker.c: posts and reads the CQ; NULL with one rail */
};

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
    /* The provider places an endpoint's WRITEs in order (tx msg_order has
     * FI_ORDER_WAW for any size): a request's last WRITE on a connection
     * asks for delivery and vouches for those before it (progress.c). */
    int ordered_writes;
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

    struct net_rail rails[IXFER_MAX_RAILS]; /* [0] mirrors the objects above */
    uint32_t nrails;
    /* Rails of the agent's provider (the first net_rails), and the shm rail
     * after them for peers on this host (0: none; see ixfer_peer_insert_shm). */
    uint32_t net_rails, shm_rail;
    uint64_t shm_watch_ns;   /* progress thread: next look at shm peers (peer.c) */
    int shm_watching;        /* ... and whether the last look asked for another soon */
    uint32_t rr;             /* progress thread: the rail the next small op takes */
    uint64_t stripe_min;
    uint64_t rail_cooldown_ns;
    /* link_watch.c (progress thread): TCP_USER_TIMEOUT of the rails'
     * sockets (0: off), and when it last looked for them. */
    uint32_t link_timeout_ms;
    int link_looked;
    uint64_t link_ops, link_next_ns;

    /* Owned by the progress thread (progress.c): struct xfer_request. */
    struct ixfer_list live;  /* every request not yet reported */
    struct ixfer_list postq; /* requests with parts left to post */
    struct ixfer_list peers; /* struct net_peer (peer.h) */

    pthread_t thread;
    struct ixfer_list running; /* progress.c: agents whose thread runs */
    int thread_started;
    atomic_int stop;
    atomic_int drain_at_stop; /* let the provider's ops end first (progress.c drain_ops) */
    atomic_uint submitted;  /* submissions ever queued, for the watching thread */
    /* The thread sleeps on wake_fd, an eventfd of ours that submitters write
     * while `sleeping` is set, and (wait_epfd >= 0) on every rail's CQ wait
     * fd in one epoll set; where a rail has no usable wait fd it polls the
     * CQs (progress.c). */
    int wake_fd, wait_epfd;
    atomic_int sleeping;

    /* Held by the progress thread except while it sleeps, and by a caller
     * posting a transfer itself (ixfer_progress_try_post):
     * whoever holds it owns the requests, the queues and the peers. */
    pthread_mutex_t post_lock;

    pthread_mutex_t submit_lock;
    pthread_cond_t submit_done;    /* signals SUBMIT_REMOVE_PEER completion */
    struct ixfer_list submissions; /* struct submission (progress.h) */
};

_Static_assert(offsetof(struct ixfer_agent, events) == 0,
               "ixfer_agent_events() finds the event queue at the start of the agent");

#endif
