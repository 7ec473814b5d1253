/* Provider discovery: which providers offer what ixfer needs on this host. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "net/fabric_api.h"
#include "net/fabric_info.h"

struct fi_info *ixfer_rdm_hints(const char *prov, const char *domain)
{
    struct fi_info *hints = ixfer_fab.dupinfo(NULL);
    if (!hints)
        return NULL;
    hints->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_MSG;
    hints->ep_attr->type = FI_EP_RDM;
    /* Every op carries a struct fi_context2 (fi_getinfo(3): FI_CONTEXT2). */
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    /* Everything the shim knows how to honour; the provider clears what it
     * does not need and the caller branches on what comes back (fi_mr(3)). */
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
                                  FI_MR_PROV_KEY | FI_MR_ENDPOINT;
    hints->domain_attr->threading = FI_THREAD_SAFE;
    if (prov && *prov)
        hints->fabric_attr->prov_name = strdup(prov);
    if (domain && *domain)
        hints->domain_attr->name = strdup(domain);
    return hints;
}

const char *ixfer_provider_refusal(const struct fi_info *fi)
{
    const char *prov = fi->fabric_attr->prov_name;
    /* shm is built into libfabric: its version is the library's. Before 1.18
     * every RMA takes a spinlock inside the peer's shared region, which a
     * peer killed while serving holds for good. */
    if (prov && !strcasecmp(prov, "shm") && FI_VERSION_LT(ixfer_fab.version(), FI_VERSION(1, 18)))
        return "shm before libfabric 1.18 locks a spinlock inside the peer's shared memory for "
               "every RMA; a peer that dies holding it freezes this agent for good. Use "
               "libfabric 1.18 or newer (IXFER_LIBFABRIC_SO) or provider tcp";
    return NULL;
}

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, IXFER_NAME_MAX, "%s", src ? src : "");
}

void ixfer_fill_provider_info(const struct fi_info *fi, ixfer_provider_info *out)
{
    memset(out, 0, sizeof *out);
    copy_name(out->provider, fi->fabric_attr->prov_name);
    copy_name(out->fabric, fi->fabric_attr->name);
    copy_name(out->domain, fi->domain_attr->name);
    out->mr_mode = (uint64_t)(unsigned)fi->domain_attr->mr_mode;
    out->max_msg_size = fi->ep_attr->max_msg_size;
    out->inject_size = fi->tx_attr->inject_size;
    out->cq_data_size = fi->domain_attr->cq_data_size;
    out->caps = fi->caps;
    out->rma_iov_limit = (uint32_t)fi->tx_attr->rma_iov_limit;
    out->iov_limit = (uint32_t)fi->tx_attr->iov_limit;
    if (out->rma_iov_limit < out->iov_limit)
        out->iov_limit = out->rma_iov_limit;
    out->tx_size = (uint32_t)fi->tx_attr->size;
    out->data_progress = fi->domain_attr->data_progress;
    out->control_progress = fi->domain_attr->control_progress;
    out->hmem = (fi->caps & FI_HMEM) ? 1 : 0;
    out->addr_format = fi->addr_format;
    const char *why = ixfer_provider_refusal(fi);
    snprintf(out->unsupported, sizeof out->unsupported, "%s", why ? why : "");
}

/* Adds one row per (provider, domain) of list to out (addresses of one
 * interface repeat); hmem marks the rows of the FI_HMEM query. */
static void add_rows(const struct fi_info *list, ixfer_provider_info *out, uint32_t max,
                     uint32_t *count, int hmem)
{
    for (const struct fi_info *fi = list; fi; fi = fi->next) {
        uint32_t i = 0;
        while (i < *count && i < max &&
               (strcmp(out[i].provider, fi->fabric_attr->prov_name) ||
                strcmp(out[i].domain, fi->domain_attr->name)))
            i++;
        if (i == *count) {
            if (*count < max)
                ixfer_fill_provider_info(fi, &out[i]);
            (*count)++;
        }
        if (hmem && i < max)
            out[i].hmem = 1;
    }
}

static int query(const char *prov, int hmem, struct fi_info **list)
{
    struct fi_info *hints = ixfer_rdm_hints(prov, NULL);
    if (!hints)
        return -FI_ENOMEM;
    if (hmem) {
        /* A provider that moves device memory answers only when asked for
         * FI_HMEM with FI_MR_HMEM allowed (fi_mr(3)). */
        hints->caps |= FI_HMEM;
        hints->domain_attr->mr_mode |= FI_MR_HMEM;
    }
    *list = NULL;
    int ret = ixfer_fab.getinfo(IXFER_FI_API_VERSION, NULL, NULL, 0, hints, list);
    ixfer_fab.freeinfo(hints);
    return ret == -FI_ENODATA ? 0 : ret;
}

int32_t ixfer_fabric_query(const char *prov, ixfer_provider_info *out, uint32_t max,
                           uint32_t *count)
{
    int32_t rc = ixfer_fabric_load();
    if (rc != IXFER_OK)
        return rc;
    *count = 0;
    struct fi_info *list = NULL;
    int ret = query(prov, 0, &list);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_getinfo: %s", ixfer_fab.strerror(-ret));
    add_rows(list, out, max, count, 0);
    ixfer_fab.freeinfo(list);
    /* A second look says which of them take device memory (FI_HMEM); one
     * that fails it is simply not marked. */
    if (query(prov, 1, &list) == 0) {
        add_rows(list, out, max, count, 1);
        ixfer_fab.freeinfo(list);
    }
    return IXFER_OK;
}
