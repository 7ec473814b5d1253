/* The CUDA driver API (libcuda.so.1), opened on first use. Only the entry
 * points the shim needs are declared here, so building needs no CUDA headers.
 * Every call runs in the primary context of the device it concerns (the one
 * the CUDA runtime and frameworks use too), made current on the calling
 * thread first: the driver API has no implicit context. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/dynlib.h"
#include "core/error.h"
#include "gpu/cuda.h"

typedef int CUresult; /* CUDA_SUCCESS == 0 */
typedef void *CUcontext;

#define CUDA_ERROR_INVALID_VALUE 1
#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_POINTER_ATTRIBUTE_RANGE_START_ADDR 11
#define CU_POINTER_ATTRIBUTE_RANGE_SIZE 12
#define CU_MEMORYTYPE_DEVICE 2
#define CU_MEMHOSTREGISTER_PORTABLE 1
#define MAX_DEVICES 64

static struct ixfer_dynlib cuda_lib = IXFER_DYNLIB_INIT(
    "IXFER_CUDA_SO", "libcuda.so.1",
    "install the NVIDIA driver or set IXFER_CUDA_SO; VRAM transfers are disabled");

static struct {
    CUresult (*init)(unsigned flags);
    CUresult (*driver_get_version)(int *v);
    CUresult (*device_get_count)(int *n);
    CUresult (*get_error_string)(CUresult r, const char **s);
    CUresult (*device_get)(int *dev, int ordinal);
    CUresult (*primary_ctx_retain)(CUcontext *ctx, int dev);
    CUresult (*ctx_set_current)(CUcontext ctx);
    CUresult (*ctx_get_current)(CUcontext *ctx);
    CUresult (*mem_alloc)(uint64_t *ptr, size_t len);
    CUresult (*mem_free)(uint64_t ptr);
    CUresult (*memcpy_htod)(uint64_t dst, const void *src, size_t len);
    CUresult (*memcpy_dtoh)(void *dst, uint64_t src, size_t len);
    CUresult (*memset_d8)(uint64_t dst, unsigned char v, size_t len);
    CUresult (*pointer_get_attribute)(void *data, int attribute, uint64_t ptr);
    CUresult (*host_register)(void *p, size_t len, unsigned flags);
    CUresult (*host_unregister)(void *p);
} cu;

/* cu is filled once, under load_lock, by whichever thread gets there first
 * (file-engine workers may all bind on their first chunk at once). cu_ready is
 * set with release order only after every entry point is stored and cuInit
 * succeeded, and read with acquire order: a thread that sees it set sees all
 * of cu, and cu is never written again. A failed load leaves it clear, so the
 * next call tries again. */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int cu_ready;

/* Primary contexts, retained once per device for the life of the process. */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext contexts[MAX_DEVICES];

/* IXFER_EMULATE_VRAM=1 (ixfer.h): no driver; "device memory" is host memory
 * allocated here, recorded so that pointer queries know it. Lets CI run the
 * staging path end to end on machines without a GPU. */
#define EMU_MAX 4096
static pthread_mutex_t emu_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { uint64_t addr, len; } emu[EMU_MAX];

static int emulated(void)
{
    static atomic_int cached = -1;
    int v = atomic_load(&cached);
    if (v < 0) {
        const char *e = getenv("IXFER_EMULATE_VRAM");
        v = e && e[0] == '1';
        atomic_store(&cached, v);
    }
    return v;
}

int ixfer_cuda_emulated(void) { return emulated(); }

static int emu_find(uint64_t addr)
{
    for (int i = 0; i < EMU_MAX; i++)
        if (emu[i].len && addr >= emu[i].addr && addr < emu[i].addr + emu[i].len)
            return i;
    return -1;
}

static int32_t emu_alloc(uint64_t len, uint64_t *addr)
{
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return ixfer_fail(IXFER_ERR_BACKEND, "emulated device allocation of %llu bytes failed",
                          (unsigned long long)len);
    pthread_mutex_lock(&emu_lock);
    int slot = -1;
    for (int i = 0; i < EMU_MAX && slot < 0; i++)
        if (!emu[i].len)
            slot = i;
    if (slot >= 0) {
        emu[slot].addr = (uint64_t)(uintptr_t)p;
        emu[slot].len = len;
    }
    pthread_mutex_unlock(&emu_lock);
    if (slot < 0) {
        munmap(p, (size_t)len);
        return ixfer_fail(IXFER_ERR_BACKEND, "too many emulated device allocations");
    }
    *addr = (uint64_t)(uintptr_t)p;
    return IXFER_OK;
}

