/* Memory registration with the agent's domain (mr.c). */
#ifndef IXFER_NET_MR_H
#define IXFER_NET_MR_H

#include <rdma/fi_domain.h>

#include "core/list.h"
#include "ixfer.h"

struct ixfer_mr {
    struct ixfer_agent *agent;
    struct fid_mr *mr;
    void *desc; /* fi_mr_desc, passed with local iovs when FI_MR_LOCAL */
    uint64_t key;
    struct ixfer_list link; /* on the agent's registrations */
};

/* fi_mr_reg with a key of ours (random) unless the provider picks it, bound
 * and enabled where FI_MR_ENDPOINT asks. Returns 0 or -FI_E*. Used for the
 * caller's memory and for notify.c's buffers. */
int ixfer_reg_mr(struct ixfer_agent *agent, void *buf, size_t len, uint64_t access,
                 struct fid_mr **mr, uint64_t *key);

/* Closes the registrations the caller left behind (agent teardown). */
void ixfer_mr_close_all(struct ixfer_agent *agent);

#endif
