/* The C baseline of `ixfer bench --baseline`: the same RMA loop as ixfer's
 * shim, straight on libfabric, in two processes.
 *
 *   fi_rma_baseline target    PROVIDER NODE BYTES
 *       prints "ready ADDR_HEX KEY BASE", serves RMA until stdin closes.
 *   fi_rma_baseline initiator PROVIDER NODE BYTES ADDR_HEX KEY BASE
 *       prints "ready", then answers one line per command on stdin:
 *       "warmup OP BLOCK BATCH IOVS ITERS" -> "ok"
 *       "run OP BLOCK BATCH IOVS ITERS"    -> "result TOTAL_NS POST_AVG_NS POST_P99_NS TX_AVG_NS TX_P99_NS"
 *       (OP is WRITE or READ).
 *
 * One iteration is what one ixfer transfer is: BATCH blocks of BLOCK bytes,
 * each block cut into IOVS pieces at the same offsets on both sides, packed
 * into ops of at most iov_limit pieces and max_msg_size bytes, all posted,
 * then all completions awaited in fi_cq_sread. WRITEs ask for
 * FI_DELIVERY_COMPLETE (fi_cq(3)) as ixfer's do: where the provider places
 * writes in order (FI_ORDER_WAW), on an iteration's last op only. The
 * target's progress thread sleeps in fi_cq_sread, which drives manual
 * progress (fi_tcp(7)).
 * Setup follows fabtests' shared harness; only the loop is the benchmark. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "bench_stats.h"

#define MAX_IOV 16 /* the shim's cap on pieces per op */
#define TARGET_KEY 0xb1
#define INITIATOR_KEY 0xb2

static struct fi_info *info;
static struct fid_fabric *fabric;
static struct fid_domain *domain;
static struct fid_ep *ep;
static struct fid_cq *cq;
static struct fid_av *av;
static struct fid_mr *mr;
static uint8_t *buf;
static size_t buf_len;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fi_rma_baseline: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

#define CHECK(call)                                                                  \
    do {                                                                             \
        int ret_ = (int)(call);                                                      \
        if (ret_)                                                                    \
            die("%s: %s", #call, fi_strerror(-ret_));                                \
    } while (0)

/* Opens an RDM endpoint bound to NODE (FI_SOURCE: loopback stays loopback)
 * where the provider's addresses are IP ones (shm would take NODE as the name
 * of its region, and both processes would ask for the same), and registers BYTES of page-aligned memory, honouring the mr_mode bits the
 * provider returns (fi_mr(3)). */
static void setup(const char *provider, const char *node, size_t bytes, uint64_t key)
{
    struct fi_info *hints = fi_allocinfo();
    if (!hints)
        die("fi_allocinfo failed");
    hints->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_MSG;
    hints->ep_attr->type = FI_EP_RDM;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode =
        FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
    hints->domain_attr->threading = FI_THREAD_SAFE;
    hints->fabric_attr->prov_name = strdup(provider);
    CHECK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &info));
    uint32_t format = info->addr_format;
    if (format == FI_SOCKADDR || format == FI_SOCKADDR_IN || format == FI_SOCKADDR_IN6) {
        fi_freeinfo(info);
        CHECK(fi_getinfo(FI_VERSION(1, 17), node, NULL, FI_SOURCE, hints, &info));
    }
    fi_freeinfo(hints);
    CHECK(fi_fabric(info->fabric_attr, &fabric, NULL));
    CHECK(fi_domain(fabric, info, &domain, NULL));
    struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_UNSPEC};
    CHECK(fi_cq_open(domain, &cq_attr, &cq, NULL));
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    CHECK(fi_av_open(domain, &av_attr, &av, NULL));
    CHECK(fi_endpoint(domain, info, &ep, NULL));
    CHECK(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV));
    CHECK(fi_ep_bind(ep, &av->fid, 0));
    CHECK(fi_enable(ep));

    buf_len = bytes;
    if (posix_memalign((void **)&buf, 4096, bytes))
        die("cannot allocate %zu bytes", bytes);
    memset(buf, 0, bytes);
    CHECK(fi_mr_reg(domain, buf, bytes, FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE,
                    0, key, 0, &mr, NULL));
    if (info->domain_attr->mr_mode & FI_MR_ENDPOINT) {
        CHECK(fi_mr_bind(mr, &ep->fid, 0));
        CHECK(fi_mr_enable(mr));
    }
}