static int32_t emu_free(uint64_t addr)
{
    pthread_mutex_lock(&emu_lock);
    int i = emu_find(addr);
    uint64_t len = i >= 0 && emu[i].addr == addr ? emu[i].len : 0;
    if (len)
        emu[i].len = 0;
    pthread_mutex_unlock(&emu_lock);
    if (!len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "0x%llx is not device memory",
                          (unsigned long long)addr);
    munmap((void *)(uintptr_t)addr, (size_t)len);
    return IXFER_OK;
}

/* An emulated device copy: not inlined, so that ThreadSanitizer can be told
 * of it by name (scripts/sanitize.sh). */
__attribute__((noinline)) static void emu_copy(void *dst, const void *src, uint64_t len)
{
    memcpy(dst, src, (size_t)len);
}

static int32_t cuda_fail(const char *what, CUresult r)
{
    const char *s = NULL;
    if (cu.get_error_string)
        cu.get_error_string(r, &s);
    return ixfer_fail(IXFER_ERR_BACKEND, "%s failed: CUDA error %d (%s)", what, r,
                      s ? s : "unknown");
}

#define SYM(field, name) (cu.field = ixfer_dynlib_sym(&cuda_lib, name))

static int32_t load_locked(void)
{
    if (atomic_load_explicit(&cu_ready, memory_order_relaxed))
        return IXFER_OK;
    SYM(get_error_string, "cuGetErrorString");
    SYM(host_register, "cuMemHostRegister_v2");
    SYM(host_unregister, "cuMemHostUnregister");
    SYM(ctx_get_current, "cuCtxGetCurrent");
    if (!SYM(init, "cuInit") || !SYM(driver_get_version, "cuDriverGetVersion") ||
        !SYM(device_get_count, "cuDeviceGetCount") || !SYM(device_get, "cuDeviceGet") ||
        !SYM(primary_ctx_retain, "cuDevicePrimaryCtxRetain") ||
        !SYM(ctx_set_current, "cuCtxSetCurrent") || !SYM(mem_alloc, "cuMemAlloc_v2") ||
        !SYM(mem_free, "cuMemFree_v2") || !SYM(memcpy_htod, "cuMemcpyHtoD_v2") ||
        !SYM(memcpy_dtoh, "cuMemcpyDtoH_v2") || !SYM(memset_d8, "cuMemsetD8_v2") ||
        !SYM(pointer_get_attribute, "cuPointerGetAttribute"))
        return ixfer_fail(IXFER_ERR_LIBRARY_MISSING, "%s lacks the CUDA driver API entry points",
                          cuda_lib.path);
    CUresult r = cu.init(0);
    if (r != 0)
        return cuda_fail("cuInit", r);
    atomic_store_explicit(&cu_ready, 1, memory_order_release);
    return IXFER_OK;
}

int32_t ixfer_cuda_load(void)
{
    if (emulated())
        return IXFER_OK;
    if (atomic_load_explicit(&cu_ready, memory_order_acquire))
        return IXFER_OK;
    int32_t rc = ixfer_dynlib_open(&cuda_lib);
    if (rc != IXFER_OK)
        return rc;
    pthread_mutex_lock(&load_lock);
    rc = load_locked();
    pthread_mutex_unlock(&load_lock);
    return rc;
}

const char *ixfer_cuda_path(void)
{
    if (emulated())
        return "(emulated: IXFER_EMULATE_VRAM=1)";
    return cuda_lib.path[0] ? cuda_lib.path : "libcuda.so.1"; }

int32_t ixfer_cuda_driver_version(int32_t *out)
{
    int32_t rc = ixfer_cuda_load();
    if (rc != IXFER_OK || emulated()) {
        if (emulated())
            *out = 0;
        return rc;
    }
    CUresult r = cu.driver_get_version(out);
    return r ? cuda_fail("cuDriverGetVersion", r) : IXFER_OK;
}

