/* Notifications over the provider's two-sided messages.
 *
 * A message is cut into fragments of at most FRAG_BYTES, each with a header
 * that names the sender and says where the fragment goes, so the receiver
 * reassembles in any arrival order. Fragments are sent from, and received
 * into, pools of registered slots; receives are reposted as they are used.
 *
 * An attached WRITE notification is held by the receiver until it has
 * counted, among its remote-write completions, the number of writes carrying
 * the message's tag (the writes' CQ data) that the message announces: that is
 * what proves the data landed, whatever order the provider delivers in. Each
 * write the sender first posted lands at most once, and a piece posted again
 * after its rail broke (progress.c) carries no tag, since its first attempt
 * may have landed too: then the sender, once every piece completed, sends a
 * release (NF_RELEASE) for the tag, which frees the notification whatever
 * the count.
 *
 * Everything here runs on the progress thread (or before it starts, or after
 * it stopped) but the job constructor and destructor, and the ixfer_notif_*
 * calls at the end, which read counters or free what was delivered. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/list.h"
#include "net/fabric_api.h"
#include "net/mr.h"
#include "net/notify.h"
#include "net/peer.h"
#include "net/rail_worker.h"

#define SEND_SLOTS 64
#define RECV_SLOTS 64
#define DROPPED_IDS 64
#define TAG_BUCKETS 1024
#define SWEEP_NS 250000000ull
#define MAX_IDLE_SENDERS 256
/* A peer inventing instance numbers must not grow memory: past this many
 * senders, the least recently active one makes room (evict_sender). */
#define MAX_SENDERS 1024
/* All senders together may hold this many times the per-sender cap. */
#define TOTAL_CAP_FACTOR 16

/* NF_WITHDRAWN: a header-only fragment saying the sender gave the message up
 * (canceled), so that the receiver frees what arrived and does not hold later
 * ordered messages for its turn. NF_CONTROL: a one-fragment message for the
 * agent itself (staging.c's requests and replies), never delivered.
 * NF_RELEASE: a one-fragment message saying the writes of its tag are all in
 * place. */
enum { NF_ORDERED = 1, NF_WITHDRAWN = 2, NF_CONTROL = 4, NF_RELEASE = 8 };

/* Room for payload in one fragment from a sender with a name of name_len. */
static uint64_t frag_room(uint32_t name_len) { return FRAG_BYTES - HDR_BYTES - name_len; }

/* Fragment header, little-endian:
 *   0 u32 magic   4 u8 version   5 u8 flags   6 u8 name_len   7 u8 zero
 *   8 u64 sender instance   16 u64 message id   24 u64 seq (ordered only)
 *  32 u64 total length      40 u64 offset of this fragment's payload
 *  48 u64 tag               56 u64 expected tagged writes
 *  64 name, then payload. */

struct notif_job {
    struct ixfer_list link; /* on the send queue until fully posted or stopped */
    fi_addr_t peer;
    struct net_peer *np; /* peer.h; set when queued */
    uint64_t user_id;
    ixfer_notif_sent_fn *on_sent; /* attached: tell the transfer; NULL: push an event */
    void *on_sent_ctx;
    uint64_t msg_id, seq, tag, expected;
    uint64_t len, sent; /* payload bytes, and those handed to the provider */
    uint32_t inflight;  /* fragments posted and not completed */
    int withdrawn;      /* the withdrawal fragment was posted */
    int control;        /* NF_CONTROL */
    int release;        /* NF_RELEASE */
    int32_t status, fi_errno;
    int32_t cancel_status;
    uint8_t data[];
};

struct send_slot {
    struct op_ctx ctx;
    struct ixfer_list link; /* on the free slots while not posted */
    struct notif_job *job;
    uint8_t *buf;
};

struct recv_slot {
    struct op_ctx ctx;
    struct ixfer_list link; /* on the unposted slots */
    uint8_t *buf;
};

struct sender;

/* A message being reassembled, waiting for its data, or waiting its turn. */
struct inbound {
    struct ixfer_list link; /* on its sender's partial or held list */
    struct sender *from;
    uint64_t id, seq, tag, expected, total, cost, last_ns;
    uint64_t frags_left; /* fragments not yet received */
    uint8_t flags;
    ixfer_notification *rec; /* NULL: a dropped ordered message's place */
    uint8_t seen[];          /* a bit per fragment: duplicates are refused */
};

struct sender {
    struct ixfer_list link; /* on the senders, most recently active first */
    struct notify_state *state;
    char name[IXFER_SENDER_MAX];
    uint32_t name_len;
    uint64_t instance;
    uint64_t pending;     /* bytes held for this sender, against the cap */
    uint64_t next_seq; /* the sender numbers its standalone messages to us from 1 */
    struct ixfer_list partial; /* messages being reassembled, newest first */
    struct ixfer_list held;    /* complete ordered messages, sorted by seq */
    uint64_t dropped[DROPPED_IDS];
    uint32_t dropped_pos;
    uint64_t last_ns;
};

