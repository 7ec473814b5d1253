/* Error reporting shared by every part of the shim. Not part of the ABI. */
#ifndef IXFER_CORE_ERROR_H
#define IXFER_CORE_ERROR_H

#include "ixfer.h"

/* Records a printf-style message for ixfer_last_error() and returns code. */
int32_t ixfer_fail(int32_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps an errno of open/pread/pwrite (or cuFile's POSIX failures) to a status. */
int32_t ixfer_errno_status(int err);

#endif
