/* Notification fragments are untrusted network input. This sends an agent
 * tens of thousands of mutated and random fragments straight through the
 * provider (bypassing the sender side), under AddressSanitizer and UBSan
 * (scripts/sanitize.sh), then checks that a real notification still arrives
 * intact and that nothing is left pending. check_release drives the tagged
 * write count and its release by hand. Uses the shim's internals
 * (csrc/src/net) to reach the endpoint. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "ixfer.h"
#include "net/agent.h"
#include "net/fabric_api.h"
#include "net/mr.h"
#include "net/notify.h"

#define ROUNDS 30000

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* A plausible fragment: right magic and version, fields drawn from values
 * near the protocol's edges, so that most checks are reached. */
static size_t plausible(uint8_t *b)
{
    static const uint64_t edges[] = {0, 1, 2, 16, FRAG_BYTES - HDR_BYTES - 1, FRAG_BYTES - HDR_BYTES,
                                     FRAG_BYTES - 1, FRAG_BYTES, 1 << 20,
                                     UINT64_MAX, UINT64_MAX - 16, 1ull << 62};
#define EDGE() (next_rand() % 3 ? edges[next_rand() % (sizeof edges / sizeof *edges)] : next_rand())
    uint32_t magic = NOTIF_MAGIC;
    memcpy(b, &magic, 4);
    b[4] = NOTIF_VERSION;
    b[5] = (uint8_t)(next_rand() % 16);
    uint8_t name_len = (uint8_t)(next_rand() % 4 ? 1 + next_rand() % 8 : next_rand());
    b[6] = name_len;
    b[7] = 0;
    put64(b + 8, next_rand() % 8);   /* a few sender instances */
    put64(b + 16, next_rand() % 16); /* and message ids, so fragments meet */
    put64(b + 24, next_rand() % 4 ? next_rand() % 6 : EDGE());
    put64(b + 32, EDGE());
    put64(b + 40, next_rand() % 2 ? (next_rand() % 4) * (FRAG_BYTES - HDR_BYTES - name_len) : EDGE());
    put64(b + 48, next_rand() % 4);
    put64(b + 56, next_rand() % 3);
    memset(b + HDR_BYTES, 'f', name_len);
    size_t room = FRAG_BYTES - HDR_BYTES - name_len;
    size_t len = HDR_BYTES + name_len + (next_rand() % 2 ? next_rand() % (room + 1) : 0);
    if (len > FRAG_BYTES)
        len = FRAG_BYTES;
    /* Sometimes flip a few bytes anywhere. */
    for (int i = next_rand() % 3; i > 0; i--)
        b[next_rand() % len] ^= (uint8_t)next_rand();
    return len;
#undef EDGE
}

/* A one-fragment message from "noise" (instance 777): flags, tag, expected
 * tagged writes, payload text. Returns its length. */
static size_t fragment(uint8_t *b, uint8_t flags, uint64_t id, uint64_t tag, uint64_t expected,
                       const char *text)
{
    uint32_t magic = NOTIF_MAGIC;
    size_t len = strlen(text);
    memset(b, 0, HDR_BYTES);
    memcpy(b, &magic, 4);
    b[4] = NOTIF_VERSION;
    b[5] = flags;
    b[6] = 5;
    put64(b + 8, 777);
    put64(b + 16, id);
    put64(b + 32, len);
    put64(b + 48, tag);
    put64(b + 56, expected);
    memcpy(b + HDR_BYTES, "noise", 5);
    memcpy(b + HDR_BYTES + 5, text, len);
    return HDR_BYTES + 5 + len;
}

/* Whether a notification carrying text reaches a within ms. */
static int heard(ixfer_agent *a, int fd, const char *text, int ms)
{
    for (int waited = 0; waited <= ms; waited += 20) {
        ixfer_event ev;
        while (ixfer_agent_drain(a, &ev, 1) == 1) {
            if (ev.type != IXFER_EVENT_NOTIF)
                continue;
            ixfer_notification *n = (ixfer_notification *)(uintptr_t)ev.user_id;
            int match = n->status == IXFER_OK && n->len == strlen(text) && !memcmp(n->data, text, n->len);
            ixfer_notif_free(n);
            if (match)
                return 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20) > 0) {
            char c[64];
            ssize_t r = read(fd, c, sizeof c);
            (void)r;
        }
    }
    return 0;
}