struct tag_entry {
    struct ixfer_list link; /* in its bucket */
    uint64_t tag, count, last_ns;
    int released;        /* the sender said the writes are all in place */
    struct inbound *msg; /* complete message waiting for its writes */
};

struct notify_state {
    struct fid_mr *mr;
    void *desc;
    uint8_t *mem;
    struct send_slot send[SEND_SLOTS];
    struct recv_slot recv[RECV_SLOTS];
    struct ixfer_list free_send; /* struct send_slot */
    struct ixfer_list unposted;  /* struct recv_slot */
    struct ixfer_list queue;     /* struct notif_job, in sending order */
    uint64_t instance, next_msg_id, next_tag, tag_mask;
    uint64_t cap, total_cap;
    uint64_t stale_ns, last_sweep_ns;
    struct ixfer_list senders;
    uint32_t nsenders;
    struct ixfer_list tags[TAG_BUCKETS]; /* struct tag_entry */
    _Atomic uint64_t malformed;
    _Atomic uint64_t pending; /* all senders' pending bytes, for ixfer_notif_pending */
};

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ---- jobs ----------------------------------------------------------------- */

struct notif_job *ixfer_notif_job_new(fi_addr_t peer, const uint8_t *data, uint64_t len,
                                      uint64_t seq, uint64_t user_id)
{
    if (len > SIZE_MAX - sizeof(struct notif_job))
        return NULL;
    struct notif_job *job = malloc(sizeof *job + len);
    if (!job)
        return NULL;
    *job = (struct notif_job){.peer = peer, .user_id = user_id, .seq = seq, .len = len};
    if (len)
        memcpy(job->data, data, len);
    return job;
}

void ixfer_notif_job_free(struct notif_job *job) { free(job); }

void ixfer_notif_job_attach(struct notif_job *job, ixfer_notif_sent_fn *sent, void *ctx)
{
    job->on_sent = sent;
    job->on_sent_ctx = ctx;
}

void ixfer_notif_job_control(struct notif_job *job) { job->control = 1; }

struct notif_job *ixfer_notif_job_release(fi_addr_t peer, uint64_t tag)
{
    static const uint8_t nothing = 0;
    struct notif_job *job = ixfer_notif_job_new(peer, &nothing, 1, 0, 0);
    if (job) {
        job->release = 1;
        job->tag = tag;
    }
    return job;
}

static void nudge_sent(struct ixfer_agent *a, void *ctx, int32_t status, int32_t fi_errno)
{
    (void)a, (void)ctx, (void)status, (void)fi_errno;
}

void ixfer_notify_nudge(struct ixfer_agent *a, fi_addr_t peer)
{
    static const uint8_t nothing = 0;
    struct notif_job *job = ixfer_notif_job_new(peer, &nothing, 1, 0, 0);
    if (!job)
        return; /* only latency is lost */
    ixfer_notif_job_attach(job, nudge_sent, NULL);
    ixfer_notif_job_control(job);
    ixfer_notify_enqueue(a, job);
}

void ixfer_notif_job_expect(struct notif_job *job, uint64_t tag, uint64_t expected)
{
    job->tag = tag;
    job->expected = expected;
}

static void job_finish(struct ixfer_agent *a, struct notif_job *job)
{
    int32_t status = job->status != IXFER_OK ? job->status : job->cancel_status;
    if (job->on_sent) {
        job->on_sent(a, job->on_sent_ctx, status, job->fi_errno);
    } else {
        ixfer_event ev = {.user_id = job->user_id, .type = IXFER_EVENT_XFER_DONE,
                          .status = status, .fi_errno = job->fi_errno};
        ixfer_events_push(&a->events, &ev);
    }
    ixfer_peer_unref(a, job->np);
    free(job);
}

static int job_stopped(const struct notif_job *job)
{
    return job->status != IXFER_OK || job->cancel_status;
}

void ixfer_notify_enqueue(struct ixfer_agent *a, struct notif_job *job)
{
    struct notify_state *n = a->notify;
    job->msg_id = ++n->next_msg_id;
    job->np = ixfer_peer_find(a, job->peer);
    ixfer_peer_ref(job->np);
    ixfer_list_push_back(&n->queue, &job->link);
}

uint64_t ixfer_notify_next_tag(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    /* With 8 bytes of CQ data the sender's instance is in the high half, so
     * concurrent senders cannot collide; with 4 (EFA) collisions need two
     * live transfers 2^32 tags apart. */
    for (;;) {
        uint64_t t = ++n->next_tag;
        uint64_t tag = n->tag_mask > 0xffffffffull ? ((n->instance << 32) | (t & 0xffffffffull))
                                                   : ((n->instance + t) & n->tag_mask);
        if (tag) /* 0 is a WRITE's CQ data that only wakes a polled target */
            return tag;
    }
}

/* ---- sending ---------------------------------------------------------------- */