static void print_address(void)
{
    uint8_t addr[256];
    size_t len = sizeof addr;
    CHECK(fi_getname(&ep->fid, addr, &len));
    printf("ready ");
    for (size_t i = 0; i < len; i++)
        printf("%02x", addr[i]);
    /* Without FI_MR_VIRT_ADDR, remote addresses are offsets: base 0. */
    uint64_t base = info->domain_attr->mr_mode & FI_MR_VIRT_ADDR ? (uint64_t)(uintptr_t)buf : 0;
    printf(" %" PRIu64 " %" PRIu64 "\n", fi_mr_key(mr), base);
    fflush(stdout);
}

/* ---- --check-consistency: both sides fill and hash their buffer's start - */

/* Answers "fill SEED LEN" (a byte pattern of SEED over the first LEN bytes)
 * and "sum LEN" (their FNV-1a hash); returns 0 for any other line. */
static int check_command(const char *line)
{
    uint64_t seed, len;
    if (sscanf(line, "fill %" SCNu64 " %" SCNu64, &seed, &len) == 2 && len <= buf_len) {
        for (uint64_t i = 0; i < len; i++)
            buf[i] = (uint8_t)(i * 131 + (i >> 9) + seed * 7);
        printf("ok\n");
    } else if (sscanf(line, "sum %" SCNu64, &len) == 1 && len <= buf_len) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (uint64_t i = 0; i < len; i++)
            h = (h ^ buf[i]) * 0x100000001b3ull;
        printf("sum %016" PRIx64 "\n", h);
    } else {
        return 0;
    }
    fflush(stdout);
    return 1;
}

/* ---- target ----------------------------------------------------------- */

static atomic_int stop;

static void *progress_main(void *arg)
{
    (void)arg;
    struct fi_cq_data_entry ents[64];
    while (!atomic_load(&stop)) {
        ssize_t n = fi_cq_sread(cq, ents, 64, NULL, 100);
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            fi_cq_readerr(cq, &err, 0);
        }
    }
    return NULL;
}

static int run_target(void)
{
    print_address();
    pthread_t thread;
    if (pthread_create(&thread, NULL, progress_main, NULL))
        die("cannot start the progress thread");
    char line[256];
    while (fgets(line, sizeof line, stdin)) /* until the orchestrator closes stdin */
        if (!check_command(line))
            die("bad command: %s", line);
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    return 0;
}

/* ---- initiator --------------------------------------------------------- */

struct piece {
    uint64_t off, len;
};

static fi_addr_t peer;
static uint64_t remote_key, remote_base;
static size_t iov_limit, max_msg;
static int ordered_writes;
static struct piece *pieces;  /* one iteration's pieces, in order */
static struct fi_context2 *ctx; /* one per op of an iteration */
static size_t ctx_cap;

static void wait_completions(size_t want)
{
    struct fi_cq_data_entry ents[64];
    size_t got = 0;
    while (got < want) {
        ssize_t n = fi_cq_sread(cq, ents, 64, NULL, 1000);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            fi_cq_readerr(cq, &err, 0);
            die("operation failed: %s", fi_strerror(err.err));
        } else if (n != -FI_EAGAIN) {
            die("fi_cq_sread: %s", fi_strerror((int)-n));
        }
    }
}

/* Posts one iteration (the pieces of the batch, packed into ops); returns the
 * number of ops. Completions reaped while the provider pushes back count in
 * *early. */
static size_t post_iteration(int write, size_t npieces, size_t *early)
{
    size_t ops = 0, p = 0;
    uint64_t off = 0;
    while (p < npieces) {
        struct iovec iov[MAX_IOV];
        void *desc[MAX_IOV];
        struct fi_rma_iov rma[MAX_IOV];
        size_t n = 0, total = 0;
        size_t np = p;
        uint64_t noff = off;
        while (n < iov_limit && np < npieces && total < max_msg) {
            uint64_t left = pieces[np].len - noff, room = max_msg - total;
            uint64_t seg = left < room ? left : room;
            iov[n].iov_base = buf + pieces[np].off + noff;
            iov[n].iov_len = seg;
            desc[n] = fi_mr_desc(mr);
            rma[n].addr = remote_base + pieces[np].off + noff;
            rma[n].len = seg;
            rma[n].key = remote_key;
            n++;
            total += seg;
            noff += seg;
            if (noff == pieces[np].len) {
                np++;
                noff = 0;
            }
        }
        if (ops == ctx_cap) {
            ctx_cap = ctx_cap ? ctx_cap * 2 : 64;
            ctx = realloc(ctx, ctx_cap * sizeof *ctx);
            if (!ctx)
                die("out of memory");
        }
        struct fi_msg_rma msg = {.msg_iov = iov, .desc = desc, .iov_count = n, .addr = peer,
                                 .rma_iov = rma, .rma_iov_count = n, .context = &ctx[ops]};
        ssize_t ret;
        for (;;) {
            uint64_t flags = !ordered_writes || np >= npieces ? FI_DELIVERY_COMPLETE : 0;
            ret = write ? fi_writemsg(ep, &msg, flags) : fi_readmsg(ep, &msg, 0);
            if (ret != -FI_EAGAIN)
                break;
            struct fi_cq_data_entry ents[64];
            ssize_t got = fi_cq_read(cq, ents, 64); /* progresses the provider */
            if (got > 0)
                *early += (size_t)got;
        }
        if (ret)
            die("posting: %s", fi_strerror((int)-ret));
        ops++;
        p = np;
        off = noff;
    }
    return ops;
}

