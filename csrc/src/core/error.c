/* Thread-local "last error" storage behind ixfer_last_error(), and the
 * mapping of system errors to statuses. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/error.h"

static _Thread_local char last_error[1024];

int32_t ixfer_fail(int32_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *ixfer_last_error(void) { return last_error; }

int32_t ixfer_errno_status(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
        return IXFER_ERR_NOT_FOUND;
    case EACCES:
    case EPERM:
    case EROFS:
    case EBADF: /* a write to a file opened read-only, or the reverse */
        return IXFER_ERR_NOT_ALLOWED;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return IXFER_ERR_NO_SPACE;
    case EINVAL: /* the kernel's word for I/O that O_DIRECT cannot do */
    case EISDIR: /* a directory opened for writing */
    case ENAMETOOLONG:
        return IXFER_ERR_INVALID_PARAM;
    default:
        return IXFER_ERR_BACKEND;
    }
}
