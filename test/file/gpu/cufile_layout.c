/* Compiled on the GPU machine against the real cufile.h: checks that the
 * types gds.c declares by hand have cuFile's layout and values. */
#include <stddef.h>
#include <stdio.h>
#include <cufile.h>

#define SHOW(x) printf("%-40s %zu\n", #x, (size_t)(x))

int main(void)
{
    SHOW(sizeof(CUfileError_t));
    SHOW(sizeof(CUfileDescr_t));
    SHOW(offsetof(CUfileDescr_t, handle));
    SHOW(offsetof(CUfileDescr_t, fs_ops));
    SHOW(sizeof(CUfileIOParams_t));
    SHOW(offsetof(CUfileIOParams_t, u.batch.devPtr_base));
    SHOW(offsetof(CUfileIOParams_t, u.batch.size));
    SHOW(offsetof(CUfileIOParams_t, fh));
    SHOW(offsetof(CUfileIOParams_t, opcode));
    SHOW(offsetof(CUfileIOParams_t, cookie));
    SHOW(sizeof(CUfileIOEvents_t));
    SHOW(offsetof(CUfileIOEvents_t, status));
    SHOW(offsetof(CUfileIOEvents_t, ret));
    SHOW(CU_FILE_HANDLE_TYPE_OPAQUE_FD);
    SHOW(CUFILE_BATCH);
    SHOW(CUFILE_READ);
    SHOW(CUFILE_WRITE);
    SHOW(CUFILE_COMPLETE);
    SHOW(CUFILE_FAILED);
    printf("5027 is %s\n", CUFILE_ERRSTR(5027));
    return 0;
}
