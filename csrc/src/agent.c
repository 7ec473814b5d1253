/* Agent resources: fabric, domain, endpoint, CQ, AV, memory registrations. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include <rdma/fi_errno.h>
#include "fabric_api.h"
#include "fabric_info.h"
#include "internal.h"
#include "notify.h"

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
    if (a->thread_started) {
        atomic_store(&a->stop, 1);
        fi_cq_signal(a->cq);
        pthread_join(a->thread, NULL);
    }
    close_fid(a->ep);
    ixfer_notify_fini(a);
    /* Registrations the caller left behind. */
    while (a->mrs) {
        struct ixfer_mr *m = a->mrs;
        a->mrs = m->next;
        close_fid(m->mr);
        free(m);
    }
    close_fid(a->av);
    close_fid(a->cq);
    close_fid(a->domain);
    close_fid(a->fabric);
    if (a->info)
        ixfer_fab.freeinfo(a->info);
    for (struct submission *s = a->submit_head, *n; s; s = n) {
        n = s->next;
        if (s->req)
            ixfer_notif_job_free(s->req->notif);
        free(s->req);
        ixfer_notif_job_free(s->job);
        free(s->name);
        free(s);
    }
    for (struct xfer_request *r = a->live, *n; r; r = n) {
        n = r->live_next;
        if (r->notif_state == NOTIF_WAITING) /* else notify.c owns it */
            ixfer_notif_job_free(r->notif);
        free(r);
    }
    /* Notifications nobody drained. */
    for (uint32_t i = 0; i < a->event_count; i++)
        if (a->events[i].type == IXFER_EVENT_NOTIF)
            ixfer_notif_free((ixfer_notification *)(uintptr_t)a->events[i].user_id);
    if (a->event_rd >= 0)
        close(a->event_rd);
    if (a->event_wr >= 0)
        close(a->event_wr);
    free(a->events);
    pthread_mutex_destroy(&a->mr_lock);
    pthread_mutex_destroy(&a->submit_lock);
    pthread_cond_destroy(&a->submit_done);
    pthread_mutex_destroy(&a->event_lock);
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
    a->event_rd = a->event_wr = -1;
    a->name_len = (uint32_t)strlen(name);
    memcpy(a->name, name, a->name_len);
    pthread_mutex_init(&a->mr_lock, NULL);
    pthread_mutex_init(&a->submit_lock, NULL);
    pthread_cond_init(&a->submit_done, NULL);
    pthread_mutex_init(&a->event_lock, NULL);

    struct fi_info *hints = ixfer_rdm_hints(cfg->provider, cfg->domain);
    if (!hints) {
        rc = ixfer_fail(IXFER_ERR_BACKEND, "fi_dupinfo failed");
        goto fail;
    }
    int ret = ixfer_fab.getinfo(IXFER_FI_API_VERSION, cfg->node, NULL,
                                cfg->node ? FI_SOURCE : 0, hints, &a->info);
    ixfer_fab.freeinfo(hints);
    if (ret == -FI_ENODATA) {
        rc = ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                        "provider '%s' offers no RDM endpoint with RMA for address '%s'%s%s",
                        cfg->provider, cfg->node ? cfg->node : "(any)",
                        cfg->domain ? " on domain " : "", cfg->domain ? cfg->domain : "");
        goto fail;
    }
    FI_CHECK(ret, "fi_getinfo");

    struct fi_info *fi = a->info;
    ixfer_fill_provider_info(fi, &a->caps);
    a->iov_limit = a->caps.iov_limit ? a->caps.iov_limit : 1;
    a->max_msg_size = fi->ep_attr->max_msg_size ? fi->ep_attr->max_msg_size : (1ull << 30);
    size_t key_size = fi->domain_attr->mr_key_size;
    a->key_mask = key_size && key_size < 8 ? (1ull << (8 * key_size)) - 1 : UINT64_MAX;

    FI_CHECK(ixfer_fab.fabric(fi->fabric_attr, &a->fabric, NULL), "fi_fabric");
    FI_CHECK(fi_domain(a->fabric, fi, &a->domain, NULL), "fi_domain");

    struct fi_cq_attr cq_attr = {
        .format = FI_CQ_FORMAT_DATA,
        /* A thread blocked in fi_cq_sread on such a CQ also drives manual
         * progress (tcp/rxm, fi_cq(3)). */
        .wait_obj = FI_WAIT_UNSPEC,
        .size = 0,
    };
    FI_CHECK(fi_cq_open(a->domain, &cq_attr, &a->cq, NULL), "fi_cq_open");
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    FI_CHECK(fi_av_open(a->domain, &av_attr, &a->av, NULL), "fi_av_open");
    FI_CHECK(fi_endpoint(a->domain, fi, &a->ep, NULL), "fi_endpoint");
    FI_CHECK(fi_ep_bind(a->ep, &a->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
    FI_CHECK(fi_ep_bind(a->ep, &a->av->fid, 0), "fi_ep_bind(av)");
    FI_CHECK(fi_enable(a->ep), "fi_enable");
    rc = ixfer_notify_init(a, cfg);
    if (rc != IXFER_OK)
        goto fail;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK)) {
        rc = ixfer_fail(IXFER_ERR_BACKEND, "pipe2: %s", strerror(errno));
        goto fail;
    }
    a->event_rd = fds[0];
    a->event_wr = fds[1];

    if (pthread_create(&a->thread, NULL, ixfer_progress_main, a)) {
        rc = ixfer_fail(IXFER_ERR_BACKEND, "cannot start the progress thread");
        goto fail;
    }
    a->thread_started = 1;
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
    if (agent->event_rd < 0)
        return ixfer_fail(IXFER_ERR_NOT_ALLOWED, "the event descriptor was already taken");
    *fd = agent->event_rd;
    agent->event_rd = -1;
    return IXFER_OK;
}