static void write_header(const struct ixfer_agent *a, const struct notif_job *job, uint8_t *h,
                         uint64_t offset, uint8_t flags)
{
    const struct notify_state *n = a->notify;
    uint32_t magic = NOTIF_MAGIC;
    memcpy(h, &magic, 4);
    h[4] = NOTIF_VERSION;
    h[5] = (job->on_sent ? 0 : NF_ORDERED) | (job->control ? NF_CONTROL : 0) |
           (job->release ? NF_RELEASE : 0) | flags;
    h[6] = (uint8_t)a->name_len;
    h[7] = 0;
    put64(h + 8, n->instance);
    put64(h + 16, job->msg_id);
    put64(h + 24, job->seq);
    put64(h + 32, job->len);
    put64(h + 40, offset);
    put64(h + 48, job->tag);
    put64(h + 56, job->expected);
    memcpy(h + HDR_BYTES, a->name, a->name_len);
}

/* Posts one fragment of job from a free slot: chunk payload bytes at the
 * job's send offset. Returns 0, -FI_EAGAIN (no slot, or the provider is
 * full), or another error, recorded in the job. */
static int post_fragment(struct ixfer_agent *a, struct notif_job *job, uint64_t chunk,
                         uint8_t flags)
{
    struct notify_state *n = a->notify;
    struct send_slot *slot = ixfer_list_entry(ixfer_list_first(&n->free_send), struct send_slot, link);
    if (!slot)
        return -FI_EAGAIN;
    write_header(a, job, slot->buf, job->sent, flags);
    size_t head = HDR_BYTES + a->name_len;
    memcpy(slot->buf + head, job->data + job->sent, chunk);
    ssize_t ret = fi_send(a->ep, slot->buf, head + chunk, n->desc, job->peer, slot);
    if (ret == -FI_EAGAIN) {
        ixfer_peer_refused(job->np);
        return -FI_EAGAIN;
    }
    if (ret) {
        job->status = ixfer_status_of((int)-ret);
        job->fi_errno = (int32_t)-ret;
        return (int)ret;
    }
    ixfer_rail_worker_nudge(a, 0);
    ixfer_list_remove(&slot->link);
    slot->job = job;
    job->inflight++;
    ixfer_peer_posted(job->np);
    return 0;
}

/* Posts fragments of job while slots last. Returns -FI_EAGAIN when the
 * provider or the slot pool ran out, 0 otherwise. */
static int post_job(struct ixfer_agent *a, struct notif_job *job)
{
    uint64_t room = frag_room(a->name_len);
    /* Nothing, not even a withdrawal, goes to a removed or gone peer. */
    int32_t st = ixfer_peer_may_post(job->np);
    if (st != IXFER_OK) {
        if (!job->cancel_status)
            job->cancel_status = st;
        return 0;
    }
    /* A canceled ordered message still takes its place in the order: say so
     * (a removed peer is gone, and a failed send means the connection is). */
    if (!job->on_sent && job->cancel_status && job->status == IXFER_OK && !job->withdrawn &&
        job->cancel_status != IXFER_ERR_REMOTE_DISCONNECT) {
        int ret = post_fragment(a, job, 0, NF_WITHDRAWN);
        if (ret == -FI_EAGAIN)
            return ret;
        job->withdrawn = 1;
        return 0;
    }
    /* A message of zero bytes is one header-only fragment. */
    while (!job_stopped(job) && !(job->sent == job->len && (job->len || job->inflight))) {
        uint64_t chunk = job->len - job->sent < room ? job->len - job->sent : room;
        int ret = post_fragment(a, job, chunk, 0);
        if (ret == -FI_EAGAIN)
            return ret;
        if (ret)
            break;
        job->sent += chunk;
    }
    return 0;
}

static int send_pass(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    struct blocked_peers blocked = {.n = 0};
    int stalled = 0;
    IXFER_LIST_FOR_EACH_SAFE(node, &n->queue) {
        struct notif_job *job = ixfer_container_of(node, struct notif_job, link);
        int skip = peer_blocked(&blocked, job->peer);
        if (!skip && post_job(a, job) == -FI_EAGAIN) {
            stalled = 1;
            /* No slot left: later jobs need slots too. */
            if (ixfer_list_empty(&n->free_send) || block_peer(&blocked, job->peer))
                break;
            skip = 1;
        }
        if (skip)
            continue;
        /* Fully posted or stopped: it leaves the queue; its last slot
         * completion finishes it. */
        ixfer_list_remove(&job->link);
        if (!job->inflight)
            job_finish(a, job);
    }
    return stalled;
}

static void send_done(struct ixfer_agent *a, struct send_slot *slot, int fi_err)
{
    struct notify_state *n = a->notify;
    struct notif_job *job = slot->job;
    slot->job = NULL;
    ixfer_list_push_front(&n->free_send, &slot->link);
    if (fi_err && job->status == IXFER_OK) {
        job->status = ixfer_status_of(fi_err);
        job->fi_errno = fi_err;
    }
    job->inflight--;
    ixfer_peer_op_done(job->np, fi_err);
    if (!job->inflight && !ixfer_list_linked(&job->link))
        job_finish(a, job);
}

