/* The CUDA driver API (libcuda.so.1), opened on first use. Only the entry
 * points the shim needs are declared here, so building needs no CUDA headers. */
#include <stdio.h>

#include "dynlib.h"
#include "internal.h"

typedef int CUresult; /* CUDA_SUCCESS == 0 */

static struct ixfer_dynlib cuda_lib = IXFER_DYNLIB_INIT(
    "IXFER_CUDA_SO", "libcuda.so.1",
    "install the NVIDIA driver or set IXFER_CUDA_SO; VRAM transfers are disabled");

static struct {
    CUresult (*init)(unsigned flags);
    CUresult (*driver_get_version)(int *v);
    CUresult (*device_get_count)(int *n);
    CUresult (*get_error_string)(CUresult r, const char **s);
    int ready;
} cu;

static int32_t cuda_fail(const char *what, CUresult r)
{
    const char *s = NULL;
    if (cu.get_error_string)
        cu.get_error_string(r, &s);
    return ixfer_fail(IXFER_ERR_BACKEND, "%s failed: CUDA error %d (%s)", what, r,
                      s ? s : "unknown");
}

int32_t ixfer_cuda_load(void)
{
    int32_t rc = ixfer_dynlib_open(&cuda_lib);
    if (rc != IXFER_OK)
        return rc;
    if (cu.ready)
        return IXFER_OK;
    cu.init = ixfer_dynlib_sym(&cuda_lib, "cuInit");
    cu.driver_get_version = ixfer_dynlib_sym(&cuda_lib, "cuDriverGetVersion");
    cu.device_get_count = ixfer_dynlib_sym(&cuda_lib, "cuDeviceGetCount");
    cu.get_error_string = ixfer_dynlib_sym(&cuda_lib, "cuGetErrorString");
    if (!cu.init || !cu.driver_get_version || !cu.device_get_count)
        return ixfer_fail(IXFER_ERR_LIBRARY_MISSING, "%s lacks the CUDA driver API entry points",
                          cuda_lib.path);
    CUresult r = cu.init(0);
    if (r != 0)
        return cuda_fail("cuInit", r);
    cu.ready = 1;
    return IXFER_OK;
}

const char *ixfer_cuda_path(void) { return cuda_lib.path[0] ? cuda_lib.path : "libcuda.so.1"; }

int32_t ixfer_cuda_driver_version(int32_t *out)
{
    int32_t rc = ixfer_cuda_load();
    if (rc != IXFER_OK)
        return rc;
    CUresult r = cu.driver_get_version(out);
    return r ? cuda_fail("cuDriverGetVersion", r) : IXFER_OK;
}

int32_t ixfer_cuda_device_count(int32_t *out)
{
    int32_t rc = ixfer_cuda_load();
    if (rc != IXFER_OK)
        return rc;
    CUresult r = cu.device_get_count(out);
    return r ? cuda_fail("cuDeviceGetCount", r) : IXFER_OK;
}
