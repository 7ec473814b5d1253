/* Agent resources: fabric, domain, endpoint, CQ, AV and the event queue; the
 * progress thread (progress.c), registrations (mr.c) and notifications
 * (notify.c) are set up and torn down from here. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "gpu/cuda.h"
#include "net/agent.h"
#include "net/fabric_api.h"
#include "net/fabric_info.h"
#include "net/mr.h"
#include "net/notify.h"
#include "net/peer.h"
#include "net/progress.h"
#include "net/staging.h"

#define FI_CHECK(call, what)                                                         \
    do {                                                                             \
        int ret_ = (call);                                                           \
        if (ret_) {                                                                  \
            rc = ixfer_fail(IXFER_ERR_BACKEND, "%s: %s", what, ixfer_fab.strerror(-ret_)); \
            goto fail;                                                               \
        }                                                                            \
    } while (0)

static void close_fid(void *fidp)
{
    struct fid *fid = fidp;
    if (fid)
        fi_close(fid);
}

static void agent_free(struct ixfer_agent *a)
{
    ixfer_progress_stop(a);
    close_fid(a->ep);
    ixfer_notify_fini(a);
    ixfer_staging_fini(a);
    ixfer_mr_close_all(a); /* registrations the caller left behind */
    close_fid(a->av);
    close_fid(a->cq);
    close_fid(a->domain);
    close_fid(a->fabric);
    if (a->info)
        ixfer_fab.freeinfo(a->info);
    ixfer_progress_discard(a);
    ixfer_peers_fini(a);
    ixfer_events_fini(&a->events); /* frees notifications nobody drained */
    pthread_mutex_destroy(&a->mr_lock);
    pthread_cond_destroy(&a->mr_idle);
    pthread_mutex_destroy(&a->submit_lock);
    pthread_cond_destroy(&a->submit_done);
    free(a);
}

