/* Agent resources: fabric, domain, endpoint, CQ, AV and the event queue; the
 * progress thread (progress.c), registrations (mr.c) and notifications
 * (notify.c) are set up and torn down from here. */
#include <stdio.h>
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

/* Closes what rail r (> 0) holds besides its endpoint. */
static void close_rail(struct net_rail *r)
{
    close_fid(r->av);
    close_fid(r->cq);
    if (r->own_domain) {
        close_fid(r->domain);
        close_fid(r->fabric);
    }
    if (r->info)
        ixfer_fab.freeinfo(r->info);
}

static void agent_free(struct ixfer_agent *a)
{
    ixfer_progress_stop(a);
    for (uint32_t i = a->nrails; i-- > 1;)
        close_fid(a->rails[i].ep);
    close_fid(a->ep);
    ixfer_notify_fini(a);
    ixfer_staging_fini(a);
    ixfer_mr_close_all(a); /* registrations the caller left behind */
    for (uint32_t i = a->nrails; i-- > 1;)
        close_rail(&a->rails[i]);
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
    pthread_mutex_destroy(&a->post_lock);
    pthread_cond_destroy(&a->submit_done);
    free(a);
}

/* A name matches its layerings too ("tcp" gives native tcp and tcp;ofi_rxm
 * on 2.x): the entry of *info named exactly prov wins, else libfabric's
 * first. */
static int32_t pick_named(struct fi_info **info, const char *prov)
{
    const char *first = (*info)->fabric_attr->prov_name;
    for (struct fi_info *cur = (*info)->next; first && strcasecmp(first, prov) && cur;
         cur = cur->next) {
        if (cur->fabric_attr->prov_name && !strcasecmp(cur->fabric_attr->prov_name, prov)) {
            struct fi_info *one = ixfer_fab.dupinfo(cur);
            if (!one)
                return ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
            ixfer_fab.freeinfo(*info);
            *info = one;
            break;
        }
    }
    return IXFER_OK;
}

/* Opens rail i (> 0) on node/domain with provider prov (rail 0's, or shm),
 * FI_HMEM when hmem: on an earlier rail's domain when it names the same
 * fabric and domain, else on a fabric and domain of its own. */
static int32_t open_rail(struct ixfer_agent *a, uint32_t i, const char *node, const char *domain,
                         const char *prov, int hmem)
{
    struct net_rail *r = &a->rails[i];
    int32_t rc = IXFER_OK;
    struct fi_info *hints = ixfer_rdm_hints(prov, domain);
    if (!hints)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
    if (hmem) {
        hints->caps |= FI_HMEM;
        hints->domain_attr->mr_mode |= FI_MR_HMEM;
    }
    int ret = ixfer_fab.getinfo(IXFER_FI_API_VERSION, node, NULL, node ? FI_SOURCE : 0, hints,
                                &r->info);
    ixfer_fab.freeinfo(hints);
    if (ret == -FI_ENODATA)
        return ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                          "provider '%s' offers no RDM endpoint with RMA for it%s%s", prov,
                          domain ? " on domain " : "", domain ? domain : "");
    FI_CHECK(ret, "fi_getinfo (rail)");
    rc = pick_named(&r->info, prov);
    if (rc != IXFER_OK)
        return rc;
    struct fi_info *fi = r->info;
    const char *refusal = ixfer_provider_refusal(fi);
    if (refusal)
        return ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "provider '%s': %s", prov, refusal);
    ixfer_fill_provider_info(fi, &r->caps);
    r->dom = i;
    for (uint32_t j = 0; j < i; j++) {
        const ixfer_provider_info *c = &a->rails[j].caps;
        if (!strcmp(c->provider, r->caps.provider) && !strcmp(c->fabric, r->caps.fabric) &&
            !strcmp(c->domain, r->caps.domain)) {
            r->dom = a->rails[j].dom;
            break;
        }
    }
    if (r->dom == i) {
        /* Registrations are made in every domain under the key of rail 0's,
         * so the peer needs one key per region. */
        if (fi->domain_attr->mr_mode & (FI_MR_PROV_KEY | FI_MR_ENDPOINT))
            return ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                              "it is on domain '%s', rail 0 on '%s': provider '%s' picks "
                              "memory keys itself (FI_MR_PROV_KEY or FI_MR_ENDPOINT), so its "
                              "rails must share one domain", r->caps.domain,
                              a->caps.domain, prov);
        r->own_domain = 1;
        FI_CHECK(ixfer_fab.fabric(fi->fabric_attr, &r->fabric, NULL), "fi_fabric (rail)");
        FI_CHECK(fi_domain(r->fabric, fi, &r->domain, NULL), "fi_domain (rail)");
    } else {
        r->fabric = a->rails[r->dom].fabric;
        r->domain = a->rails[r->dom].domain;
    }
    rc = ixfer_progress_open_cq(r);
    if (rc != IXFER_OK)
        return rc;
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    FI_CHECK(fi_av_open(r->domain, &av_attr, &r->av, NULL), "fi_av_open (rail)");
    FI_CHECK(fi_endpoint(r->domain, fi, &r->ep, NULL), "fi_endpoint (rail)");
    FI_CHECK(fi_ep_bind(r->ep, &r->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq, rail)");
    FI_CHECK(fi_ep_bind(r->ep, &r->av->fid, 0), "fi_ep_bind(av, rail)");
    FI_CHECK(fi_enable(r->ep), "fi_enable (rail)");
fail:
    return rc;
}

