/* Files for loopback transfers: opened by path or adopted by descriptor, with
 * what O_DIRECT asks of the I/O that uses them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "file/files.h"

/* Without statx's direct I/O fields (kernels before 6.1), a page is the
 * alignment every filesystem accepts. */
#define DIO_FALLBACK_ALIGN 4096

static void dio_alignment(struct ixfer_file *f)
{
    f->mem_align = f->offset_align = 1;
    if (!(f->flags & IXFER_FILE_DIRECT))
        return;
    f->mem_align = f->offset_align = DIO_FALLBACK_ALIGN;
#ifdef STATX_DIOALIGN
    struct statx st;
    if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 &&
        (st.stx_mask & STATX_DIOALIGN) && st.stx_dio_mem_align && st.stx_dio_offset_align) {
        f->mem_align = st.stx_dio_mem_align;
        f->offset_align = st.stx_dio_offset_align;
    }
#endif
}

static int32_t make_file(int fd, int owned, uint32_t flags, ixfer_file **out)
{
    struct ixfer_file *f = calloc(1, sizeof *f);
    if (!f)
        return ixfer_fail(IXFER_ERR_BACKEND, "out of memory");
    f->fd = fd;
    f->owned = owned;
    f->flags = flags;
    dio_alignment(f);
    *out = f;
    return IXFER_OK;
}

/* Files with offsets only: a FIFO, socket, terminal or pipe has none (lseek
 * fails with ESPIPE) and would block or fail the I/O threads; a directory
 * cannot be read or written. Regular files, block devices and seekable
 * character devices (/dev/zero, /dev/full) pass. */
static int32_t check_positional(int fd, const char *what)
{
    struct stat st;
    if (fstat(fd, &st))
        return ixfer_fail(IXFER_ERR_BACKEND, "fstat '%s': %s", what, strerror(errno));
    const char *kind = S_ISFIFO(st.st_mode)  ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISDIR(st.st_mode)  ? "a directory"
                                              : NULL;
    if (!kind && lseek(fd, 0, SEEK_CUR) < 0 && errno == ESPIPE)
        kind = "not seekable (a terminal or pipe)";
    if (!kind)
        return IXFER_OK;
    return ixfer_fail(IXFER_ERR_INVALID_PARAM, "'%s' is %s: only files with offsets (regular "
                      "files, block devices) can be registered", what, kind);
}

int32_t ixfer_file_open(const char *path, uint32_t flags, ixfer_file **out)
{
    if (!path || !*path || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "a file needs a path");
    if (!(flags & (IXFER_FILE_READ | IXFER_FILE_WRITE)))
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "open '%s' for reading, writing or both", path);
    int oflags = O_CLOEXEC;
    if ((flags & IXFER_FILE_READ) && (flags & IXFER_FILE_WRITE))
        oflags |= O_RDWR;
    else
        oflags |= flags & IXFER_FILE_WRITE ? O_WRONLY : O_RDONLY;
    if (flags & IXFER_FILE_CREATE)
        oflags |= O_CREAT;
    if (flags & IXFER_FILE_TRUNCATE)
        oflags |= O_TRUNC;
    if (flags & IXFER_FILE_DIRECT)
        oflags |= O_DIRECT;
    /* O_NONBLOCK: opening a FIFO must not wait for its other end on the
     * caller's (JavaScript) thread; cleared once the file is known to have offsets. */
    int fd = flags & IXFER_FILE_MEMORY ? memfd_create(path, MFD_CLOEXEC)
                                       : open(path, oflags | O_NONBLOCK | O_NOCTTY, 0644);
    if (fd < 0) {
        int err = errno;
        if (err == ENXIO) /* O_WRONLY|O_NONBLOCK on a FIFO without a reader, or a socket */
            return ixfer_fail(IXFER_ERR_INVALID_PARAM, "'%s' is a FIFO or socket: only files "
                              "with offsets (regular files, block devices) can be registered", path);
        if (err == EINVAL && (flags & IXFER_FILE_DIRECT))
            return ixfer_fail(IXFER_ERR_NOT_SUPPORTED,
                              "open '%s': the filesystem does not support O_DIRECT", path);
        return ixfer_fail(ixfer_errno_status(err), "open '%s': %s", path, strerror(err));
    }
    if (!(flags & IXFER_FILE_MEMORY)) {
        int32_t rc = check_positional(fd, path);
        if (rc != IXFER_OK) {
            close(fd);
            return rc;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    }
    if (flags & IXFER_FILE_MEMORY) /* never O_DIRECT */
        flags &= ~(uint32_t)IXFER_FILE_DIRECT;
    int32_t rc = make_file(fd, 1, flags & ~(uint32_t)(IXFER_FILE_CREATE | IXFER_FILE_TRUNCATE), out);
    if (rc != IXFER_OK)
        close(fd);
    return rc;
}

int32_t ixfer_file_adopt(int32_t fd, ixfer_file **out)
{
    if (!out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "file descriptor %d: %s", fd, strerror(errno));
    int acc = fl & O_ACCMODE;
    /* With O_APPEND, Linux's pwrite and pwritev ignore the offset and write at
     * the end of the file: every write would land in the wrong place and still
     * report success. The flag is the open file description's, shared with the
     * caller, so it is refused rather than cleared behind their back. */
    if ((fl & O_APPEND) && acc != O_RDONLY)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "file descriptor %d is open with O_APPEND, "
                          "which makes positioned writes append: open it without O_APPEND", fd);
    char what[32];
    snprintf(what, sizeof what, "fd %d", fd);
    int32_t rc = check_positional(fd, what);
    if (rc != IXFER_OK)
        return rc;
    uint32_t flags = (acc == O_RDONLY || acc == O_RDWR ? IXFER_FILE_READ : 0) |
                     (acc == O_WRONLY || acc == O_RDWR ? IXFER_FILE_WRITE : 0) |
                     (fl & O_DIRECT ? IXFER_FILE_DIRECT : 0);
    return make_file(fd, 0, flags, out);
}

int32_t ixfer_file_stat(ixfer_file *f, ixfer_file_info *out)
{
    if (!f || !out)
        return ixfer_fail(IXFER_ERR_INVALID_PARAM, "null argument");
    struct stat st;
    if (fstat(f->fd, &st))
        return ixfer_fail(IXFER_ERR_BACKEND, "fstat: %s", strerror(errno));
    out->size = (uint64_t)st.st_size;
    out->flags = f->flags;
    out->mem_align = f->mem_align;
    out->offset_align = f->offset_align;
    out->reserved = 0;
    return IXFER_OK;
}

void ixfer_file_close(ixfer_file *f)
{
    if (!f)
        return;
    ixfer_gds_file_release(f);
    if (f->owned)
        close(f->fd);
    free(f);
}