void ixfer_notify_cancel(struct ixfer_agent *a, uint64_t user_id, int32_t status)
{
    IXFER_LIST_FOR_EACH(node, &a->notify->queue) {
        struct notif_job *job = ixfer_container_of(node, struct notif_job, link);
        if (!job->on_sent && job->user_id == user_id) {
            if (!job->cancel_status)
                job->cancel_status = status;
            return;
        }
    }
}

void ixfer_notify_remove_peer(struct ixfer_agent *a, fi_addr_t peer)
{
    IXFER_LIST_FOR_EACH(node, &a->notify->queue) {
        struct notif_job *job = ixfer_container_of(node, struct notif_job, link);
        if (job->peer == peer && !job->cancel_status)
            job->cancel_status = IXFER_ERR_REMOTE_DISCONNECT;
    }
}

/* ---- receiving ---------------------------------------------------------------- */

static void deliver(struct ixfer_agent *a, ixfer_notification *rec)
{
    ixfer_event ev = {.user_id = (uint64_t)(uintptr_t)rec, .type = IXFER_EVENT_NOTIF,
                      .status = rec->status};
    ixfer_events_push(&a->events, &ev);
}

/* Reports a message that will not be delivered. */
static void report_drop(struct ixfer_agent *a, const struct sender *s, uint64_t len,
                        int32_t status)
{
    ixfer_notification *rec = malloc(sizeof *rec);
    if (!rec)
        return;
    rec->len = len;
    rec->status = status;
    rec->name_len = s->name_len;
    memcpy(rec->name, s->name, s->name_len);
    deliver(a, rec);
}

/* Gives m's bytes back to its sender's allowance. */
static void unaccount(struct inbound *m)
{
    if (m->from && m->cost) {
        m->from->pending -= m->cost;
        atomic_fetch_sub(&m->from->state->pending, m->cost);
    }
    m->cost = 0;
}

static void release(struct inbound *m)
{
    unaccount(m);
    free(m->rec);
    free(m);
}

static void remember_dropped(struct sender *s, uint64_t id)
{
    s->dropped[s->dropped_pos++ % DROPPED_IDS] = id;
}

static int was_dropped(const struct sender *s, uint64_t id)
{
    for (int i = 0; i < DROPPED_IDS; i++)
        if (s->dropped[i] == id)
            return 1;
    return 0;
}

/* Hands m's record (if any: a dropped place has none) to the application and
 * frees m. Its bytes leave the pending count first, so that an application
 * reading ixfer_notif_pending on the event sees them gone. */
static void deliver_message(struct ixfer_agent *a, struct inbound *m)
{
    unaccount(m);
    if (m->rec)
        deliver(a, m->rec);
    m->rec = NULL;
    release(m);
}

/* Delivers held ordered messages from next_seq on, skipping dropped places. */
static void flush_held(struct ixfer_agent *a, struct sender *s)
{
    struct inbound *m;
    while ((m = ixfer_list_entry(ixfer_list_first(&s->held), struct inbound, link)) &&
           m->seq <= s->next_seq) {
        ixfer_list_remove(&m->link);
        if (m->seq == s->next_seq)
            s->next_seq++;
        deliver_message(a, m);
    }
}

static void hold(struct sender *s, struct inbound *m)
{
    struct ixfer_list *pos = &s->held; /* the head: at the back */
    IXFER_LIST_FOR_EACH(node, &s->held)
        if (ixfer_container_of(node, struct inbound, link)->seq >= m->seq) {
            pos = node;
            break;
        }
    ixfer_list_insert_before(pos, &m->link);
}

/* An ordered message that is complete (rec set) or dropped (rec NULL). */
static void ordered_ready(struct ixfer_agent *a, struct sender *s, struct inbound *m)
{
    if (m->seq < s->next_seq) { /* late: its place was already given up */
        deliver_message(a, m);
        return;
    }
    hold(s, m);
    flush_held(a, s);
}

static struct tag_entry *tag_find(struct notify_state *n, uint64_t tag)
{
    IXFER_LIST_FOR_EACH(node, &n->tags[(tag ^ (tag >> 32)) % TAG_BUCKETS]) {
        struct tag_entry *t = ixfer_container_of(node, struct tag_entry, link);
        if (t->tag == tag)
            return t;
    }
    return NULL;
}

static struct tag_entry *tag_get(struct notify_state *n, uint64_t tag)
{
    struct tag_entry *t = tag_find(n, tag);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->tag = tag;
        ixfer_list_push_back(&n->tags[(tag ^ (tag >> 32)) % TAG_BUCKETS], &t->link);
    }
    t->last_ns = ixfer_now_ns();
    return t;
}

static void tag_remove(struct notify_state *n, uint64_t tag)
{
    struct tag_entry *t = tag_find(n, tag);
    if (t) {
        ixfer_list_remove(&t->link);
        free(t);
    }
}