/* Why the agent's provider gets no shm rail, or NULL. */
static const char *shm_rail_refusal(const struct ixfer_agent *a)
{
    /* Regions get one key on every rail: shm must take the provider's. */
    if (a->info->domain_attr->mr_mode & (FI_MR_PROV_KEY | FI_MR_ENDPOINT))
        return "the agent's provider picks memory keys itself (FI_MR_PROV_KEY or "
               "FI_MR_ENDPOINT), which shm cannot be given";
    if (a->nrails >= IXFER_MAX_RAILS)
        return "the agent has the most rails already";
    return NULL;
}

/* Opens the shm rail after the network rails, as mode (IXFER_SAME_HOST_*)
 * asks: 'auto' leaves it out wherever it cannot be opened; an agent on shm
 * needs none. Without FI_HMEM: with it, shm 2.6 moves host memory through its
 * bounce buffers instead of cross-memory attach (see ixfer_agent_create), and
 * host memory is what this rail carries. */
static int32_t open_shm_rail(struct ixfer_agent *a, uint32_t mode)
{
    if (mode > IXFER_SAME_HOST_OFF)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown same_host mode %u", mode);
    if (mode == IXFER_SAME_HOST_OFF || !strcasecmp(a->info->fabric_attr->prov_name, "shm"))
        return IXFER_OK;
    const char *why = shm_rail_refusal(a);
    if (why)
        return mode == IXFER_SAME_HOST_SHM
                   ? ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "no shm rail: %s", why)
                   : IXFER_OK;
    uint32_t i = a->nrails;
    struct net_rail *r = &a->rails[i];
    r->wait_fd = -1;
    r->stats.up = 1;
    /* No node: shm takes it as the name of its region. */
    int32_t rc = open_rail(a, i, NULL, NULL, "shm", 0);
    if (rc == IXFER_OK) {
        size_t ks = r->info->domain_attr->mr_key_size;
        if (ks && ks < 8)
            a->key_mask &= (1ull << (8 * ks)) - 1; /* keys drawn from now on fit shm too */
        a->shm_rail = i;
        a->nrails = i + 1;
        return IXFER_OK;
    }
    close_fid(r->ep);
    close_rail(r);
    memset(r, 0, sizeof *r);
    if (mode == IXFER_SAME_HOST_SHM) {
        char msg[IXFER_REASON_MAX];
        snprintf(msg, sizeof msg, "%s", ixfer_last_error());
        return ixfer_fail(rc, "no shm rail: %s", msg);
    }
    return IXFER_OK;
}

