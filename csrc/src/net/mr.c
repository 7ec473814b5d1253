/* Memory registration: the caller's regions (ixfer_mr_*, ixfer_vram_register)
 * and the helper that notify.c and staging.c use for their buffers too. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "core/error.h"
#include "gpu/cuda.h"
#include "net/agent.h"
#include "net/fabric_api.h"
#include "net/mr.h"

/* A random key of the domain's size, never 0. */
static uint64_t random_key(const struct ixfer_agent *a)
{
    uint64_t k = 0;
    while (!k) {
        if (getrandom(&k, sizeof k, 0) != sizeof k)
            k ^= (uint64_t)(uintptr_t)&k ^ (uint64_t)clock();
        k &= a->key_mask;
    }
    return k;
}

/* fi_mr_regattr of one range: host memory (iface FI_HMEM_SYSTEM) or device
 * memory of a CUDA device. */
static int reg_attr(struct fid_domain *domain, void *buf, size_t len, uint64_t access,
                    int32_t cuda_dev, uint64_t requested, struct fid_mr **mr)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct fi_mr_attr attr = {.mr_iov = &iov, .iov_count = 1, .access = access,
                              .requested_key = requested};
    if (cuda_dev >= 0) {
        attr.iface = FI_HMEM_CUDA;
        attr.device.cuda = cuda_dev;
    }
    /* FI_HMEM_DEVICE_ONLY: cuMemAlloc memory is never host-accessible; shm
     * (2.x) moves such memory by CUDA IPC, and any other by copies through
     * its own bounce buffers, several times slower. */
    return fi_mr_regattr(domain, &attr, cuda_dev >= 0 ? FI_HMEM_DEVICE_ONLY : 0, mr);
}

