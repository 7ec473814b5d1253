/* Plain host memory helpers for callers without a native allocator. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"

int32_t ixfer_mem_alloc(uint64_t len, uint64_t *addr)
{
    if (!addr || len == 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "allocation needs a non-zero length");
    long page = sysconf(_SC_PAGESIZE);
    void *p = NULL;
    if (posix_memalign(&p, page > 0 ? (size_t)page : 4096, (size_t)len))
        return ixfer_fail(IXFER_ERR_BACKEND, "cannot allocate %llu bytes",
                          (unsigned long long)len);
    memset(p, 0, (size_t)len);
    *addr = (uint64_t)(uintptr_t)p;
    return IXFER_OK;
}

void ixfer_mem_free(uint64_t addr) { free((void *)(uintptr_t)addr); }

uint64_t ixfer_mem_address(const void *ptr) { return (uint64_t)(uintptr_t)ptr; }

/* Memory for agent allocations, whose JavaScript views can outlive the
 * registration: retiring gives the pages back at once but keeps the range
 * mapped (reads see zeros, nothing crashes); the range is unmapped only when
 * no view can reach it any more. */
int32_t ixfer_mem_map(uint64_t len, uint64_t *addr)
{
    if (!addr || len == 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "allocation needs a non-zero length");
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return ixfer_fail(IXFER_ERR_BACKEND, "cannot map %llu bytes", (unsigned long long)len);
    *addr = (uint64_t)(uintptr_t)p;
    return IXFER_OK;
}

void ixfer_mem_retire(uint64_t addr, uint64_t len)
{
    madvise((void *)(uintptr_t)addr, (size_t)len, MADV_DONTNEED);
}

void ixfer_mem_unmap(uint64_t addr, uint64_t len) { munmap((void *)(uintptr_t)addr, (size_t)len); }
