/* The ABI calls that hand work to the progress thread: each checks its
 * arguments on the caller's thread, copies what it needs into a submission
 * and queues it (progress.c); only a small transfer posted while the thread
 * is not working is posted here, on the caller's thread. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "net/mr.h"
#include "net/notify.h"
#include "net/peer.h"
#include "net/progress.h"

int32_t ixfer_peer_insert(ixfer_agent *agent, const uint8_t *addr, uint64_t len, uint64_t *peer)
{
    return ixfer_peer_insert_rails(agent, addr, &len, 1, peer);
}

int32_t ixfer_peer_insert_rails(ixfer_agent *agent, const uint8_t *addrs, const uint64_t *lens,
                                uint32_t count, uint64_t *peer)
{
    if (!agent || !addrs || !lens || !peer)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (count == 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "a peer needs at least one address");
    uint32_t nrails = count < agent->net_rails ? count : agent->net_rails;
    uint64_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        int32_t rc = ixfer_peer_addr_check(agent, addrs + at, lens[i]);
        if (rc != IXFER_OK)
            return rc;
        at += lens[i];
    }
    uint64_t len = lens[0];
    size_t fa_at = rail_fa_offset(len);
    struct submission *s = calloc(1, sizeof *s + fa_at + nrails * sizeof(fi_addr_t));
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    fi_addr_t fas[IXFER_MAX_RAILS];
    at = 0;
    for (uint32_t i = 0; i < nrails; i++) {
        fas[i] = FI_ADDR_UNSPEC;
        int ret = fi_av_insert(agent->rails[i].av, addrs + at, 1, &fas[i], 0, NULL);
        if (ret != 1 || fas[i] == FI_ADDR_UNSPEC) {
            /* Addresses only enter the AVs: nothing has posted to them yet. */
            for (uint32_t j = 0; j < i; j++)
                fi_av_remove(agent->rails[j].av, &fas[j], 1, 0);
            free(s);
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "the provider rejected a peer address of "
                                                       "%llu bytes (rail %u)",
                              (unsigned long long)lens[i], i);
        }
        at += lens[i];
    }
    /* The progress thread keeps the peer's record (peer.h); queued before any
     * post to it, since submissions are taken in order. */
    s->kind = SUBMIT_ADD_PEER;
    s->peer = fas[0];
    s->addr_len = len;
    s->nrails = nrails;
    memcpy(s->addr, addrs, len);
    memcpy(s->addr + fa_at, fas, nrails * sizeof(fi_addr_t));
    ixfer_submit(agent, s);
    *peer = fas[0];
    return IXFER_OK;
}

int32_t ixfer_peer_insert_shm(ixfer_agent *agent, uint64_t peer, const uint8_t *addr,
                              uint64_t len)
{
    if (!agent || !addr)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (!agent->shm_rail)
        return ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "the agent has no shm rail");
    /* shm reads its addresses as text up to the NUL. */
    if (len == 0 || len > 4096 || memchr(addr, 0, len) != addr + len - 1)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "an shm address must be NUL-terminated text "
                                                   "of at most 4096 bytes");
    struct submission *s = calloc(1, sizeof *s);
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    fi_addr_t fa = FI_ADDR_UNSPEC;
    int ret = fi_av_insert(agent->rails[agent->shm_rail].av, addr, 1, &fa, 0, NULL);
    if (ret != 1 || fa == FI_ADDR_UNSPEC) {
        free(s);
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "shm rejected the peer's shm address '%s'",
                          (const char *)addr);
    }
    s->kind = SUBMIT_SHM_PEER;
    s->peer = peer;
    s->shm_fa = fa;
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_peer_remove(ixfer_agent *agent, uint64_t peer)
{
    if (!agent)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = calloc(1, sizeof *s);
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    /* Done by the progress thread, which alone posts to the peer; waiting
     * for it (briefly: it never blocks while submissions are queued) means
     * that the handle can be reused as soon as this returns. */
    int done = 0;
    s->kind = SUBMIT_REMOVE_PEER;
    s->peer = peer;
    s->done = &done;
    ixfer_submit(agent, s);
    pthread_mutex_lock(&agent->submit_lock);
    while (!done)
        pthread_cond_wait(&agent->submit_done, &agent->submit_lock);
    pthread_mutex_unlock(&agent->submit_lock);
    return IXFER_OK;
}

/* Copies count pairs to out, a run of pairs contiguous on both sides (same
 * local registration and remote key) becoming one pair: block lists such as
 * vLLM's are often such runs, and one long pair posts as few ops as the
 * provider's message size allows instead of one per iov limit of pairs.
 * 0-byte pairs are dropped. Order is kept; returns the number of pairs written. */
static uint32_t merge_pairs(ixfer_iov_pair *out, const ixfer_iov_pair *pairs, uint32_t count)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < count; i++) {
        /* A 0-byte pair moves nothing, and no op is counted for it. */
        if (!pairs[i].len)
            continue;
        ixfer_iov_pair *last = m ? &out[m - 1] : NULL;
        if (last && last->local_mr == pairs[i].local_mr &&
            last->flags == pairs[i].flags &&
            last->remote_key == pairs[i].remote_key &&
            last->local_addr + last->len == pairs[i].local_addr &&
            last->remote_addr + last->len == pairs[i].remote_addr)
            last->len += pairs[i].len;
        else
            out[m++] = pairs[i];
    }
    return m;
}