/* A complete message: deliver it now, or hold it for its writes or its turn. */
static void complete(struct ixfer_agent *a, struct sender *s, struct inbound *m)
{
    struct notify_state *n = a->notify;
    if (m->expected) {
        uint64_t tag = m->tag & n->tag_mask;
        struct tag_entry *t = tag_get(n, tag);
        if (!t) { /* out of memory: it cannot be held until its data is there */
            uint64_t total = m->total;
            release(m); /* before the report, as in drop_partial */
            report_drop(a, s, total, IXFER_ERR_BACKEND);
            return;
        }
        if (t->msg) { /* two messages claim one tag: keep the first */
            atomic_fetch_add(&n->malformed, 1);
            release(m);
            return;
        }
        if (t->count < m->expected && !t->released) {
            t->msg = m;
            return;
        }
        tag_remove(n, tag);
    }
    if (m->flags & NF_ORDERED) {
        ordered_ready(a, s, m);
        return;
    }
    deliver_message(a, m);
}

/* A tagged write landed (released 0), or the sender released the tag. */
static void tag_event(struct ixfer_agent *a, uint64_t tag, int released)
{
    struct notify_state *n = a->notify;
    struct tag_entry *t = tag_get(n, tag & n->tag_mask);
    if (!t)
        return;
    t->count += !released;
    t->released |= released;
    if (t->msg && (t->released || t->count >= t->msg->expected)) {
        struct inbound *m = t->msg;
        tag_remove(n, t->tag);
        m->expected = 0;
        complete(a, m->from, m);
    }
}

void ixfer_notify_remote_write(struct ixfer_agent *a, uint64_t data) { tag_event(a, data, 0); }

static void free_sender_messages(struct ixfer_agent *a, struct sender *s);

/* Makes room for a new sender: forgets the least recently active one that
 * holds nothing (only its ordering state is lost) or, when every sender
 * holds something, the least recently active one, dropping and reporting
 * its unfinished messages. Active senders stay at the front of the list, so
 * a flood of invented senders evicts its own. */
static void evict_sender(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    struct sender *victim = NULL;
    IXFER_LIST_FOR_EACH_REVERSE(node, &n->senders) {
        struct sender *s = ixfer_container_of(node, struct sender, link);
        if (ixfer_list_empty(&s->partial) && ixfer_list_empty(&s->held) && !s->pending) {
            victim = s;
            break;
        }
    }
    if (!victim)
        victim = ixfer_list_entry(ixfer_list_last(&n->senders), struct sender, link);
    if (!victim)
        return;
    ixfer_list_remove(&victim->link);
    IXFER_LIST_FOR_EACH(node, &victim->partial)
        report_drop(a, victim, ixfer_container_of(node, struct inbound, link)->total,
                    IXFER_ERR_NOT_ALLOWED);
    free_sender_messages(a, victim);
    free(victim);
    n->nsenders--;
}

static struct sender *sender_get(struct ixfer_agent *a, const char *name, uint32_t name_len,
                                 uint64_t instance)
{
    struct notify_state *n = a->notify;
    IXFER_LIST_FOR_EACH(node, &n->senders) {
        struct sender *s = ixfer_container_of(node, struct sender, link);
        if (s->instance == instance && s->name_len == name_len && !memcmp(s->name, name, name_len)) {
            /* to the front: a few senders are usually busy */
            ixfer_list_remove(&s->link);
            ixfer_list_push_front(&n->senders, &s->link);
            s->last_ns = ixfer_now_ns();
            return s;
        }
    }
    if (n->nsenders >= MAX_SENDERS)
        evict_sender(a);
    struct sender *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    memcpy(s->name, name, name_len);
    s->name_len = name_len;
    s->instance = instance;
    s->state = n;
    s->next_seq = 1;
    s->last_ns = ixfer_now_ns();
    ixfer_list_init(&s->partial);
    ixfer_list_init(&s->held);
    ixfer_list_push_front(&n->senders, &s->link);
    n->nsenders++;
    return s;
}

/* The sender gave message id up: free what arrived of it (m, on its partial
 * list, or NULL) and give up its place in the order, without reporting a drop. */
static void withdraw(struct ixfer_agent *a, struct sender *s, struct inbound *m, uint64_t id,
                     uint64_t seq, uint8_t flags)
{
    remember_dropped(s, id);
    if (m) {
        ixfer_list_remove(&m->link);
        free(m->rec);
        m->rec = NULL;
        unaccount(m);
    } else if (flags & NF_ORDERED) {
        m = calloc(1, sizeof *m);
        if (!m)
            return; /* its place is given up when it goes stale */
        m->seq = seq;
        m->last_ns = ixfer_now_ns();
    } else {
        return;
    }
    if (flags & NF_ORDERED)
        ordered_ready(a, s, m);
    else
        free(m);
}