int32_t ixfer_agent_create(const ixfer_agent_config *cfg, ixfer_agent **out)
{
    if (!cfg || !out || !cfg->provider || !*cfg->provider)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "agent config needs a provider name");
    const char *name = cfg->name && *cfg->name ? cfg->name : "ixfer";
    if (strlen(name) >= IXFER_SENDER_MAX)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "agent name longer than %d bytes",
                          IXFER_SENDER_MAX - 1);
    uint32_t nrails = cfg->rail_count ? cfg->rail_count : 1;
    if (nrails > IXFER_MAX_RAILS)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "%u rails asked for, at most %d",
                          cfg->rail_count, IXFER_MAX_RAILS);
    const char *node = cfg->node, *domain = cfg->domain;
    if (cfg->rails) {
        if (cfg->rails[0].node)
            node = cfg->rails[0].node;
        if (cfg->rails[0].domain)
            domain = cfg->rails[0].domain;
    }
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
    pthread_mutex_init(&a->post_lock, NULL);
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
        struct fi_info *hints = ixfer_rdm_hints(cfg->provider, domain);
        if (!hints) {
            rc = ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
            goto fail;
        }
        if (want_hmem) {
            hints->caps |= FI_HMEM;
            hints->domain_attr->mr_mode |= FI_MR_HMEM;
        }
        ret = ixfer_fab.getinfo(IXFER_FI_API_VERSION, node, NULL, node ? FI_SOURCE : 0, hints,
                                &a->info);
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
                        cfg->provider, node ? node : "(any)", domain ? " on domain " : "",
                        domain ? domain : "");
        goto fail;
    }
    FI_CHECK(ret, "fi_getinfo");
    rc = pick_named(&a->info, cfg->provider);
    if (rc != IXFER_OK)
        goto fail;

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
    a->ordered_writes = (fi->tx_attr->msg_order & FI_ORDER_WAW) &&
                        fi->ep_attr->max_order_waw_size >= a->max_msg_size;
    size_t key_size = fi->domain_attr->mr_key_size;
    a->key_mask = key_size && key_size < 8 ? (1ull << (8 * key_size)) - 1 : UINT64_MAX;

    FI_CHECK(ixfer_fab.fabric(fi->fabric_attr, &a->fabric, NULL), "fi_fabric");
    FI_CHECK(fi_domain(a->fabric, fi, &a->domain, NULL), "fi_domain");

    for (uint32_t i = 0; i < nrails; i++)
        a->rails[i].stats.up = 1;
    struct net_rail *r0 = &a->rails[0];
    r0->info = fi;
    r0->fabric = a->fabric;
    r0->domain = a->domain;
    r0->caps = a->caps;
    a->nrails = 1;
    rc = ixfer_progress_open_cq(r0);
    if (rc != IXFER_OK)
        goto fail;
    a->cq = r0->cq;
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    FI_CHECK(fi_av_open(a->domain, &av_attr, &a->av, NULL), "fi_av_open");
    FI_CHECK(fi_endpoint(a->domain, fi, &a->ep, NULL), "fi_endpoint");
    FI_CHECK(fi_ep_bind(a->ep, &a->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
    FI_CHECK(fi_ep_bind(a->ep, &a->av->fid, 0), "fi_ep_bind(av)");
    FI_CHECK(fi_enable(a->ep), "fi_enable");
    r0->av = a->av;
    r0->ep = a->ep;
    if (nrails > 1 && (fi->domain_attr->mr_mode & FI_MR_ENDPOINT)) {
        rc = ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "provider '%s' binds registrations to one "
                        "endpoint (FI_MR_ENDPOINT): ixfer opens one rail on it",
                        fi->fabric_attr->prov_name);
        goto fail;
    }
    a->stripe_min = cfg->stripe_min ? cfg->stripe_min : 128 * 1024;
    a->rail_cooldown_ns = (cfg->rail_cooldown_ms ? cfg->rail_cooldown_ms : 1000) * 1000000ull;
    a->link_timeout_ms = cfg->link_timeout_ms == IXFER_LINK_TIMEOUT_OFF ? 0
                         : cfg->link_timeout_ms                       ? cfg->link_timeout_ms
                                                                      : 2000;
    for (uint32_t i = 1; i < nrails; i++) {
        const ixfer_rail_config *rc_i = cfg->rails ? &cfg->rails[i] : NULL;
        /* Counted first: agent_free closes what a half-opened rail holds. */
        a->nrails = i + 1;
        a->rails[i].wait_fd = -1;
        const char *rnode = rc_i && rc_i->node ? rc_i->node : cfg->node;
        rc = open_rail(a, i, rnode, rc_i && rc_i->domain ? rc_i->domain : cfg->domain,
                       fi->fabric_attr->prov_name, a->hmem);
        if (rc != IXFER_OK) {
            char why[IXFER_REASON_MAX];
            snprintf(why, sizeof why, "%s", ixfer_last_error());
            rc = ixfer_fail(rc, "rail %u at %s: %s", i, rnode ? rnode : "(any)", why);
            goto fail;
        }
    }
    a->net_rails = a->nrails;
    rc = open_shm_rail(a, cfg->same_host);
    if (rc != IXFER_OK)
        goto fail;
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
    return ixfer_agent_rail_address(agent, 0, buf, len);
}

int32_t ixfer_agent_rail_address(ixfer_agent *agent, uint32_t rail, uint8_t *buf, uint64_t *len)
{
    if (!agent || !len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (rail >= agent->nrails)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "rail %u of %u", rail, agent->nrails);
    size_t n = (size_t)*len;
    int ret = fi_getname(&agent->rails[rail].ep->fid, buf, &n);
    *len = n;
    if (ret == -FI_ETOOSMALL)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "address needs %zu bytes", n);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_getname: %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

uint32_t ixfer_agent_shm_rail(ixfer_agent *agent)
{
    return agent ? agent->shm_rail : 0;
}

uint32_t ixfer_agent_rail_count(ixfer_agent *agent)
{
    return agent ? agent->nrails : 0;
}

int32_t ixfer_agent_rail_info(ixfer_agent *agent, uint32_t rail, ixfer_provider_info *out)
{
    if (!agent || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (rail >= agent->nrails)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "rail %u of %u", rail, agent->nrails);
    *out = agent->rails[rail].caps;
    return IXFER_OK;
}

int32_t ixfer_rail_stats_get(ixfer_agent *agent, uint32_t rail, ixfer_rail_stats *out)
{
    if (!agent || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (rail >= agent->nrails)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "rail %u of %u", rail, agent->nrails);
    const ixfer_rail_stats *s = &agent->rails[rail].stats;
    out->ops = __atomic_load_n(&s->ops, __ATOMIC_RELAXED);
    out->bytes = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
    out->failed = __atomic_load_n(&s->failed, __ATOMIC_RELAXED);
    out->reposted = __atomic_load_n(&s->reposted, __ATOMIC_RELAXED);
    out->downs = __atomic_load_n(&s->downs, __ATOMIC_RELAXED);
    out->rejoins = __atomic_load_n(&s->rejoins, __ATOMIC_RELAXED);
    out->up = __atomic_load_n(&s->up, __ATOMIC_RELAXED);
    out->peers_down = __atomic_load_n(&s->peers_down, __ATOMIC_RELAXED);
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