/* The receiver's side of an attached notification: held until it counts its
 * tagged writes, or until the sender releases the tag (a piece posted again
 * carries no tag, progress.c), whichever comes first, in any order. */
static int check_release(void)
{
    ixfer_agent_config ct = {.provider = "tcp", .node = "127.0.0.1", .name = "held"};
    ixfer_agent_config cs = {.provider = "tcp", .node = "127.0.0.1", .name = "noise"};
    ixfer_agent *t = NULL, *s = NULL;
    if (ixfer_agent_create(&ct, &t) || ixfer_agent_create(&cs, &s))
        return 0;
    int fd = -1;
    ixfer_agent_take_event_fd(t, &fd);
    uint8_t addr[256];
    uint64_t alen = sizeof addr, peer = 0, mem = 0, key = 0, src = 0, skey = 0;
    ixfer_agent_address(t, addr, &alen);
    ixfer_peer_insert(s, addr, alen, &peer);
    ixfer_mem_alloc(FRAG_BYTES, &mem);
    ixfer_mem_alloc(FRAG_BYTES, &src);
    ixfer_mr *mr = NULL, *smr = NULL;
    ixfer_mr_register(t, mem, FRAG_BYTES, &key, &mr);
    ixfer_mr_register(s, src, FRAG_BYTES, &skey, &smr);
    uint64_t raddr = (t->caps.mr_mode & FI_MR_VIRT_ADDR) ? mem : 0;
    uint8_t *buf = (uint8_t *)(uintptr_t)src;
    int ok = 1;
#define SEND(len)                                                                  \
    while (fi_send(s->ep, buf, (len), smr->desc, peer, NULL) == -FI_EAGAIN)        \
        fi_cq_read(s->cq, NULL, 0)
#define WRITE(tag)                                                                 \
    while (fi_writedata(s->ep, buf + 4096, 64, smr->desc, (tag), peer, raddr, key, \
                        NULL) == -FI_EAGAIN)                                       \
        fi_cq_read(s->cq, NULL, 0)
    /* Two writes announced, one counted: held; the release frees it. */
    SEND(fragment(buf, 0, 1, 0x51, 2, "released"));
    WRITE(0x51);
    ok &= !heard(t, fd, "released", 300);
    SEND(fragment(buf, 8 /* NF_RELEASE */, 2, 0x51, 0, "-"));
    ok &= heard(t, fd, "released", 5000);
    /* The release first, then the message: delivered on arrival. */
    SEND(fragment(buf, 8, 3, 0x52, 0, "-"));
    usleep(100000);
    SEND(fragment(buf, 0, 4, 0x52, 3, "released first"));
    ok &= heard(t, fd, "released first", 5000);
    /* No release: the full count of tagged writes delivers it. */
    SEND(fragment(buf, 0, 5, 0x53, 2, "counted"));
    WRITE(0x53);
    ok &= !heard(t, fd, "counted", 300);
    WRITE(0x53);
    ok &= heard(t, fd, "counted", 5000);
#undef SEND
#undef WRITE
    printf("notify_fuzz: held notifications %s by count and by release\n",
           ok ? "delivered" : "NOT delivered as they should be");
    ixfer_mr_deregister(smr);
    ixfer_agent_destroy(s);
    ixfer_agent_destroy(t);
    close(fd);
    ixfer_mem_free(mem);
    ixfer_mem_free(src);
    return ok;
}