int ixfer_reg_mr(struct ixfer_agent *a, void *buf, size_t len, uint64_t access,
                 struct fid_mr **mr, uint64_t *key)
{
    /* Without FI_MR_PROV_KEY the key is ours to choose, unique per domain:
     * random rather than 1, 2, 3..., so that a peer never given a region's
     * key cannot guess it; a clash (-FI_ENOKEY) draws again. */
    uint64_t requested;
    int ret, tries = 0;
    do {
        requested = 0;
        while (!requested) {
            if (getrandom(&requested, sizeof requested, 0) != sizeof requested)
                requested ^= (uint64_t)(uintptr_t)&requested ^ (uint64_t)clock();
            requested &= a->key_mask;
        }
        ret = fi_mr_reg(a->domain, buf, len, access, 0, requested, 0, mr, NULL);
    } while (ret == -FI_ENOKEY && ++tries < 4);
    if (ret == 0 && (a->caps.mr_mode & FI_MR_ENDPOINT)) {
        ret = fi_mr_bind(*mr, &a->ep->fid, 0);
        if (ret == 0)
            ret = fi_mr_enable(*mr);
    }
    if (ret) {
        if (*mr)
            fi_close(&(*mr)->fid);
        *mr = NULL;
        return ret;
    }
    *key = (a->caps.mr_mode & FI_MR_PROV_KEY) ? fi_mr_key(*mr) : requested;
    return 0;
}

int32_t ixfer_mr_register(ixfer_agent *agent, uint64_t addr, uint64_t len, uint64_t *key,
                          ixfer_mr **out)
{
    if (!agent || !key || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (!addr || !len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "memory to register needs an address and a "
                                                   "non-zero length");
    struct ixfer_mr *m = calloc(1, sizeof *m);
    if (!m)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    uint64_t access = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;

    int ret = ixfer_reg_mr(agent, (void *)(uintptr_t)addr, (size_t)len, access, &m->mr, &m->key);
    if (ret) {
        free(m);
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_mr_reg of %llu bytes at 0x%llx: %s",
                          (unsigned long long)len, (unsigned long long)addr,
                          ixfer_fab.strerror(-ret));
    }
    m->agent = agent;
    m->desc = fi_mr_desc(m->mr);
    pthread_mutex_lock(&agent->mr_lock);
    m->next = agent->mrs;
    if (agent->mrs)
        agent->mrs->prev = m;
    agent->mrs = m;
    pthread_mutex_unlock(&agent->mr_lock);
    *key = m->key;
    *out = m;
    return IXFER_OK;
}

int32_t ixfer_mr_deregister(ixfer_mr *m)
{
    if (!m)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null registration");
    struct ixfer_agent *a = m->agent;
    pthread_mutex_lock(&a->mr_lock);
    if (m->prev)
        m->prev->next = m->next;
    else
        a->mrs = m->next;
    if (m->next)
        m->next->prev = m->prev;
    pthread_mutex_unlock(&a->mr_lock);
    int ret = fi_close(&m->mr->fid);
    free(m);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_close(mr): %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

int32_t ixfer_peer_insert(ixfer_agent *agent, const uint8_t *addr, uint64_t len, uint64_t *peer)
{
    if (!agent || !addr || !peer)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (len == 0 || len > 4096)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "peer address of %llu bytes",
                          (unsigned long long)len);
    fi_addr_t fa = FI_ADDR_UNSPEC;
    int ret = fi_av_insert(agent->av, addr, 1, &fa, 0, NULL);
    if (ret != 1 || fa == FI_ADDR_UNSPEC)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "the provider rejected a peer address of "
                                                   "%llu bytes", (unsigned long long)len);
    *peer = fa;
    return IXFER_OK;
}

