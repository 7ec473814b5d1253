/* The few real exported functions of libfabric, resolved with dlvsym. Everything
 * else in libfabric's headers is an inline wrapper over the provider's ops
 * tables and is used directly. Never call fi_allocinfo() (it references
 * fi_dupinfo by name): use ixfer_fab.dupinfo(NULL). */
#ifndef IXFER_NET_FABRIC_API_H
#define IXFER_NET_FABRIC_API_H

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

struct ixfer_fabric_api {
    int (*getinfo)(uint32_t version, const char *node, const char *service, uint64_t flags,
                   const struct fi_info *hints, struct fi_info **info);
    void (*freeinfo)(struct fi_info *info);
    struct fi_info *(*dupinfo)(const struct fi_info *info);
    int (*fabric)(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context);
    uint32_t (*version)(void);
    const char *(*strerror)(int errnum);
};

extern struct ixfer_fabric_api ixfer_fab;

/* The libfabric API the shim's code is written for, asked of fi_getinfo
 * whatever library is loaded: the provider then reads the structs we hand it
 * with that version's layout and semantics. A newer library (2.x included)
 * keeps old API versions and the 1.x symbol versions (fabric_symvers.h). */
#define IXFER_FI_API_VERSION FI_VERSION(1, 17)
/* The headers the shim was compiled with: the oldest library it loads (a
 * newer header's inline wrappers may call ops an older library lacks). */
#define IXFER_FI_HEADER_VERSION FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)

#if FI_VERSION_LT(IXFER_FI_HEADER_VERSION, IXFER_FI_API_VERSION)
#error "ixfer needs libfabric 1.17 or newer headers"
#endif

/* Maps a provider error (positive FI_E*) to an ixfer status. */
int32_t ixfer_status_of(int fi_err);

#endif