int32_t ixfer_cuda_device_count(int32_t *out)
{
    int32_t rc = ixfer_cuda_load();
    if (rc != IXFER_OK || emulated()) {
        if (emulated())
            *out = 1;
        return rc;
    }
    CUresult r = cu.device_get_count(out);
    return r ? cuda_fail("cuDeviceGetCount", r) : IXFER_OK;
}

int32_t ixfer_cuda_bind(int32_t ordinal)
{
    int32_t rc = ixfer_cuda_load();
    if (rc != IXFER_OK)
        return rc;
    if (ordinal < 0 || ordinal >= MAX_DEVICES)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "CUDA device %d is out of range", ordinal);
    if (emulated())
        return ordinal == 0 ? IXFER_OK : ixfer_fail(IXFER_ERR_INVALID_PARAM, "no CUDA device %d", ordinal);
    pthread_mutex_lock(&ctx_lock);
    CUcontext ctx = contexts[ordinal];
    CUresult r = 0;
    const char *what = NULL;
    if (!ctx) {
        int dev = 0;
        if ((r = cu.device_get(&dev, ordinal)))
            what = "cuDeviceGet";
        else if ((r = cu.primary_ctx_retain(&ctx, dev)))
            what = "cuDevicePrimaryCtxRetain";
        else
            contexts[ordinal] = ctx;
    }
    pthread_mutex_unlock(&ctx_lock);
    if (what)
        return r == CUDA_ERROR_INVALID_VALUE || r == 101 /* CUDA_ERROR_INVALID_DEVICE */
                   ? ixfer_fail(IXFER_ERR_INVALID_PARAM, "no CUDA device %d", ordinal)
                   : cuda_fail(what, r);
    r = cu.ctx_set_current(ctx);
    return r ? cuda_fail("cuCtxSetCurrent", r) : IXFER_OK;
}

int32_t ixfer_cuda_pointer_device(uint64_t addr, int32_t *dev)
{
    if (!dev)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    *dev = -1;
    if (emulated()) {
        pthread_mutex_lock(&emu_lock);
        *dev = emu_find(addr) >= 0 ? 0 : -1;
        pthread_mutex_unlock(&emu_lock);
        return IXFER_OK;
    }
    /* Any context will do for the query: unified addressing covers all devices. */
    int32_t rc = ixfer_cuda_bind(0);
    if (rc != IXFER_OK)
        return rc;
    unsigned type = 0;
    CUresult r = cu.pointer_get_attribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, addr);
    /* Host memory CUDA never saw is "invalid value": it is still host memory. */
    if (r == CUDA_ERROR_INVALID_VALUE || (r == 0 && type != CU_MEMORYTYPE_DEVICE))
        return IXFER_OK;
    if (r)
        return cuda_fail("cuPointerGetAttribute", r);
    int ordinal = -1;
    r = cu.pointer_get_attribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, addr);
    if (r)
        return cuda_fail("cuPointerGetAttribute", r);
    *dev = ordinal;
    return IXFER_OK;
}

/* The allocation holding device address addr: [*start, *start + *len). */
static int32_t allocation_of(uint64_t addr, uint64_t *start, uint64_t *len)
{
    if (emulated()) {
        pthread_mutex_lock(&emu_lock);
        int i = emu_find(addr);
        *start = i >= 0 ? emu[i].addr : 0;
        *len = i >= 0 ? emu[i].len : 0;
        pthread_mutex_unlock(&emu_lock);
        return IXFER_OK;
    }
    size_t size = 0;
    CUresult r = cu.pointer_get_attribute(start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, addr);
    if (!r)
        r = cu.pointer_get_attribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, addr);
    *len = size;
    return r ? cuda_fail("cuPointerGetAttribute", r) : IXFER_OK;
}

/* Binds the context of the device that holds [addr, addr + len), which
 * must lie in one allocation: the driver would copy past its end into
 * whatever is mapped there. */
static int32_t bind_range(uint64_t addr, uint64_t len)
{
    int32_t dev = -1;
    int32_t rc = ixfer_cuda_pointer_device(addr, &dev);
    if (rc != IXFER_OK)
        return rc;
    if (dev < 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "0x%llx is not device memory",
                          (unsigned long long)addr);
    if ((rc = ixfer_cuda_bind(dev)) != IXFER_OK)
        return rc;
    uint64_t start = 0, size = 0;
    if ((rc = allocation_of(addr, &start, &size)) != IXFER_OK)
        return rc;
    if (len > start + size - addr)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM,
                          "[0x%llx, +%llu) runs past the end of its device allocation "
                          "(%llu bytes at 0x%llx)",
                          (unsigned long long)addr, (unsigned long long)len,
                          (unsigned long long)size, (unsigned long long)start);
    return IXFER_OK;
}

