/* What the progress thread (progress.c) and notifications (notify.c) share
 * about the operations they post to the provider. */
#ifndef IXFER_NET_OPS_H
#define IXFER_NET_OPS_H

#include <rdma/fabric.h>

/* Every operation's context starts with this (op_context points at it); kind
 * says which module owns the completion. */
enum op_kind { OP_KIND_RMA = 1, OP_KIND_SEND, OP_KIND_RECV, OP_KIND_STAGE };
struct op_ctx {
    struct fi_context2 fi;
    enum op_kind kind;
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

#endif
