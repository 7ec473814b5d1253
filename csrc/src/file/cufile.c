/* cuFile (GPUDirect Storage), opened on first use. Declared here so that
 * building needs no cufile.h. */
#include "core/dynlib.h"
#include "file/files.h"

static struct ixfer_dynlib cufile_lib = IXFER_DYNLIB_INIT(
    "IXFER_CUFILE_SO", "libcufile.so.0",
    "install cuFile (CUDA's GPUDirect Storage) or set IXFER_CUFILE_SO; file transfers use "
    "POSIX I/O instead");

int32_t ixfer_cufile_load(void) { return ixfer_dynlib_open(&cufile_lib); }

void *ixfer_cufile_sym(const char *name) { return ixfer_dynlib_sym(&cufile_lib, name); }

const char *ixfer_cufile_path(void)
{
    return cufile_lib.path[0] ? cufile_lib.path : "libcufile.so.0";
}

int32_t ixfer_cufile_version(int32_t *out)
{
    int32_t rc = ixfer_cufile_load();
    if (rc != IXFER_OK)
        return rc;
    /* cuFileGetVersion exists only in newer cuFile releases. It returns
     * CUfileError_t, a struct of two ints returned in a register on x86-64, whose
     * first member (the cuFile status, 0 on success) is what an int reads. */
    int (*get_version)(int *) = (int (*)(int *))ixfer_dynlib_sym(&cufile_lib, "cuFileGetVersion");
    *out = -1;
    if (get_version && get_version(out) != 0)
        *out = -1;
    return IXFER_OK;
}
