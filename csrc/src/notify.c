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
 * what proves the data landed, whatever order the provider delivers in.
 *
 * Everything here runs on the progress thread (or before it starts, or after
 * it stopped) but the job constructor and destructor, and the ixfer_notif_*
 * calls at the end, which read counters or free what was delivered. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <rdma/fi_errno.h>

#include "fabric_api.h"
#include "internal.h"
#include "notify.h"

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
 * ordered messages for its turn. */
enum { NF_ORDERED = 1, NF_WITHDRAWN = 2 };

/* Room for payload in one fragment from a sender with a name of name_len. */
static uint64_t frag_room(uint32_t name_len) { return FRAG_BYTES - HDR_BYTES - name_len; }

/* Fragment header, little-endian:
 *   0 u32 magic   4 u8 version   5 u8 flags   6 u8 name_len   7 u8 zero
 *   8 u64 sender instance   16 u64 message id   24 u64 seq (ordered only)
 *  32 u64 total length      40 u64 offset of this fragment's payload
 *  48 u64 tag               56 u64 expected tagged writes
 *  64 name, then payload. */

struct notif_job {
    struct notif_job *next;
    fi_addr_t peer;
    uint64_t user_id;
    struct xfer_request *req;
    uint64_t msg_id, seq, tag, expected;
    uint64_t len, sent; /* payload bytes, and those handed to the provider */
    uint32_t inflight;  /* fragments posted and not completed */
    int queued;         /* still on the send queue */
    int withdrawn;      /* the withdrawal fragment was posted */
    int32_t status, fi_errno;
    int32_t cancel_status;
    uint8_t data[];
};

struct send_slot {
    struct op_ctx ctx;
    struct send_slot *next_free;
    struct notif_job *job;
    uint8_t *buf;
};

struct recv_slot {
    struct op_ctx ctx;
    struct recv_slot *next_unposted;
    uint8_t *buf;
};

struct sender;

/* A message being reassembled, waiting for its data, or waiting its turn. */
struct inbound {
    struct inbound *next;
    struct sender *from;
    uint64_t id, seq, tag, expected, total, cost, last_ns;
    uint64_t frags_left; /* fragments not yet received */
    uint8_t flags;
    ixfer_notification *rec; /* NULL: a dropped ordered message's place */
    uint8_t seen[];          /* a bit per fragment: duplicates are refused */
};

struct sender {
    struct sender *next;
    struct notify_state *state;
    char name[IXFER_SENDER_MAX];
    uint32_t name_len;
    uint64_t instance;
    uint64_t pending;     /* bytes held for this sender, against the cap */
    uint64_t next_seq; /* the sender numbers its standalone messages to us from 1 */
    struct inbound *partial;
    struct inbound *held; /* complete ordered messages, sorted by seq */
    uint64_t dropped[DROPPED_IDS];
    uint32_t dropped_pos;
    uint64_t last_ns;
};

struct tag_entry {
    struct tag_entry *next;
    uint64_t tag, count, last_ns;
    struct inbound *msg; /* complete message waiting for its writes */
};

struct notify_state {
    struct fid_mr *mr;
    void *desc;
    uint8_t *mem;
    struct send_slot send[SEND_SLOTS];
    struct recv_slot recv[RECV_SLOTS];
    struct send_slot *free_send;
    struct recv_slot *unposted;
    struct notif_job *queue_head, *queue_tail;
    uint64_t instance, next_msg_id, next_tag, tag_mask;
    uint64_t cap, total_cap;
    uint64_t stale_ns, last_sweep_ns;
    struct sender *senders;
    uint32_t nsenders;
    struct tag_entry *tags[TAG_BUCKETS];
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
                                      uint64_t seq, uint64_t user_id, struct xfer_request *req)
{
    if (len > SIZE_MAX - sizeof(struct notif_job))
        return NULL;
    struct notif_job *job = malloc(sizeof *job + len);
    if (!job)
        return NULL;
    *job = (struct notif_job){.peer = peer, .user_id = user_id, .req = req, .seq = seq, .len = len};
    if (len)
        memcpy(job->data, data, len);
    return job;
}

