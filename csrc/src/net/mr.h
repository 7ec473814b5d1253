/* Memory registration with the agent's domain (mr.c). */
#ifndef IXFER_NET_MR_H
#define IXFER_NET_MR_H

#include <rdma/fi_domain.h>

#include "core/list.h"
#include "ixfer.h"

struct ixfer_mr {
    struct ixfer_agent *agent;
    struct fid_mr *mr;      /* NULL for staged device memory: the provider never sees it */
    void *desc; /* fi_mr_desc, passed with local iovs when FI_MR_LOCAL */
    /* Rails after 0: the registration in a rail's own domain (same key), and
     * each rail's descriptor. */
    struct fid_mr *rail_mr[IXFER_MAX_RAILS];
    void *rail_desc[IXFER_MAX_RAILS];
    uint64_t key;
    uint64_t addr, len;     /* the registered range */
    int32_t dev;            /* CUDA device, or -1 for host memory */
    int staged;             /* device memory moved through bounce buffers (staging.c) */
    uint32_t copying;       /* staged: device copies under way (under the agent's mr_lock) */
    struct ixfer_list link; /* on the agent's registrations */
};

/* The staged region holding [addr, addr+len) under key, with a device copy
 * counted against it (so deregistration waits); NULL if none. Call
 * ixfer_mr_copy_end after the copy. */
struct ixfer_mr *ixfer_mr_copy_begin(struct ixfer_agent *agent, uint64_t key, uint64_t addr,
                                     uint64_t len);
void ixfer_mr_copy_end(struct ixfer_mr *m);

/* fi_mr_reg with a key of ours (random) unless the provider picks it, bound
 * and enabled where FI_MR_ENDPOINT asks. Returns 0 or -FI_E*. Used for the
 * caller's memory and for notify.c's buffers. */
int ixfer_reg_mr(struct ixfer_agent *agent, void *buf, size_t len, uint64_t access,
                 struct fid_mr **mr, uint64_t *key);

/* Closes the registrations the caller left behind (agent teardown). */
void ixfer_mr_close_all(struct ixfer_agent *agent);

#endif
