/* Memory registration: the caller's regions (ixfer_mr_*) and the helper that
 * notify.c uses for its buffers too. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "core/error.h"
#include "net/agent.h"
#include "net/fabric_api.h"
#include "net/mr.h"

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
    ixfer_list_push_front(&agent->mrs, &m->link);
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
    ixfer_list_remove(&m->link);
    pthread_mutex_unlock(&a->mr_lock);
    int ret = fi_close(&m->mr->fid);
    free(m);
    if (ret)
        return ixfer_fail(IXFER_ERR_BACKEND, "fi_close(mr): %s", ixfer_fab.strerror(-ret));
    return IXFER_OK;
}

void ixfer_mr_close_all(struct ixfer_agent *a)
{
    IXFER_LIST_FOR_EACH_SAFE(node, &a->mrs) {
        struct ixfer_mr *m = ixfer_container_of(node, struct ixfer_mr, link);
        fi_close(&m->mr->fid);
        free(m);
    }
    ixfer_list_init(&a->mrs);
}