void ixfer_notif_job_free(struct notif_job *job) { free(job); }

void ixfer_notif_job_expect(struct notif_job *job, uint64_t tag, uint64_t expected)
{
    job->tag = tag;
    job->expected = expected;
}

static void job_finish(struct ixfer_agent *a, struct notif_job *job)
{
    int32_t status = job->status != IXFER_OK ? job->status : job->cancel_status;
    if (job->req) {
        ixfer_request_notified(a, job->req, status, job->fi_errno);
    } else {
        ixfer_event ev = {.user_id = job->user_id, .type = IXFER_EVENT_XFER_DONE,
                          .status = status, .fi_errno = job->fi_errno};
        ixfer_push_event(a, &ev);
    }
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
    job->next = NULL;
    job->queued = 1;
    if (n->queue_tail)
        n->queue_tail->next = job;
    else
        n->queue_head = job;
    n->queue_tail = job;
}

uint64_t ixfer_notify_next_tag(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    /* With 8 bytes of CQ data the sender's instance is in the high half, so
     * concurrent senders cannot collide; with 4 (EFA) collisions need two
     * live transfers 2^32 tags apart. */
    uint64_t t = ++n->next_tag;
    return n->tag_mask > 0xffffffffull ? ((n->instance << 32) | (t & 0xffffffffull))
                                       : ((n->instance + t) & n->tag_mask);
}

/* ---- sending ---------------------------------------------------------------- */

static void write_header(const struct ixfer_agent *a, const struct notif_job *job, uint8_t *h,
                         uint64_t offset, uint8_t flags)
{
    const struct notify_state *n = a->notify;
    uint32_t magic = NOTIF_MAGIC;
    memcpy(h, &magic, 4);
    h[4] = NOTIF_VERSION;
    h[5] = (job->req ? 0 : NF_ORDERED) | flags;
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
    struct send_slot *slot = n->free_send;
    if (!slot)
        return -FI_EAGAIN;
    write_header(a, job, slot->buf, job->sent, flags);
    size_t head = HDR_BYTES + a->name_len;
    memcpy(slot->buf + head, job->data + job->sent, chunk);
    ssize_t ret = fi_send(a->ep, slot->buf, head + chunk, n->desc, job->peer, slot);
    if (ret == -FI_EAGAIN)
        return -FI_EAGAIN;
    if (ret) {
        job->status = ixfer_status_of((int)-ret);
        job->fi_errno = (int32_t)-ret;
        return (int)ret;
    }
    n->free_send = slot->next_free;
    slot->job = job;
    job->inflight++;
    return 0;
}

/* Posts fragments of job while slots last. Returns -FI_EAGAIN when the
 * provider or the slot pool ran out, 0 otherwise. */
