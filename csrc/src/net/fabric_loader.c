/* Opens libfabric at first use, resolves its exported functions, and
 * translates its errors. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "net/fabric_api.h"
#include "net/fabric_symvers.h"

/* A custom-libfabric build (scripts/rebuild.sh) bakes in its own path. */
#ifndef IXFER_LIBFABRIC_DEFAULT
#define IXFER_LIBFABRIC_DEFAULT "libfabric.so.1"
#endif

struct ixfer_fabric_api ixfer_fab;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_state; /* 0 untried, 1 loaded, -1 failed */
static char load_path[512];
static char load_error[768];

static int resolve(void *lib, void **slot, const char *name, const char *version)
{
    *slot = dlvsym(lib, name, version);
    if (*slot)
        return 0;
    snprintf(load_error, sizeof load_error,
             "%s has no symbol %s@%s; the shim was built against libfabric %d.%d headers, "
             "rebuild it against this libfabric with scripts/rebuild.sh",
             load_path, name, version, FI_MAJOR_VERSION, FI_MINOR_VERSION);
    return -1;
}

#define RESOLVE(field, sym) resolve(lib, (void **)&ixfer_fab.field, #sym, IXFER_SYMVER_##sym)

static int load_locked(void)
{
    /* rxm over tcp posts FI_OFI_RXM_MSG_RX_SIZE bounce buffers of 16 KiB
     * per endpoint, 4096 by default: 64 MiB of memory per agent for no
     * speed we could measure (ixfer bench, notification bursts) over 256.
     * libfabric reads it once, at its first call; a value set by the user
     * wins. */
    setenv("FI_OFI_RXM_MSG_RX_SIZE", "256", 0);
    const char *env = getenv("IXFER_LIBFABRIC_SO");
    snprintf(load_path, sizeof load_path, "%s", env && *env ? env : IXFER_LIBFABRIC_DEFAULT);
    void *lib = dlopen(load_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error,
                 "cannot open %s (%s); install libfabric (Debian/Ubuntu: apt-get install "
                 "libfabric1) or set IXFER_LIBFABRIC_SO to the library's path",
                 load_path, dlerror());
        return -1;
    }
    if (RESOLVE(getinfo, fi_getinfo) || RESOLVE(freeinfo, fi_freeinfo) ||
        RESOLVE(dupinfo, fi_dupinfo) || RESOLVE(fabric, fi_fabric) ||
        RESOLVE(version, fi_version) || RESOLVE(strerror, fi_strerror)) {
        dlclose(lib);
        return -1;
    }
    /* Resolve the real path for reporting. */
    char origin[PATH_MAX];
    if (!strchr(load_path, '/') && dlinfo(lib, RTLD_DI_ORIGIN, origin) == 0 &&
        strlen(origin) + strlen(load_path) + 2 <= sizeof load_path) {
        char name[sizeof load_path];
        memcpy(name, load_path, sizeof name);
        snprintf(load_path, sizeof load_path, "%.*s/%.*s", 255, origin, 255, name);
    }
    /* A newer library, 2.x included, serves the API version we ask for. */
    uint32_t v = ixfer_fab.version();
    if (FI_VERSION_LT(v, IXFER_FI_HEADER_VERSION)) {
        snprintf(load_error, sizeof load_error,
                 "%s is libfabric %u.%u, older than the %d.%d headers this shim was built "
                 "with; install libfabric %d.%d or newer, or rebuild the shim against this one "
                 "with scripts/rebuild.sh",
                 load_path, FI_MAJOR(v), FI_MINOR(v), FI_MAJOR_VERSION, FI_MINOR_VERSION,
                 FI_MAJOR_VERSION, FI_MINOR_VERSION);
        memset(&ixfer_fab, 0, sizeof ixfer_fab);
        dlclose(lib);
        return -1;
    }
    return 0; /* the library stays open for the life of the process */
}

int32_t ixfer_fabric_load(void)
{
    pthread_mutex_lock(&load_lock);
    if (load_state == 0)
        load_state = load_locked() == 0 ? 1 : -1;
    int state = load_state;
    pthread_mutex_unlock(&load_lock);
    if (state < 0)
        return ixfer_fail(IXFER_ERR_LIBRARY_MISSING, "%s", load_error);
    return IXFER_OK;
}

const char *ixfer_fabric_path(void) { return load_path[0] ? load_path : IXFER_LIBFABRIC_DEFAULT; }

uint32_t ixfer_fabric_version(void)
{
    return ixfer_fabric_load() == IXFER_OK ? ixfer_fab.version() : 0;
}

uint32_t ixfer_fabric_header_version(void) { return IXFER_FI_HEADER_VERSION; }

uint32_t ixfer_fabric_api_version(void) { return IXFER_FI_API_VERSION; }

const char *ixfer_fabric_strerror(int32_t fi_errno)
{
    return ixfer_fabric_load() == IXFER_OK ? ixfer_fab.strerror(fi_errno) : "libfabric not loaded";
}

int32_t ixfer_status_of(int fi_err)
{
    switch (fi_err) {
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_ENETDOWN:
    case FI_ESHUTDOWN:
    case FI_EIO:
    /* The shim never calls fi_cancel: a provider-canceled op is one flushed
     * when its connection went down (tcp 1.17 does this when the peer dies
     * or rejects a key). */
    case FI_ECANCELED:
    /* sockets refuses a post to a peer it cannot connect to (any more) with
     * -FI_ENOENT. */
    case FI_ENOENT:
        return IXFER_ERR_REMOTE_DISCONNECT;
    case FI_ETIMEDOUT:
        return IXFER_ERR_TIMEOUT;
    case FI_EACCES:
    case FI_EPERM:
        return IXFER_ERR_NOT_ALLOWED;
    default:
        return IXFER_ERR_BACKEND;
    }
}