int32_t ixfer_xfer_post(ixfer_agent *agent, uint32_t op, uint64_t peer,
                        const ixfer_iov_pair *pairs, uint32_t count, uint64_t user_id,
                        const uint8_t *notif, uint64_t notif_len, uint32_t flags)
{
    int notify = (flags & IXFER_POST_NOTIFY) != 0;
    if (flags & ~(uint32_t)(IXFER_POST_NOTIFY | IXFER_POST_NETWORK))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown post flags 0x%x", flags);
    if (!agent || (!pairs && count) || (notify && !notif && notif_len))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (op != IXFER_OP_WRITE && op != IXFER_OP_READ)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "unknown operation %u", op);
    /* Each op carries at least one segment; a pair longer than the provider's
     * message size becomes several segments. */
    uint64_t segments = 0, bytes = 0;
    int staged = 0, net = (flags & IXFER_POST_NETWORK) != 0;
    for (uint32_t i = 0; i < count; i++) {
        if (!pairs[i].local_mr || pairs[i].local_mr->agent != agent)
            return ixfer_fail(IXFER_ERR_NOT_FOUND, "pair %u has no local registration of "
                                                   "this agent", i);
        if (pairs[i].flags & ~(uint32_t)IXFER_PAIR_REMOTE_STAGED)
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "pair %u has unknown flags 0x%x", i,
                              pairs[i].flags);
        staged |= pairs[i].local_mr->staged || (pairs[i].flags & IXFER_PAIR_REMOTE_STAGED);
        /* Device memory is not registered on the shm rail (mr.c). */
        net |= pairs[i].local_mr->dev >= 0;
        if (pairs[i].len)
            segments += 1 + (pairs[i].len - 1) / agent->max_msg_size;
        bytes += pairs[i].len;
    }
    /* Striping cuts the transfer into at most one piece per rail, each cut
     * splitting at most one op in two. */
    segments += agent->nrails > 1 ? agent->nrails : 0;
    if (segments > UINT32_MAX)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "transfer needs too many operations");
    /* One allocation: the request, its pairs, then its ops. */
    size_t head = sizeof(struct xfer_request) + (size_t)count * sizeof *pairs;
    struct xfer_request *r = malloc(head + (size_t)segments * sizeof(struct xfer_op));
    struct notif_job *job = notify ? ixfer_notif_job_new(peer, notif, notif_len, 0, 0) : NULL;
    struct submission *s = calloc(1, sizeof *s);
    if (!r || !s || (notify && !job)) {
        free(r);
        free(s);
        ixfer_notif_job_free(job);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    }
    *r = (struct xfer_request){
        .op = op, .peer = peer, .ops = (struct xfer_op *)((char *)r + head), .bytes = bytes,
        .notif = job, .notif_state = job ? NOTIF_WAITING : NOTIF_NONE, .staged = staged, .net = net,
        /* The receiver counts tagged writes when its provider has CQ data;
         * a staged transfer's notification goes once every piece is done. */
        .tagged = job && op == IXFER_OP_WRITE && agent->caps.cq_data_size > 0 && !staged};
    ixfer_request_init(&r->base, user_id, merge_pairs(r->pairs, pairs, count));
    r->last_pair = r->base.count;
    for (uint32_t i = r->base.count; i-- > 0;)
        if (r->pairs[i].len) {
            r->last_pair = i;
            break;
        }
    if (ixfer_progress_try_post(agent, r)) {
        free(s);
        return IXFER_OK;
    }
    s->kind = SUBMIT_POST;
    s->req = r;
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_xfer_cancel(ixfer_agent *agent, uint64_t user_id, int32_t status)
{
    if (!agent)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = calloc(1, sizeof *s);
    if (!s)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    s->kind = SUBMIT_CANCEL;
    s->user_id = user_id;
    s->cancel_status = ixfer_cancel_status(status);
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_notify(ixfer_agent *agent, uint64_t peer, const uint8_t *data, uint64_t len,
                     uint64_t seq, uint64_t user_id)
{
    if (!agent || (!data && len))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = calloc(1, sizeof *s);
    struct notif_job *job = ixfer_notif_job_new(peer, data, len, seq, user_id);
    if (!s || !job) {
        free(s);
        ixfer_notif_job_free(job);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory for a notification of %llu bytes",
                          (unsigned long long)len);
    }
    s->kind = SUBMIT_NOTIFY;
    s->job = job;
    ixfer_submit(agent, s);
    return IXFER_OK;
}

int32_t ixfer_notif_forget(ixfer_agent *agent, const char *name)
{
    if (!agent || !name)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct submission *s = calloc(1, sizeof *s);
    char *copy = strdup(name);
    if (!s || !copy) {
        free(s);
        free(copy);
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    }
    s->kind = SUBMIT_FORGET;
    s->name = copy;
    ixfer_submit(agent, s);
    return IXFER_OK;
}