static int post_job(struct ixfer_agent *a, struct notif_job *job)
{
    uint64_t room = frag_room(a->name_len);
    /* A canceled ordered message still takes its place in the order: say so
     * (a removed peer is gone, and a failed send means the connection is). */
    if (!job->req && job->cancel_status && job->status == IXFER_OK && !job->withdrawn &&
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
    struct notif_job *prev = NULL, *job = n->queue_head;
    while (job) {
        struct notif_job *next = job->next;
        int skip = peer_blocked(&blocked, job->peer);
        if (!skip && post_job(a, job) == -FI_EAGAIN) {
            stalled = 1;
            /* No slot left: later jobs need slots too. */
            if (!n->free_send || block_peer(&blocked, job->peer))
                break;
            skip = 1;
        }
        if (skip) {
            prev = job;
        } else {
            /* Fully posted or stopped: it leaves the queue; its last slot
             * completion finishes it. */
            if (prev)
                prev->next = next;
            else
                n->queue_head = next;
            if (n->queue_tail == job)
                n->queue_tail = prev;
            job->queued = 0;
            if (!job->inflight)
                job_finish(a, job);
        }
        job = next;
    }
    return stalled;
}

static void send_done(struct ixfer_agent *a, struct send_slot *slot, int fi_err)
{
    struct notify_state *n = a->notify;
    struct notif_job *job = slot->job;
    slot->job = NULL;
    slot->next_free = n->free_send;
    n->free_send = slot;
    if (fi_err && job->status == IXFER_OK) {
        job->status = ixfer_status_of(fi_err);
        job->fi_errno = fi_err;
    }
    job->inflight--;
    if (!job->inflight && !job->queued)
        job_finish(a, job);
}

void ixfer_notify_cancel(struct ixfer_agent *a, uint64_t user_id, int32_t status)
{
    for (struct notif_job *job = a->notify->queue_head; job; job = job->next)
        if (!job->req && job->user_id == user_id) {
            if (!job->cancel_status)
                job->cancel_status = status;
            return;
        }
}

void ixfer_notify_remove_peer(struct ixfer_agent *a, fi_addr_t peer)
{
    for (struct notif_job *job = a->notify->queue_head; job; job = job->next)
        if (job->peer == peer && !job->cancel_status)
            job->cancel_status = IXFER_ERR_REMOTE_DISCONNECT;
}

/* ---- receiving ---------------------------------------------------------------- */

static void deliver(struct ixfer_agent *a, ixfer_notification *rec)
{
    ixfer_event ev = {.user_id = (uint64_t)(uintptr_t)rec, .type = IXFER_EVENT_NOTIF,
                      .status = rec->status};
    ixfer_push_event(a, &ev);
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

/* Delivers held ordered messages from next_seq on, skipping dropped places. */
static void flush_held(struct ixfer_agent *a, struct sender *s)
{
    while (s->held && s->held->seq <= s->next_seq) {
        struct inbound *m = s->held;
        s->held = m->next;
        if (m->seq == s->next_seq)
            s->next_seq++;
        if (m->rec) {
            deliver(a, m->rec);
            m->rec = NULL;
        }
        release(m);
    }
}

static void hold(struct sender *s, struct inbound *m)
{
    struct inbound **p = &s->held;
    while (*p && (*p)->seq < m->seq)
        p = &(*p)->next;
    m->next = *p;
    *p = m;
}

/* An ordered message that is complete (rec set) or dropped (rec NULL). */
static void ordered_ready(struct ixfer_agent *a, struct sender *s, struct inbound *m)
{
    if (m->seq < s->next_seq) { /* late: its place was already given up */
        if (m->rec) {
            deliver(a, m->rec);
            m->rec = NULL;
        }
        release(m);
        return;
    }
    hold(s, m);
    flush_held(a, s);
}

static struct tag_entry **tag_slot(struct notify_state *n, uint64_t tag)
{
    struct tag_entry **p = &n->tags[(tag ^ (tag >> 32)) % TAG_BUCKETS];
    while (*p && (*p)->tag != tag)
        p = &(*p)->next;
    return p;
}

static struct tag_entry *tag_get(struct notify_state *n, uint64_t tag)
{
    struct tag_entry **p = tag_slot(n, tag);
    if (!*p) {
        struct tag_entry *t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->tag = tag;
        *p = t;
    }
    (*p)->last_ns = ixfer_now_ns();
    return *p;
}

static void tag_remove(struct notify_state *n, uint64_t tag)
{
    struct tag_entry **p = tag_slot(n, tag);
    if (*p) {
        struct tag_entry *t = *p;
        *p = t->next;
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
            report_drop(a, s, m->total, IXFER_ERR_BACKEND);
            release(m);
            return;
        }
        if (t->msg) { /* two messages claim one tag: keep the first */
            atomic_fetch_add(&n->malformed, 1);
            release(m);
            return;
        }
        if (t->count < m->expected) {
            t->msg = m;
            return;
        }
        tag_remove(n, tag);
    }
    if (m->flags & NF_ORDERED) {
        ordered_ready(a, s, m);
        return;
    }
    deliver(a, m->rec);
    m->rec = NULL;
    release(m);
}

void ixfer_notify_remote_write(struct ixfer_agent *a, uint64_t data)
{
    struct notify_state *n = a->notify;
    struct tag_entry *t = tag_get(n, data & n->tag_mask);
    if (!t)
        return;
    t->count++;
    if (t->msg && t->count >= t->msg->expected) {
        struct inbound *m = t->msg;
        tag_remove(n, t->tag);
        m->expected = 0;
        complete(a, m->from, m);
    }
}

static void free_sender_messages(struct ixfer_agent *a, struct sender *s);

/* Makes room for a new sender: forgets the least recently active one that
 * holds nothing (only its ordering state is lost) or, when every sender
 * holds something, the least recently active one, dropping and reporting
 * its unfinished messages. Active senders stay at the front of the list, so
 * a flood of invented senders evicts its own. */
static void evict_sender(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    struct sender **idle = NULL, **last = NULL;
    for (struct sender **p = &n->senders; *p; p = &(*p)->next) {
        last = p;
        if (!(*p)->partial && !(*p)->held && !(*p)->pending)
            idle = p;
    }
    struct sender **victim = idle ? idle : last;
    if (!victim)
        return;
    struct sender *s = *victim;
    *victim = s->next;
    for (struct inbound *m = s->partial; m; m = m->next)
        report_drop(a, s, m->total, IXFER_ERR_NOT_ALLOWED);
    free_sender_messages(a, s);
    free(s);
    n->nsenders--;
}

static struct sender *sender_get(struct ixfer_agent *a, const char *name, uint32_t name_len,
                                 uint64_t instance)
{
    struct notify_state *n = a->notify;
    for (struct sender **p = &n->senders; *p; p = &(*p)->next) {
        struct sender *s = *p;
        if (s->instance == instance && s->name_len == name_len && !memcmp(s->name, name, name_len)) {
            *p = s->next; /* to the front: a few senders are usually busy */
            s->next = n->senders;
            n->senders = s;
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
    s->next = n->senders;
    n->senders = s;
    n->nsenders++;
    return s;
}

/* The sender gave message id up: free what arrived of it (m, found at *link,
 * or NULL) and give up its place in the order, without reporting a drop. */
static void withdraw(struct ixfer_agent *a, struct sender *s, struct inbound *m,
                     struct inbound **link, uint64_t id, uint64_t seq, uint8_t flags)
{
    remember_dropped(s, id);
    if (m) {
        *link = m->next;
        m->next = NULL;
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
                          .frags_left = frags, .flags = flags, .rec = rec, .next = s->partial};
    s->pending += cost;
    atomic_fetch_add(&n->pending, cost);
    s->partial = m;
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
        (flags & ~(NF_ORDERED | NF_WITHDRAWN)))
        goto malformed;
    uint64_t id = get64(buf + 16), seq = get64(buf + 24), total = get64(buf + 32);
    uint64_t off = get64(buf + 40), chunk = len - head, room = frag_room(name_len);
    if (!(flags & NF_WITHDRAWN) &&
        (off > total || off % room || chunk != (total - off < room ? total - off : room)))
        goto malformed;
    struct sender *s = sender_get(a, (const char *)buf + HDR_BYTES, name_len, get64(buf + 8));
    if (!s)
        goto malformed;
    if (was_dropped(s, id))
        return;
    struct inbound *m = s->partial, **link = &s->partial;
    while (m && m->id != id) {
        link = &m->next;
        m = m->next;
    }
    if (flags & NF_WITHDRAWN) {
        withdraw(a, s, m, link, id, seq, flags);
        return;
    }
    if (!m) {
        m = start_message(a, s, buf, id, total);
        if (!m)
            return;
        link = &s->partial;
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
    *link = m->next;
    m->next = NULL;
    complete(a, s, m);
    return;
malformed:
    atomic_fetch_add(&n->malformed, 1);
}

static void repost(struct ixfer_agent *a)
{
    struct notify_state *n = a->notify;
    while (n->unposted) {
        struct recv_slot *slot = n->unposted;
        if (fi_recv(a->ep, slot->buf, FRAG_BYTES, n->desc, FI_ADDR_UNSPEC, slot))
            return; /* retried on the next pass */
        n->unposted = slot->next_unposted;
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
    slot->next_unposted = a->notify->unposted;
    a->notify->unposted = slot;
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
        for (struct sender **p = &n->senders; *p;) {
            struct sender *s = *p;
            /* pending covers messages waiting in the tag table too */
            if (!s->partial && !s->held && !s->pending && now - s->last_ns >= n->stale_ns) {
                *p = s->next;
                free(s);
                n->nsenders--;
            } else {
                p = &s->next;
            }
        }
    for (struct sender *s = n->senders; s; s = s->next) {
        for (struct inbound **p = &s->partial; *p;) {
            struct inbound *m = *p;
            if (now - m->last_ns < n->stale_ns) {
                p = &m->next;
                continue;
            }
            *p = m->next;
            m->next = NULL;
            drop_partial(a, s, m, IXFER_ERR_TIMEOUT);
        }
        /* A missing message that never came: give up its place. */
        while (s->held && now - s->held->last_ns >= n->stale_ns) {
            s->next_seq = s->held->seq;
            flush_held(a, s);
        }
    }
    for (int b = 0; b < TAG_BUCKETS; b++)
        for (struct tag_entry **p = &n->tags[b]; *p;) {
            struct tag_entry *t = *p;
            if (now - t->last_ns < n->stale_ns) {
                p = &t->next;
                continue;
            }
            *p = t->next;
            if (t->msg) /* its data never all arrived */
                drop_partial(a, t->msg->from, t->msg, IXFER_ERR_TIMEOUT);
            free(t);
        }
}

static void free_sender_messages(struct ixfer_agent *a, struct sender *s)
{
    struct notify_state *n = a->notify;
    for (struct inbound *m = s->partial, *next; m; m = next) {
        next = m->next;
        release(m);
    }
    for (struct inbound *m = s->held, *next; m; m = next) {
        next = m->next;
        release(m);
    }
    s->partial = s->held = NULL;
    for (int b = 0; b < TAG_BUCKETS; b++)
        for (struct tag_entry **p = &n->tags[b]; *p;) {
            struct tag_entry *t = *p;
            if (t->msg && t->msg->from == s) {
                *p = t->next;
                release(t->msg);
                free(t);
            } else {
                p = &t->next;
            }
        }
}

void ixfer_notify_forget(struct ixfer_agent *a, const char *name)
{
    /* Frees what the senders of that name left pending; their records stay,
     * so that messages they send later keep their order. */
    size_t len = strlen(name);
    for (struct sender *s = a->notify->senders; s; s = s->next)
        if (s->name_len == len && !memcmp(s->name, name, len))
            free_sender_messages(a, s);
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
        n->send[i] = (struct send_slot){.ctx.kind = OP_KIND_SEND, .buf = n->mem + (size_t)i * FRAG_BYTES,
                                        .next_free = n->free_send};
        n->free_send = &n->send[i];
    }
    for (int i = 0; i < RECV_SLOTS; i++) {
        n->recv[i] = (struct recv_slot){.ctx.kind = OP_KIND_RECV,
                                        .buf = n->mem + (size_t)(SEND_SLOTS + i) * FRAG_BYTES,
                                        .next_unposted = n->unposted};
        n->unposted = &n->recv[i];
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
        if (job && --job->inflight == 0 && !job->queued)
            free(job);
    }
    for (struct notif_job *job = n->queue_head, *next; job; job = next) {
        next = job->next;
        free(job);
    }
    while (n->senders) {
        struct sender *s = n->senders;
        n->senders = s->next;
        free_sender_messages(a, s);
        free(s);
    }
    for (int b = 0; b < TAG_BUCKETS; b++)
        for (struct tag_entry *t = n->tags[b], *next; t; t = next) {
            next = t->next;
            free(t);
        }
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