int32_t ixfer_agent_create(const ixfer_agent_config *cfg, ixfer_agent **out)
{
    if (!cfg || !out || !cfg->provider || !*cfg->provider)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "agent config needs a provider name");
    const char *name = cfg->name && *cfg->name ? cfg->name : "ixfer";
    if (strlen(name) >= IXFER_SENDER_MAX)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "agent name longer than %d bytes",
                          IXFER_SENDER_MAX - 1);
    int32_t rc = ixfer_fabric_load();
    if (rc != IXFER_OK)
        return rc;

    struct ixfer_agent *a = calloc(1, sizeof *a);
    if (!a)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    a->wake_fd = a->wait_epfd = -1;
    a->name_len = (uint32_t)strlen(name);
    memcpy(a->name, name, a->name_len);
    /* Everything agent_free touches is initialized before the first failure. */
    pthread_mutex_init(&a->mr_lock, NULL);
    pthread_cond_init(&a->mr_idle, NULL);
    a->vram_mode = cfg->vram_mode;
    a->staging_bytes = cfg->staging_bytes;
    a->staging_chunk = cfg->staging_chunk;
    a->on_control = ixfer_staging_message;
    pthread_mutex_init(&a->submit_lock, NULL);
    pthread_cond_init(&a->submit_done, NULL);
    ixfer_list_init(&a->mrs);
    ixfer_list_init(&a->live);
    ixfer_list_init(&a->postq);
    ixfer_list_init(&a->peers);
    ixfer_list_init(&a->submissions);
    rc = ixfer_events_init(&a->events, ixfer_notify_release_event);
    if (rc != IXFER_OK)
        goto fail;

    if (cfg->vram_mode > IXFER_VRAM_GPUDIRECT) {
        rc = ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown vram_mode %u", cfg->vram_mode);
        goto fail;
    }
    /* FI_HMEM is asked for only where device memory may be used (a CUDA
     * device is visible, or the caller asks): it can cost host memory. An shm
     * endpoint with FI_HMEM gives up cross-memory attach and moves host
     * memory through its bounce buffers (libfabric 2.6 smr_ep.c), about 5x
     * slower at 16 MiB on the GPU machine, while it moves device memory by
     * CUDA IPC some 14x faster than staging does; IXFER_VRAM_STAGED keeps
     * host memory on the fast path. */
    int want_hmem = cfg->vram_mode == IXFER_VRAM_GPUDIRECT;
    int32_t devices = 0;
    if (cfg->vram_mode == IXFER_VRAM_AUTO && !ixfer_cuda_emulated() &&
        ixfer_cuda_device_count(&devices) == IXFER_OK && devices > 0)
        want_hmem = 1;
    int ret;
    for (;;) {
        struct fi_info *hints = ixfer_rdm_hints(cfg->provider, cfg->domain);
        if (!hints) {
            rc = ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
            goto fail;
        }
        if (want_hmem) {
            hints->caps |= FI_HMEM;
            hints->domain_attr->mr_mode |= FI_MR_HMEM;
        }
        ret = ixfer_fab.getinfo(IXFER_FI_API_VERSION, cfg->node, NULL,
                                cfg->node ? FI_SOURCE : 0, hints, &a->info);
        ixfer_fab.freeinfo(hints);
        if (ret != -FI_ENODATA || !want_hmem || cfg->vram_mode == IXFER_VRAM_GPUDIRECT)
            break;
        want_hmem = 0; /* auto: this provider moves device memory by staging */
    }
    if (ret == -FI_ENODATA && want_hmem) {
        rc = ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                        "provider '%s' offers no FI_HMEM (device memory) endpoint: vram mode "
                        "'gpudirect' needs one; 'auto' or 'staged' moves device memory through "
                        "host bounce buffers", cfg->provider);
        goto fail;
    }
    if (ret == -FI_ENODATA) {
        rc = ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                        "provider '%s' offers no RDM endpoint with RMA for address '%s'%s%s",
                        cfg->provider, cfg->node ? cfg->node : "(any)",
                        cfg->domain ? " on domain " : "", cfg->domain ? cfg->domain : "");
        goto fail;
    }
    FI_CHECK(ret, "fi_getinfo");
    /* A name matches its layerings too ("tcp" gives native tcp and
     * tcp;ofi_rxm on 2.x): the entry named exactly as asked wins, else
     * libfabric's first. */
    const char *first = a->info->fabric_attr->prov_name;
    for (struct fi_info *cur = a->info->next; first && strcasecmp(first, cfg->provider) && cur;
         cur = cur->next) {
        if (cur->fabric_attr->prov_name && !strcasecmp(cur->fabric_attr->prov_name, cfg->provider)) {
            struct fi_info *one = ixfer_fab.dupinfo(cur);
            if (!one) {
                rc = ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
                goto fail;
            }
            ixfer_fab.freeinfo(a->info);
            a->info = one;
            break;
        }
    }

    struct fi_info *fi = a->info;
    const char *refusal = ixfer_provider_refusal(fi);
    if (refusal) {
        rc = ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "provider '%s': %s", fi->fabric_attr->prov_name,
                        refusal);
        goto fail;
    }
    ixfer_fill_provider_info(fi, &a->caps);
    a->hmem = (fi->caps & FI_HMEM) != 0;
    a->iov_limit = a->caps.iov_limit ? a->caps.iov_limit : 1;
    a->max_msg_size = fi->ep_attr->max_msg_size ? fi->ep_attr->max_msg_size : (1ull << 30);
    size_t key_size = fi->domain_attr->mr_key_size;
    a->key_mask = key_size && key_size < 8 ? (1ull << (8 * key_size)) - 1 : UINT64_MAX;

    FI_CHECK(ixfer_fab.fabric(fi->fabric_attr, &a->fabric, NULL), "fi_fabric");
    FI_CHECK(fi_domain(a->fabric, fi, &a->domain, NULL), "fi_domain");

    rc = ixfer_progress_open_cq(a);
    if (rc != IXFER_OK)
        goto fail;
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    FI_CHECK(fi_av_open(a->domain, &av_attr, &a->av, NULL), "fi_av_open");
    FI_CHECK(fi_endpoint(a->domain, fi, &a->ep, NULL), "fi_endpoint");
    FI_CHECK(fi_ep_bind(a->ep, &a->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
    FI_CHECK(fi_ep_bind(a->ep, &a->av->fid, 0), "fi_ep_bind(av)");
    FI_CHECK(fi_enable(a->ep), "fi_enable");
    rc = ixfer_notify_init(a, cfg);
    if (rc != IXFER_OK)
        goto fail;
    rc = ixfer_progress_start(a);
    if (rc != IXFER_OK)
        goto fail;
    *out = a;
    return IXFER_OK;
fail:
    agent_free(a);
    return rc;
}

void ixfer_agent_destroy(ixfer_agent *agent)
{
    if (agent)
        agent_free(agent);
}

int32_t ixfer_agent_info(ixfer_agent *agent, ixfer_provider_info *out)
{
    if (!agent || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    *out = agent->caps;
    return IXFER_OK;
}

int32_t ixfer_agent_address(ixfer_agent *agent, uint8_t *buf, uint64_t *len)
{
    if (!agent || !len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    size_t n = (size_t)*len;
    int ret = fi_getname(&agent->ep->fid, buf, &n);
    *len = n;
    if (ret == -FI_ETOOSMALL)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "address needs %zu bytes", n);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_getname: %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

int32_t ixfer_agent_take_event_fd(ixfer_agent *agent, int32_t *fd)
{
    if (!agent || !fd)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    return ixfer_events_take_fd(&agent->events, fd);
}

uint32_t ixfer_agent_drain(ixfer_agent *agent, ixfer_event *out, uint32_t max)
{
    if (!agent || !out)
        return 0;
    return ixfer_events_drain(&agent->events, out, max);
}