static size_t layout(uint64_t block, uint64_t batch, uint64_t iovs)
{
    size_t n = (size_t)(batch * iovs);
    pieces = realloc(pieces, n * sizeof *pieces);
    if (!pieces)
        die("out of memory");
    uint64_t piece = block / iovs;
    for (uint64_t b = 0; b < batch; b++)
        for (uint64_t i = 0; i < iovs; i++)
            pieces[b * iovs + i] = (struct piece){
                .off = b * block + i * piece,
                .len = i + 1 == iovs ? block - i * piece : piece,
            };
    return n;
}

static int run_initiator(const char *addr_hex, const char *key, const char *base)
{
    uint8_t addr[256];
    size_t len = strlen(addr_hex) / 2;
    if (len == 0 || len > sizeof addr)
        die("bad peer address");
    for (size_t i = 0; i < len; i++)
        if (sscanf(addr_hex + 2 * i, "%2hhx", &addr[i]) != 1)
            die("bad peer address");
    if (fi_av_insert(av, addr, 1, &peer, 0, NULL) != 1)
        die("fi_av_insert failed");
    remote_key = strtoull(key, NULL, 10);
    remote_base = strtoull(base, NULL, 10);
    iov_limit = info->tx_attr->rma_iov_limit < info->tx_attr->iov_limit ? info->tx_attr->rma_iov_limit
                                                                        : info->tx_attr->iov_limit;
    if (iov_limit == 0)
        iov_limit = 1;
    if (iov_limit > MAX_IOV)
        iov_limit = MAX_IOV;
    max_msg = info->ep_attr->max_msg_size ? info->ep_attr->max_msg_size : (1ull << 30);
    ordered_writes = (info->tx_attr->msg_order & FI_ORDER_WAW) &&
                     info->ep_attr->max_order_waw_size >= max_msg;
    printf("ready\n");
    fflush(stdout);

    char line[256], cmd[16], op[16];
    uint64_t block, batch, iovs, iters;
    while (fgets(line, sizeof line, stdin)) {
        if (check_command(line))
            continue;
        if (!parse_row_command(line, cmd, op, &block, &batch, &iovs, &iters, buf_len))
            die("bad command: %s", line);
        int write = !strcmp(op, "WRITE");
        size_t npieces = layout(block, batch, iovs);
        uint64_t *post = calloc(iters ? iters : 1, sizeof *post);
        uint64_t *tx = calloc(iters ? iters : 1, sizeof *tx);
        if (!post || !tx)
            die("out of memory");
        uint64_t start = now_ns();
        for (uint64_t it = 0; it < iters; it++) {
            size_t early = 0;
            uint64_t t0 = now_ns();
            size_t ops = post_iteration(write, npieces, &early);
            uint64_t t1 = now_ns();
            wait_completions(ops - early);
            uint64_t t2 = now_ns();
            post[it] = t1 - t0;
            tx[it] = t2 - t1;
        }
        uint64_t total = now_ns() - start;
        if (!strcmp(cmd, "warmup"))
            printf("ok\n");
        else
            printf("result %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", total,
                   avg(post, iters), p99(post, iters), avg(tx, iters), p99(tx, iters));
        fflush(stdout);
        free(post);
        free(tx);
    }
    return 0;
}

int main(int argc, char **argv)
{
    int target = argc == 5 && !strcmp(argv[1], "target");
    int initiator = argc == 8 && !strcmp(argv[1], "initiator");
    if (!target && !initiator) {
        fprintf(stderr, "usage: %s target PROVIDER NODE BYTES\n"
                        "       %s initiator PROVIDER NODE BYTES ADDR_HEX KEY BASE\n",
                argv[0], argv[0]);
        return 2;
    }
    setup(argv[2], argv[3], strtoull(argv[4], NULL, 10), target ? TARGET_KEY : INITIATOR_KEY);
    return target ? run_target() : run_initiator(argv[5], argv[6], argv[7]);
}