/* Gives up message id of s on arrival (over a cap, or out of memory). */
static void refuse(struct ixfer_agent *a, struct sender *s, uint64_t id, uint64_t seq,
                   uint8_t flags, uint64_t total, int32_t status)
{
    remember_dropped(s, id);
    report_drop(a, s, total, status);
    if (flags & NF_ORDERED) { /* its place in the order stays, empty */
        struct inbound *gap = calloc(1, sizeof *gap);
        if (gap) {
            gap->seq = seq;
            gap->last_ns = ixfer_now_ns();
            ordered_ready(a, s, gap);
        }
    }
}

/* A new message, sized from its first fragment's header; NULL if refused. */
static struct inbound *start_message(struct ixfer_agent *a, struct sender *s, const uint8_t *h,
                                     uint64_t id, uint64_t total)
{
    struct notify_state *n = a->notify;
    uint8_t flags = h[5];
    uint64_t seq = get64(h + 24);
    uint64_t room = frag_room(s->name_len);
    uint64_t frags = total ? (total + room - 1) / room : 1;
    uint64_t cost = sizeof(ixfer_notification) + total; /* total <= cap < 2^62 below */
    if (total > n->cap || cost > n->cap - s->pending ||
        cost > n->total_cap - atomic_load(&n->pending)) {
        refuse(a, s, id, seq, flags, total, IXFER_ERR_NOT_ALLOWED);
        return NULL;
    }
    struct inbound *m = calloc(1, sizeof *m + (frags + 7) / 8);
    /* Zeroed: nothing of the heap's old contents can reach the application. */
    ixfer_notification *rec = m ? calloc(1, cost) : NULL;
    if (!rec) {
        free(m);
        refuse(a, s, id, seq, flags, total, IXFER_ERR_BACKEND);
        return NULL;
    }
    rec->len = total;
    rec->status = IXFER_OK;
    rec->name_len = s->name_len;
    memcpy(rec->name, s->name, s->name_len);
    *m = (struct inbound){.from = s, .id = id, .seq = seq, .tag = get64(h + 48),
                          .expected = get64(h + 56), .total = total, .cost = cost,
                          .frags_left = frags, .flags = flags, .rec = rec};
    s->pending += cost;
    atomic_fetch_add(&n->pending, cost);
    ixfer_list_push_front(&s->partial, &m->link);
    return m;
}

/* One received fragment. Everything in it is untrusted: it must match the
 * fragmentation the protocol defines (fixed room per fragment, given the
 * sender's name) and the message its first fragment announced. */
static void fragment(struct ixfer_agent *a, const uint8_t *buf, uint64_t len)
{
    struct notify_state *n = a->notify;
    uint32_t magic;
    if (len < HDR_BYTES)
        goto malformed;
    memcpy(&magic, buf, 4);
    uint32_t name_len = buf[6];
    uint64_t head = HDR_BYTES + name_len;
    uint8_t flags = buf[5];
    if (magic != NOTIF_MAGIC || buf[4] != NOTIF_VERSION || name_len == 0 || len < head ||
        (flags & ~(NF_ORDERED | NF_WITHDRAWN | NF_CONTROL | NF_RELEASE)))
        goto malformed;
    uint64_t id = get64(buf + 16), seq = get64(buf + 24), total = get64(buf + 32);
    uint64_t off = get64(buf + 40), chunk = len - head, room = frag_room(name_len);
    if (flags & NF_CONTROL) {
        if (flags != NF_CONTROL || off || chunk != total || !a->on_control)
            goto malformed;
        /* A nudge: the peer is about to use our shm rail, whose worker may
         * sleep without a timeout (rail_worker.c). */
        if (a->shm_rail && chunk == 1 && buf[head] == 0)
            ixfer_rail_worker_nudge(a, a->shm_rail);
        a->on_control(a, buf + head, chunk);
        return;
    }
    if (flags & NF_RELEASE) {
        if (flags != NF_RELEASE || off || chunk != total || !get64(buf + 48))
            goto malformed;
        tag_event(a, get64(buf + 48), 1);
        return;
    }
    if (!(flags & NF_WITHDRAWN) &&
        (off > total || off % room || chunk != (total - off < room ? total - off : room)))
        goto malformed;
    struct sender *s = sender_get(a, (const char *)buf + HDR_BYTES, name_len, get64(buf + 8));
    if (!s)
        goto malformed;
    if (was_dropped(s, id))
        return;
    struct inbound *m = NULL;
    IXFER_LIST_FOR_EACH(node, &s->partial)
        if (ixfer_container_of(node, struct inbound, link)->id == id) {
            m = ixfer_container_of(node, struct inbound, link);
            break;
        }
    if (flags & NF_WITHDRAWN) {
        withdraw(a, s, m, id, seq, flags);
        return;
    }
    if (!m) {
        m = start_message(a, s, buf, id, total);
        if (!m)
            return;
    } else if (total != m->total || flags != m->flags || seq != m->seq ||
               get64(buf + 48) != m->tag || get64(buf + 56) != m->expected) {
        goto malformed; /* contradicts the message's first fragment */
    }
    uint64_t index = off / room;
    if (m->seen[index / 8] & (1u << (index % 8)))
        goto malformed; /* a duplicate */
    m->seen[index / 8] |= (uint8_t)(1u << (index % 8));
    memcpy(m->rec->data + off, buf + head, chunk);
    m->last_ns = ixfer_now_ns();
    if (--m->frags_left)
        return;
    ixfer_list_remove(&m->link);
    complete(a, s, m);
    return;
malformed:
    atomic_fetch_add(&n->malformed, 1);
}