static int reg_any(struct ixfer_agent *a, void *buf, size_t len, uint64_t access, int32_t cuda_dev,
                   struct fid_mr **mr, uint64_t *key)
{
    /* Without FI_MR_PROV_KEY the key is ours to choose, unique per domain:
     * random rather than 1, 2, 3..., so that a peer never given a region's
     * key cannot guess it; a clash (-FI_ENOKEY) draws again. */
    uint64_t requested;
    int ret, tries = 0;
    do {
        requested = random_key(a);
        ret = cuda_dev >= 0 ? reg_attr(a->domain, buf, len, access, cuda_dev, requested, mr)
                            : fi_mr_reg(a->domain, buf, len, access, 0, requested, 0, mr, NULL);
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

int ixfer_reg_mr(struct ixfer_agent *a, void *buf, size_t len, uint64_t access,
                 struct fid_mr **mr, uint64_t *key)
{
    return reg_any(a, buf, len, access, -1, mr, key);
}

static void close_mr(struct ixfer_mr *m)
{
    for (uint32_t r = 1; r < IXFER_MAX_RAILS; r++)
        if (m->rail_mr[r])
            fi_close(&m->rail_mr[r]->fid);
    if (m->mr)
        fi_close(&m->mr->fid);
}

/* Registers m (already in rail 0's domain) in the other rails' domains under
 * the same key (agent creation made sure keys are ours there), and gives
 * each rail its descriptor. Returns 0 or -FI_E*. */
static int reg_rails(struct ixfer_agent *a, struct ixfer_mr *m, uint64_t access)
{
    m->rail_desc[0] = m->desc;
    for (uint32_t r = 1; r < a->nrails; r++) {
        const struct net_rail *rail = &a->rails[r];
        /* The shm rail is opened without FI_HMEM (agent.c): device memory
         * never takes it (submit.c). */
        if (r == a->shm_rail && m->dev >= 0)
            continue;
        if (rail->own_domain) {
            int ret = reg_attr(rail->domain, (void *)(uintptr_t)m->addr, (size_t)m->len, access,
                               m->dev, m->key, &m->rail_mr[r]);
            if (ret) {
                m->rail_mr[r] = NULL;
                return ret;
            }
        }
        struct fid_mr *owner = rail->dom ? m->rail_mr[rail->dom] : m->mr;
        m->rail_desc[r] = fi_mr_desc(owner);
    }
    return 0;
}

static void add_mr(struct ixfer_agent *agent, struct ixfer_mr *m)
{
    pthread_mutex_lock(&agent->mr_lock);
    ixfer_list_push_front(&agent->mrs, &m->link);
    pthread_mutex_unlock(&agent->mr_lock);
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
    m->addr = addr;
    m->len = len;
    m->dev = -1;
    ret = reg_rails(agent, m, access);
    if (ret) {
        close_mr(m);
        free(m);
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_mr_reg of %llu bytes at 0x%llx on a rail's "
                          "domain: %s", (unsigned long long)len, (unsigned long long)addr,
                          ixfer_fab.strerror(-ret));
    }
    add_mr(agent, m);
    *key = m->key;
    *out = m;
    return IXFER_OK;
}

/* Whether key names no staged region of a (under mr_lock). */
static int staged_key_free(struct ixfer_agent *a, uint64_t key)
{
    IXFER_LIST_FOR_EACH(node, &a->mrs) {
        struct ixfer_mr *m = ixfer_container_of(node, struct ixfer_mr, link);
        if (m->staged && m->key == key)
            return 0;
    }
    return 1;
}

int32_t ixfer_vram_register(ixfer_agent *agent, uint64_t addr, uint64_t len, int32_t dev,
                            uint32_t flags, uint64_t *key, uint32_t *path, ixfer_mr **out)
{
    if (!agent || !key || !path || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    if (!addr || !len || dev < 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "device memory to register needs an address, "
                                                   "a non-zero length and a device");
    int32_t rc = ixfer_cuda_load();
    if (rc == IXFER_OK) /* a range past the allocation would let peers read what follows it */
        rc = ixfer_cuda_check_range(addr, len);
    if (rc != IXFER_OK)
        return rc;
    struct ixfer_mr *m = calloc(1, sizeof *m);
    if (!m)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    *m = (struct ixfer_mr){.agent = agent, .addr = addr, .len = len, .dev = dev};
    int direct = agent->hmem && !(flags & IXFER_VRAM_REG_STAGED) && !ixfer_cuda_emulated();
    int ret = direct ? reg_any(agent, (void *)(uintptr_t)addr, (size_t)len,
                               FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE, dev, &m->mr,
                               &m->key)
                     : 0;
    if (direct && ret && agent->vram_mode == IXFER_VRAM_GPUDIRECT) {
        free(m);
        return ixfer_fail(IXFER_ERR_NOT_SUPPORTED, "the provider refused device memory of CUDA "
                                                   "device %d (fi_mr_regattr: %s)",
                          dev, ixfer_fab.strerror(-ret));
    }
    if (direct && !ret) {
        m->desc = fi_mr_desc(m->mr);
        ret = reg_rails(agent, m, FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE);
        if (ret) {
            close_mr(m);
            free(m);
            return ixfer_fail(IXFER_ERR_BACKEND, "device memory on a rail's domain "
                              "(fi_mr_regattr: %s)", ixfer_fab.strerror(-ret));
        }
        add_mr(agent, m);
        *path = IXFER_PATH_GPUDIRECT;
    } else {
        /* Staged: only this agent's progress thread touches it, by key. */
        m->staged = 1;
        pthread_mutex_lock(&agent->mr_lock);
        do
            m->key = random_key(agent);
        while (!staged_key_free(agent, m->key));
        ixfer_list_push_front(&agent->mrs, &m->link);
        pthread_mutex_unlock(&agent->mr_lock);
        *path = IXFER_PATH_STAGED;
    }
    *key = m->key;
    *out = m;
    return IXFER_OK;
}

struct ixfer_mr *ixfer_mr_copy_begin(struct ixfer_agent *a, uint64_t key, uint64_t addr,
                                     uint64_t len)
{
    struct ixfer_mr *found = NULL;
    pthread_mutex_lock(&a->mr_lock);
    IXFER_LIST_FOR_EACH(node, &a->mrs) {
        struct ixfer_mr *m = ixfer_container_of(node, struct ixfer_mr, link);
        if (m->staged && m->key == key && addr >= m->addr && len <= m->len &&
            addr - m->addr <= m->len - len) {
            found = m;
            m->copying++;
            break;
        }
    }
    pthread_mutex_unlock(&a->mr_lock);
    return found;
}

void ixfer_mr_copy_end(struct ixfer_mr *m)
{
    struct ixfer_agent *a = m->agent;
    pthread_mutex_lock(&a->mr_lock);
    if (--m->copying == 0)
        pthread_cond_broadcast(&a->mr_idle);
    pthread_mutex_unlock(&a->mr_lock);
}

int32_t ixfer_mr_deregister(ixfer_mr *m)
{
    if (!m)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null registration");
    struct ixfer_agent *a = m->agent;
    pthread_mutex_lock(&a->mr_lock);
    ixfer_list_remove(&m->link);
    /* A device copy of a staged region takes at most a chunk's time. */
    while (m->copying)
        pthread_cond_wait(&a->mr_idle, &a->mr_lock);
    pthread_mutex_unlock(&a->mr_lock);
    int ret = 0;
    for (uint32_t r = 1; r < IXFER_MAX_RAILS; r++)
        if (m->rail_mr[r])
            fi_close(&m->rail_mr[r]->fid);
    if (m->mr)
        ret = fi_close(&m->mr->fid);
    free(m);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_close(mr): %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

void ixfer_mr_close_all(struct ixfer_agent *a)
{
    IXFER_LIST_FOR_EACH_SAFE(node, &a->mrs) {
        struct ixfer_mr *m = ixfer_container_of(node, struct ixfer_mr, link);
        close_mr(m);
        free(m);
    }
    ixfer_list_init(&a->mrs);
}
