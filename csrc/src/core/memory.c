/* Plain host memory helpers for callers without a native allocator. */
#include <stdlib.h>
#include <string.h>
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