static void repost(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    struct ixfer_list *node;
    while ((node = ixfer_list_first(&n->unposted))) {
        struct recv_slot *slot = ixfer_container_of(node, struct recv_slot, link);
        if (fi_recv(a->ep, slot->buf, FRAG_BYTES, n->desc, FI_ADDR_UNSPEC, slot))
            return; /* retried on the next pass */
        ixfer_list_remove(node);
    }
}

void ixfer_notify_completion(struct ixfer_agent *a, struct op_ctx *ctx, uint64_t len, int fi_err)
{
    if (ctx->kind == OP_KIND_SEND) {
        send_done(a, (struct send_slot *)ctx, fi_err);
        return;
    }
    struct recv_slot *slot = (struct recv_slot *)ctx;
    if (fi_err)
        atomic_fetch_add(&a->notify->malformed, fi_err != FI_ECANCELED);
    else
        fragment(a, slot->buf, len);
    ixfer_list_push_front(&a->notify->unposted, &slot->link);
    repost(a);
}

/* ---- stale messages and forgetting ------------------------------------------- */

static void drop_partial(struct ixfer_agent *a, struct sender *s, struct inbound *m,
                         int32_t status)
{
    remember_dropped(s, m->id);
    free(m->rec);
    m->rec = NULL;
    unaccount(m); /* before the report, which the application may act on */
    report_drop(a, s, m->total, status);
    if (m->flags & NF_ORDERED)
        ordered_ready(a, s, m); /* keeps its place, empty */
    else
        free(m);
}

static void sweep(struct ixfer_agent *a, uint64_t now)
{
    struct notify_state *n = a->notify;
    /* Many senders (restarted peers, or garbage instance numbers): forget the
     * idle ones that hold nothing; only their ordering state is lost. */
    if (n->nsenders > MAX_IDLE_SENDERS)
        IXFER_LIST_FOR_EACH_SAFE(node, &n->senders) {
            struct sender *s = ixfer_container_of(node, struct sender, link);
            /* pending covers messages waiting in the tag table too */
            if (ixfer_list_empty(&s->partial) && ixfer_list_empty(&s->held) && !s->pending &&
                now - s->last_ns >= n->stale_ns) {
                ixfer_list_remove(&s->link);
                free(s);
                n->nsenders--;
            }
        }
    IXFER_LIST_FOR_EACH(snode, &n->senders) {
        struct sender *s = ixfer_container_of(snode, struct sender, link);
        IXFER_LIST_FOR_EACH_SAFE(node, &s->partial) {
            struct inbound *m = ixfer_container_of(node, struct inbound, link);
            if (now - m->last_ns < n->stale_ns)
                continue;
            ixfer_list_remove(&m->link);
            drop_partial(a, s, m, IXFER_ERR_TIMEOUT);
        }
        /* A missing message that never came: give up its place. */
        struct inbound *first;
        while ((first = ixfer_list_entry(ixfer_list_first(&s->held), struct inbound, link)) &&
               now - first->last_ns >= n->stale_ns) {
            s->next_seq = first->seq;
            flush_held(a, s);
        }
    }
    for (int b = 0; b < TAG_BUCKETS; b++)
        IXFER_LIST_FOR_EACH_SAFE(node, &n->tags[b]) {
            struct tag_entry *t = ixfer_container_of(node, struct tag_entry, link);
            if (now - t->last_ns < n->stale_ns)
                continue;
            ixfer_list_remove(&t->link);
            if (t->msg) /* its data never all arrived */
                drop_partial(a, t->msg->from, t->msg, IXFER_ERR_TIMEOUT);
            free(t);
        }
}

static void free_sender_messages(struct ixfer_agent *a, struct sender *s)
{
    struct notify_state *n = a->notify;
    IXFER_LIST_FOR_EACH_SAFE(node, &s->partial)
        release(ixfer_container_of(node, struct inbound, link));
    IXFER_LIST_FOR_EACH_SAFE(node, &s->held)
        release(ixfer_container_of(node, struct inbound, link));
    ixfer_list_init(&s->partial);
    ixfer_list_init(&s->held);
    for (int b = 0; b < TAG_BUCKETS; b++)
        IXFER_LIST_FOR_EACH_SAFE(node, &n->tags[b]) {
            struct tag_entry *t = ixfer_container_of(node, struct tag_entry, link);
            if (t->msg && t->msg->from == s) {
                ixfer_list_remove(&t->link);
                release(t->msg);
                free(t);
            }
        }
}