int32_t ixfer_cuda_check_range(uint64_t addr, uint64_t len) { return bind_range(addr, len); }

int32_t ixfer_cuda_alloc(int32_t dev, uint64_t len, uint64_t *addr)
{
    if (!addr || !len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "device allocation needs a non-zero length");
    int32_t rc = ixfer_cuda_bind(dev);
    if (rc != IXFER_OK || emulated())
        return rc != IXFER_OK ? rc : emu_alloc(len, addr);
    CUresult r = cu.mem_alloc(addr, (size_t)len);
    return r ? cuda_fail("cuMemAlloc", r) : IXFER_OK;
}

int32_t ixfer_cuda_free(uint64_t addr)
{
    if (emulated())
        return emu_free(addr);
    int32_t rc = bind_range(addr, 0);
    if (rc != IXFER_OK)
        return rc;
    CUresult r = cu.mem_free(addr);
    return r ? cuda_fail("cuMemFree", r) : IXFER_OK;
}

int32_t ixfer_cuda_htod(uint64_t dst, const void *src, uint64_t len)
{
    if (emulated()) {
        emu_copy((void *)(uintptr_t)dst, src, len);
        return IXFER_OK;
    }
    CUresult r = cu.memcpy_htod(dst, src, (size_t)len);
    return r ? cuda_fail("cuMemcpyHtoD", r) : IXFER_OK;
}

int32_t ixfer_cuda_dtoh(void *dst, uint64_t src, uint64_t len)
{
    if (emulated()) {
        emu_copy(dst, (const void *)(uintptr_t)src, len);
        return IXFER_OK;
    }
    CUresult r = cu.memcpy_dtoh(dst, src, (size_t)len);
    return r ? cuda_fail("cuMemcpyDtoH", r) : IXFER_OK;
}

int32_t ixfer_cuda_to_device(uint64_t dst, const void *src, uint64_t len)
{
    if (!src && len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null source");
    int32_t rc = bind_range(dst, len);
    return rc != IXFER_OK || !len ? rc : ixfer_cuda_htod(dst, src, len);
}

int32_t ixfer_cuda_from_device(void *dst, uint64_t src, uint64_t len)
{
    if (!dst && len)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null destination");
    int32_t rc = bind_range(src, len);
    return rc != IXFER_OK || !len ? rc : ixfer_cuda_dtoh(dst, src, len);
}

int32_t ixfer_cuda_fill(uint64_t addr, uint32_t value, uint64_t len)
{
    int32_t rc = bind_range(addr, len);
    if (rc != IXFER_OK || !len)
        return rc;
    if (emulated()) {
        memset((void *)(uintptr_t)addr, (int)(value & 0xff), (size_t)len);
        return IXFER_OK;
    }
    CUresult r = cu.memset_d8(addr, (unsigned char)value, (size_t)len);
    return r ? cuda_fail("cuMemsetD8", r) : IXFER_OK;
}

/* A host registration belongs to a context: pin and unpin both run in
 * device 0's primary context, on whichever thread calls them (the staging
 * pool is made on the progress thread and freed on the thread that closes
 * the agent, one of libuv's), and put the caller's context back. PORTABLE
 * pins the pages for every context, so copies to any device use them. */
static int in_device0(CUcontext *prev)
{
    *prev = NULL;
    if (!cu.ctx_get_current || cu.ctx_get_current(prev))
        return 0;
    return ixfer_cuda_bind(0) == IXFER_OK;
}

int ixfer_cuda_pin(void *p, uint64_t len)
{
    CUcontext prev;
    if (emulated() || !cu.host_register || !in_device0(&prev))
        return 0;
    int ok = cu.host_register(p, (size_t)len, CU_MEMHOSTREGISTER_PORTABLE) == 0;
    cu.ctx_set_current(prev);
    return ok;
}

void ixfer_cuda_unpin(void *p)
{
    CUcontext prev;
    if (emulated() || !cu.host_unregister || !in_device0(&prev))
        return;
    cu.host_unregister(p);
    cu.ctx_set_current(prev);
}
