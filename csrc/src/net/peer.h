/* Peer records (peer.c): what the progress thread knows of each address in
 * the AV. Every post to a peer goes through ixfer_peer_may_post, so nothing
 * is ever posted to an address removed from the AV (libfabric does not check
 * addresses on the data path: rxm dereferences a freed entry). */
#ifndef IXFER_NET_PEER_H
#define IXFER_NET_PEER_H

#include <sys/socket.h>

#include "net/agent.h"

enum peer_state { PEER_OK, PEER_GONE, PEER_REMOVED };

/* A rail towards one peer (progress.c): in use, cooling off after a
 * connection error until retry_ns, or tried again (rejoins on its first
 * success). A connection breaks towards one peer: the rail goes on serving
 * the others. */
enum rail_state { RAIL_UP, RAIL_DOWN, RAIL_TRYING };
struct peer_rail {
    enum rail_state state;
    uint64_t retry_ns;
    uint32_t inflight; /* its transfer ops posted on the rail, not completed */
};

struct net_peer {
    struct ixfer_list link; /* on the agent's peers */
    fi_addr_t fa;
    uint32_t nrails;      /* rails both ends have; rail_fa[0] == fa */
    uint32_t rail_inserts; /* inserts that put rail_fa[1..] into the rails' AVs */
    fi_addr_t rail_fa[IXFER_MAX_RAILS]; /* [a->shm_rail]: its shm address, when shm */
    int shm;               /* reached over the shm rail (ixfer_peer_insert_shm) */
    uint32_t shm_inserts;  /* inserts of rail_fa[a->shm_rail] into the shm rail's AV */
    struct peer_rail rail[IXFER_MAX_RAILS];
    uint32_t rails_down;  /* of rail[], those not RAIL_UP */
    enum peer_state state;
    uint32_t inserts;     /* fi_av_insert calls not yet matched by a removal */
    uint32_t av_owed;     /* fi_av_remove calls deferred until refs is 0 */
    uint32_t refs;        /* live requests and notification jobs naming it */
    uint32_t outstanding; /* ops with the provider */
    uint64_t stall_since_ns; /* first refusal while nothing was outstanding */
    uint64_t silent_since_ns; /* first look while our staged requests awaited replies */
    uint64_t shm_heard_ns;   /* shm: the last completion, or the first post after none was out */
    uint64_t shm_nudged_ns;  /* shm: our last nudge to it (progress.c) */
    int probe_fd;            /* -1, or a nonblocking connect in progress */
    uint64_t next_probe_ns;
    socklen_t salen;         /* 0: the address is no kernel socket address */
    struct sockaddr_storage sa;
};

/* Whether addr can be handed to fi_av_insert for the endpoint's address
 * format (IXFER_OK, or IXFER_ERR_INVALID_PARAM with a message). */
int32_t ixfer_peer_addr_check(const struct ixfer_agent *a, const uint8_t *addr, uint64_t len);
/* Whether the provider's wire is a kernel TCP connection to the address in
 * the metadata: its core (the name before ';') is tcp, sockets or net. */
int ixfer_wire_is_tcp(const struct ixfer_agent *a);
/* The record of fa, or NULL (never inserted, or removed). */
struct net_peer *ixfer_peer_find(struct ixfer_agent *a, fi_addr_t fa);
/* SUBMIT_ADD_PEER: fa was inserted from addr (rail 0's address), and the
 * peer's address on rail i into rail i's AV as rail_fa[i], for nrails
 * rails. Returns 0 or -1 (out of memory). */
int ixfer_peer_added(struct ixfer_agent *a, fi_addr_t fa, const void *addr, size_t len,
                     const fi_addr_t *rail_fa, uint32_t nrails);
/* SUBMIT_SHM_PEER: the peer fa is reached over the shm rail at shm_fa. */
void ixfer_peer_shm_added(struct ixfer_agent *a, fi_addr_t fa, fi_addr_t shm_fa);
/* SUBMIT_REMOVE_PEER: no more posts; fi_av_remove once nothing refers to it.
 * Returns whether fa is now removed (not still held by another insert). */
int ixfer_peer_removed(struct ixfer_agent *a, fi_addr_t fa);
void ixfer_peer_ref(struct net_peer *p);
void ixfer_peer_unref(struct ixfer_agent *a, struct net_peer *p);
/* The one check before a post: IXFER_OK, or IXFER_ERR_REMOTE_DISCONNECT when p
 * is NULL, removed or gone. */
int32_t ixfer_peer_may_post(const struct net_peer *p);
/* The provider took an op for p, or one completed (fi_err 0 or its error). */
void ixfer_peer_posted(struct net_peer *p);
void ixfer_peer_op_done(struct net_peer *p, int fi_err);
/* The provider refused a post to p with -FI_EAGAIN: decides whether p is gone. */
void ixfer_peer_refused(struct net_peer *p);
/* A reply is awaited from p (a staged request it serves) while nothing of
 * ours is with the provider for it: like a refusal, silence may mean p is
 * gone (probed as for a refusal, with a clock of its own that a post or a
 * reply restarts). Returns whether to look again soon. ixfer_peer_heard: p
 * answered, the silence ends. */
int ixfer_peer_silent(struct net_peer *p);
void ixfer_peer_heard(struct net_peer *p);
/* Peers reached over shm, which notices no peer death (ops to a dead
 * process never complete): one whose ops have been out without a completion
 * for a while is probed on its rail-0 address, and declared gone when
 * nothing listens there (*gone is set then). Returns whether to look again
 * soon: some peer on shm has ops out. */
int ixfer_peers_watch_shm(struct ixfer_agent *a, int *gone);
/* At teardown, after the progress thread stopped. */
void ixfer_peers_fini(struct ixfer_agent *a);

#endif