int main(void)
{
    if (!check_release())
        return 1;
    ixfer_agent_config ca = {.provider = "tcp", .node = "127.0.0.1", .name = "target",
                             .notif_pending_cap = 8 << 20, .notif_stale_ms = 200};
    ixfer_agent_config cb = {.provider = "tcp", .node = "127.0.0.1", .name = "noise"};
    ixfer_agent *a = NULL, *b = NULL;
    if (ixfer_agent_create(&ca, &a) || ixfer_agent_create(&cb, &b)) {
        fprintf(stderr, "notify_fuzz: %s\n", ixfer_last_error());
        return 1;
    }
    int afd = -1;
    ixfer_agent_take_event_fd(a, &afd);
    uint8_t addr[256];
    uint64_t alen = sizeof addr, peer = 0, mem = 0, key = 0;
    ixfer_agent_address(a, addr, &alen);
    ixfer_peer_insert(b, addr, alen, &peer);
    ixfer_mem_alloc(FRAG_BYTES, &mem);
    ixfer_mr *mr = NULL;
    ixfer_mr_register(b, mem, FRAG_BYTES, &key, &mr);
    uint8_t *buf = (uint8_t *)(uintptr_t)mem;

    for (int i = 0; i < ROUNDS; i++) {
        size_t len;
        if (next_rand() % 10 == 0) { /* pure noise */
            len = next_rand() % (FRAG_BYTES + 1);
            for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)next_rand();
        } else {
            len = plausible(buf);
        }
        ssize_t r;
        /* The buffer may still be in flight when it is rewritten for the
         * next round: that only adds noise. */
        while ((r = fi_send(b->ep, buf, len, mr->desc, peer, NULL)) == -FI_EAGAIN)
            fi_cq_read(b->cq, NULL, 0);
        if (r) {
            fprintf(stderr, "notify_fuzz: fi_send: %zd\n", r);
            return 1;
        }
        /* Drain what the target delivers (dropped-message reports, or the
         * rare mutated message that is whole) so its queue stays small. */
        ixfer_event ev;
        while (ixfer_agent_drain(a, &ev, 1) == 1)
            if (ev.type == IXFER_EVENT_NOTIF)
                ixfer_notif_free((ixfer_notification *)(uintptr_t)ev.user_id);
    }

    /* The target still works: a real notification from a real sender. */
    ixfer_agent_address(b, addr, &alen);
    uint64_t back = 0;
    ixfer_peer_insert(a, addr, alen, &back);
    static uint8_t msg[100000];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    int bfd = -1;
    ixfer_agent_take_event_fd(b, &bfd);
    ixfer_agent_address(a, addr, &alen);
    uint64_t to_a = 0;
    ixfer_peer_insert(b, addr, alen, &to_a);
    ixfer_notify(b, to_a, msg, sizeof msg, 1, 1);
    int ok = 0;
    for (int tries = 0; tries < 200 && !ok; tries++) {
        ixfer_event ev;
        while (ixfer_agent_drain(a, &ev, 1) == 1) {
            if (ev.type != IXFER_EVENT_NOTIF)
                continue;
            ixfer_notification *n = (ixfer_notification *)(uintptr_t)ev.user_id;
            if (n->status == IXFER_OK && n->len == sizeof msg && n->name_len == 5 &&
                !memcmp(n->name, "noise", 5) && !memcmp(n->data, msg, sizeof msg))
                ok = 1;
            ixfer_notif_free(n);
        }
        struct pollfd p = {.fd = afd, .events = POLLIN};
        if (!ok && poll(&p, 1, 50) > 0) {
            char c[64];
            ssize_t r = read(afd, c, sizeof c);
            (void)r;
        }
    }
    /* Whatever the noise left half-done goes stale and is freed. */
    uint64_t pending = 0;
    for (int tries = 0; tries < 100; tries++) {
        usleep(50000);
        ixfer_event ev;
        while (ixfer_agent_drain(a, &ev, 1) == 1)
            if (ev.type == IXFER_EVENT_NOTIF)
                ixfer_notif_free((ixfer_notification *)(uintptr_t)ev.user_id);
        if ((pending = ixfer_notif_pending(a)) == 0)
            break;
    }
    uint64_t malformed = ixfer_notif_malformed(a);
    printf("notify_fuzz: %d fragments, %llu refused as malformed, real message %s, %llu bytes "
           "left pending\n",
           ROUNDS, (unsigned long long)malformed, ok ? "delivered" : "LOST",
           (unsigned long long)pending);
    ixfer_mr_deregister(mr);
    ixfer_agent_destroy(b);
    ixfer_agent_destroy(a);
    close(afd);
    close(bfd);
    ixfer_mem_free(mem);
    return ok && pending == 0 && malformed > 0 ? 0 : 1;
}