int32_t ixfer_peer_remove(ixfer_agent *agent, uint64_t peer)
{
    if (!agent)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = malloc(sizeof *s);
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    /* Done by the progress thread, which alone posts to the peer; waiting
     * for it (briefly: it never blocks while submissions are queued) means
     * that the handle can be reused as soon as this returns. */
    int done = 0;
    *s = (struct submission){.kind = SUBMIT_REMOVE_PEER, .peer = peer, .done = &done};
    ixfer_submit(agent, s);
    pthread_mutex_lock(&agent->submit_lock);
    while (!done)
        pthread_cond_wait(&agent->submit_done, &agent->submit_lock);
    pthread_mutex_unlock(&agent->submit_lock);
    return IXFER_OK;
}

int32_t ixfer_xfer_post(ixfer_agent *agent, uint32_t op, uint64_t peer,
                        const ixfer_iov_pair *pairs, uint32_t count, uint64_t user_id,
                        const uint8_t *notif, uint64_t notif_len, uint32_t flags)
{
    int notify = (flags & IXFER_POST_NOTIFY) != 0;
    if (!agent || (!pairs && count) || (notify && !notif && notif_len))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (op != IXFER_OP_WRITE && op != IXFER_OP_READ)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown operation %u", op);
    /* Each op carries at least one segment; a pair longer than the provider's
     * message size becomes several segments. */
    uint64_t segments = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (!pairs[i].local_mr || pairs[i].local_mr->agent != agent)
            return ixfer_fail(IXFER_ERR_NOT_FOUND, "pair %u has no local registration of "
                                                   "this agent", i);
        if (pairs[i].len)
            segments += 1 + (pairs[i].len - 1) / agent->max_msg_size;
    }
    if (segments > UINT32_MAX)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "transfer needs too many operations");
    /* One allocation: the request, its pairs, then its ops. */
    size_t head = sizeof(struct xfer_request) + (size_t)count * sizeof *pairs;
    struct xfer_request *r = malloc(head + (size_t)segments * sizeof(struct xfer_op));
    struct notif_job *job = notify ? ixfer_notif_job_new(peer, notif, notif_len, 0, 0, r) : NULL;
    struct submission *s = malloc(sizeof *s);
    if (!r || !s || (notify && !job)) {
        free(r);
        free(s);
        ixfer_notif_job_free(job);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    }
    *r = (struct xfer_request){
        .user_id = user_id, .op = op, .peer = peer, .count = count,
        .ops = (struct xfer_op *)((char *)r + head),
        .notif = job, .notif_state = job ? NOTIF_WAITING : NOTIF_NONE,
        /* The receiver counts tagged writes when its provider has CQ data. */
        .tagged = job && op == IXFER_OP_WRITE && agent->caps.cq_data_size > 0};
    if (count)
        memcpy(r->pairs, pairs, (size_t)count * sizeof *pairs);
    *s = (struct submission){.kind = SUBMIT_POST, .req = r};
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_xfer_cancel(ixfer_agent *agent, uint64_t user_id, int32_t status)
{
    if (!agent)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (status >= 0)
        status = IXFER_ERR_CANCELED;
    struct submission *s = malloc(sizeof *s);
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    *s = (struct submission){.kind = SUBMIT_CANCEL, .user_id = user_id, .cancel_status = status};
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_notify(ixfer_agent *agent, uint64_t peer, const uint8_t *data, uint64_t len,
                     uint64_t seq, uint64_t user_id)
{
    if (!agent || (!data && len))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = malloc(sizeof *s);
    struct notif_job *job = ixfer_notif_job_new(peer, data, len, seq, user_id, NULL);
    if (!s || !job) {
        free(s);
        ixfer_notif_job_free(job);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory for a notification of %llu bytes",
                          (unsigned long long)len);
    }
    *s = (struct submission){.kind = SUBMIT_NOTIFY, .job = job};
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_notif_forget(ixfer_agent *agent, const char *name)
{
    if (!agent || !name)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = malloc(sizeof *s);
    char *copy = strdup(name);
    if (!s || !copy) {
        free(s);
        free(copy);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    }
    *s = (struct submission){.kind = SUBMIT_FORGET, .name = copy};
    ixfer_submit(agent, s);
    return IXFER_OK;
}