void ixfer_notify_forget(struct ixfer_agent *a, const char *name)
{
    /* Frees what the senders of that name left pending; their records stay,
     * so that messages they send later keep their order. */
    size_t len = strlen(name);
    IXFER_LIST_FOR_EACH(node, &a->notify->senders) {
        struct sender *s = ixfer_container_of(node, struct sender, link);
        if (s->name_len == len && !memcmp(s->name, name, len))
            free_sender_messages(a, s);
    }
}

int ixfer_notify_pass(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    repost(a);
    uint64_t now = ixfer_now_ns();
    if (now - n->last_sweep_ns >= SWEEP_NS) {
        n->last_sweep_ns = now;
        sweep(a, now);
    }
    return send_pass(a);
}

/* ---- setup ------------------------------------------------------------------ */

int32_t ixfer_notify_init(struct ixfer_agent *a, const ixfer_agent_config *cfg)
{
    struct notify_state *n = calloc(1, sizeof *n);
    if (!n)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    a->notify = n;
    ixfer_list_init(&n->free_send);
    ixfer_list_init(&n->unposted);
    ixfer_list_init(&n->queue);
    ixfer_list_init(&n->senders);
    for (int b = 0; b < TAG_BUCKETS; b++)
        ixfer_list_init(&n->tags[b]);
    /* Caps below 2^58 keep the cost arithmetic far from overflow. */
    uint64_t cap = cfg->notif_pending_cap ? cfg->notif_pending_cap : (64ull << 20);
    n->cap = cap < (1ull << 58) ? cap : (1ull << 58);
    n->total_cap = n->cap * TOTAL_CAP_FACTOR;
    n->stale_ns = (uint64_t)(cfg->notif_stale_ms ? cfg->notif_stale_ms : 30000) * 1000000ull;
    n->last_sweep_ns = ixfer_now_ns();
    uint64_t cq_bytes = a->caps.cq_data_size > 8 ? 8 : a->caps.cq_data_size;
    n->tag_mask = cq_bytes == 8 ? UINT64_MAX : cq_bytes ? (1ull << (8 * cq_bytes)) - 1 : 0;
    if (getrandom(&n->instance, sizeof n->instance, 0) != sizeof n->instance)
        n->instance = ixfer_now_ns() ^ (uint64_t)(uintptr_t)n;

    size_t bytes = (size_t)(SEND_SLOTS + RECV_SLOTS) * FRAG_BYTES;
    n->mem = aligned_alloc(4096, bytes);
    if (!n->mem)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    uint64_t key;
    int ret = ixfer_reg_mr(a, n->mem, bytes, FI_SEND | FI_RECV, &n->mr, &key);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "registering notification buffers: %s",
                          ixfer_fab.strerror(-ret));
    n->desc = fi_mr_desc(n->mr);
    for (int i = 0; i < SEND_SLOTS; i++) {
        n->send[i] = (struct send_slot){.ctx.kind = OP_KIND_SEND, .buf = n->mem + (size_t)i * FRAG_BYTES};
        ixfer_list_push_front(&n->free_send, &n->send[i].link);
    }
    for (int i = 0; i < RECV_SLOTS; i++) {
        n->recv[i] = (struct recv_slot){.ctx.kind = OP_KIND_RECV,
                                        .buf = n->mem + (size_t)(SEND_SLOTS + i) * FRAG_BYTES};
        ixfer_list_push_front(&n->unposted, &n->recv[i].link);
    }
    repost(a);
    return IXFER_OK;
}

void ixfer_notify_fini(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    if (!n)
        return;
    /* A job is referenced by the queue and by each slot holding one of its
     * fragments: free it once, when the last reference goes. */
    for (int i = 0; i < SEND_SLOTS; i++) {
        struct notif_job *job = n->send[i].job;
        if (job && --job->inflight == 0 && !ixfer_list_linked(&job->link))
            free(job);
    }
    IXFER_LIST_FOR_EACH_SAFE(node, &n->queue)
        free(ixfer_container_of(node, struct notif_job, link));
    IXFER_LIST_FOR_EACH_SAFE(node, &n->senders) {
        struct sender *s = ixfer_container_of(node, struct sender, link);
        free_sender_messages(a, s);
        free(s);
    }
    for (int b = 0; b < TAG_BUCKETS; b++)
        IXFER_LIST_FOR_EACH_SAFE(node, &n->tags[b])
            free(ixfer_container_of(node, struct tag_entry, link));
    if (n->mr)
        fi_close(&n->mr->fid);
    free(n->mem);
    free(n);
    a->notify = NULL;
}

uint64_t ixfer_notif_malformed(ixfer_agent *a)
{
    return a && a->notify ? atomic_load(&a->notify->malformed) : 0;
}

uint64_t ixfer_notif_pending(ixfer_agent *a)
{
    return a && a->notify ? atomic_load(&a->notify->pending) : 0;
}

void ixfer_notif_free(ixfer_notification *rec) { free(rec); }

void ixfer_notify_release_event(const ixfer_event *ev)
{
    if (ev->type == IXFER_EVENT_NOTIF)
        ixfer_notif_free((ixfer_notification *)(uintptr_t)ev->user_id);
}
