/*
 * ixfer.h: the whole C ABI of the ixfer shim.
 *
 * Flat and handle-based so that it can be called through a foreign-function
 * interface (koffi) without a compiled Node addon. Every fallible call returns an
 * ixfer_status (0 on success, a negative code otherwise) and, on failure, leaves a
 * message for the calling thread in ixfer_last_error(). Results come back through
 * out-parameters.
 *
 * The shim itself links only libc, libdl and pthread: libfabric, the CUDA driver
 * and cuFile are dlopen()ed the first time they are needed.
 */
#ifndef IXFER_H
#define IXFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IXFER_API __attribute__((visibility("default")))

/* Bumped whenever a signature or struct below changes incompatibly. The
 * TypeScript loader refuses a shim whose ixfer_abi_version() differs. */
#define IXFER_ABI_VERSION 1

typedef enum ixfer_status {
    IXFER_OK = 0,
    IXFER_ERR_INVALID_PARAM = -1,
    IXFER_ERR_BACKEND = -2,
    IXFER_ERR_NOT_FOUND = -3,
    IXFER_ERR_MISMATCH = -4,
    IXFER_ERR_NOT_ALLOWED = -5,
    IXFER_ERR_REPOST_ACTIVE = -6,
    IXFER_ERR_NOT_SUPPORTED = -7,
    IXFER_ERR_REMOTE_DISCONNECT = -8,
    IXFER_ERR_CANCELED = -9,
    IXFER_ERR_TIMEOUT = -10,
    IXFER_ERR_LIBRARY_MISSING = -11,
} ixfer_status;

/* ---- identity --------------------------------------------------------- */

IXFER_API int32_t ixfer_abi_version(void);
IXFER_API const char *ixfer_version(void);
/* Hash of csrc/ and binding.gyp at build time (scripts/source-hash.cjs). */
IXFER_API const char *ixfer_build_hash(void);
/* Message of the last failed call on this thread ("" if none). */
IXFER_API const char *ixfer_last_error(void);

/* ---- optional libraries, opened lazily ---------------------------------- */

/* Opens libfabric (IXFER_LIBFABRIC_SO or libfabric.so.1). Idempotent. */
IXFER_API int32_t ixfer_fabric_load(void);
/* Path that was opened, or the one that was tried and failed. */
IXFER_API const char *ixfer_fabric_path(void);
/* Runtime version as FI_VERSION(major, minor); 0 when not loaded. */
IXFER_API uint32_t ixfer_fabric_version(void);
/* libfabric's text for a provider error number (FI_E*, positive). */
IXFER_API const char *ixfer_fabric_strerror(int32_t fi_errno);
/* Version the shim was compiled against, FI_VERSION(major, minor). */
IXFER_API uint32_t ixfer_fabric_header_version(void);

IXFER_API int32_t ixfer_cuda_load(void);
IXFER_API const char *ixfer_cuda_path(void);
IXFER_API int32_t ixfer_cuda_driver_version(int32_t *out);
IXFER_API int32_t ixfer_cuda_device_count(int32_t *out);

IXFER_API int32_t ixfer_cufile_load(void);
IXFER_API const char *ixfer_cufile_path(void);
/* cuFile library version (e.g. 1150 for 1.15.0); -1 when the library is too
 * old to report it. */
IXFER_API int32_t ixfer_cufile_version(int32_t *out);

/* ---- provider discovery --------------------------------------------------- */

#define IXFER_NAME_MAX 64

typedef struct ixfer_provider_info {
    char provider[IXFER_NAME_MAX]; /* e.g. "tcp;ofi_rxm" */
    char fabric[IXFER_NAME_MAX];   /* e.g. "127.0.0.1/32" */
    char domain[IXFER_NAME_MAX];   /* e.g. "lo" */
    uint64_t mr_mode;              /* FI_MR_* bits the provider returned */
    uint64_t max_msg_size;
    uint64_t inject_size;
    uint64_t cq_data_size;
    uint64_t caps;
    uint32_t iov_limit;     /* min of tx iov_limit and rma_iov_limit */
    uint32_t rma_iov_limit;
    uint32_t tx_size;
    uint32_t data_progress; /* enum fi_progress */
    uint32_t control_progress;
    uint32_t hmem;          /* 1 when FI_HMEM is offered */
    uint32_t addr_format;
    uint32_t reserved;
} ixfer_provider_info;

/* Lists (provider, domain) pairs offering FI_EP_RDM with RMA. prov may be NULL
 * for all providers. Writes at most max entries, sets *count to the number
 * found (which can exceed max). */
IXFER_API int32_t ixfer_fabric_query(const char *prov, ixfer_provider_info *out,
                                     uint32_t max, uint32_t *count);

/* ---- agents ----------------------------------------------------------- */

typedef struct ixfer_agent ixfer_agent;
typedef struct ixfer_mr ixfer_mr;

typedef struct ixfer_agent_config {
    const char *provider; /* libfabric provider name, e.g. "tcp" (required) */
    const char *node;     /* address to bind, e.g. "127.0.0.1"; NULL: any */
    const char *domain;   /* domain (interface/device) name, e.g. "lo"; NULL: any */
} ixfer_agent_config;

/* Opens fabric, domain, endpoint, CQ and AV, and starts the progress thread. */
IXFER_API int32_t ixfer_agent_create(const ixfer_agent_config *cfg, ixfer_agent **out);
/* Stops the progress thread and closes everything. Outstanding work is
 * abandoned: no events are delivered after this returns. */
IXFER_API void ixfer_agent_destroy(ixfer_agent *agent);

/* What the opened endpoint actually offers (same layout as discovery). */
IXFER_API int32_t ixfer_agent_info(ixfer_agent *agent, ixfer_provider_info *out);
/* The endpoint's address. *len: in, capacity of buf; out, bytes needed. */
IXFER_API int32_t ixfer_agent_address(ixfer_agent *agent, uint8_t *buf, uint64_t *len);
/* Read end of a pipe that becomes readable when events are waiting. The
 * caller takes ownership of the descriptor and closes it; call once. */
IXFER_API int32_t ixfer_agent_take_event_fd(ixfer_agent *agent, int32_t *fd);

/* Registers [addr, addr+len) for local and remote READ/WRITE. *key receives
 * the remote key to publish. */
IXFER_API int32_t ixfer_mr_register(ixfer_agent *agent, uint64_t addr, uint64_t len,
                                    uint64_t *key, ixfer_mr **out);
IXFER_API int32_t ixfer_mr_deregister(ixfer_mr *mr);

/* Adds a peer address to the address vector; *peer receives its handle. */
IXFER_API int32_t ixfer_peer_insert(ixfer_agent *agent, const uint8_t *addr, uint64_t len,
                                    uint64_t *peer);

/* Removes a peer from the address vector, closing its connection. Its
 * transfers still waiting to be posted fail with IXFER_ERR_REMOTE_DISCONNECT.
 * Inserting the address again gives a fresh connection: after a provider
 * error the old one may be unusable (tcp 1.17 drops it on a bad remote key). */
IXFER_API int32_t ixfer_peer_remove(ixfer_agent *agent, uint64_t peer);

/* ---- transfers ---------------------------------------------------------- */

enum { IXFER_OP_WRITE = 0, IXFER_OP_READ = 1 };

/* One local/remote pair of equal length. remote_addr is already what the
 * provider wants: a virtual address when FI_MR_VIRT_ADDR is set, else an
 * offset into the remote region. */
typedef struct ixfer_iov_pair {
    uint64_t local_addr;
    uint64_t len;
    ixfer_mr *local_mr;
    uint64_t remote_addr;
    uint64_t remote_key;
} ixfer_iov_pair;

/* Queues a transfer for the progress thread. The pairs are copied; the
 * memory they describe must stay registered until its event arrives. The
 * event carries user_id. */
IXFER_API int32_t ixfer_xfer_post(ixfer_agent *agent, uint32_t op, uint64_t peer,
                                  const ixfer_iov_pair *pairs, uint32_t count,
                                  uint64_t user_id);

/* Stops posting what is left of transfer user_id. Its event arrives once the
 * operations already handed to the provider have finished, with status
 * (IXFER_ERR_CANCELED or IXFER_ERR_TIMEOUT) unless it had already failed or
 * finished. Unknown ids are ignored. */
IXFER_API int32_t ixfer_xfer_cancel(ixfer_agent *agent, uint64_t user_id, int32_t status);

/* ---- events ------------------------------------------------------------- */

enum { IXFER_EVENT_XFER_DONE = 1 };

typedef struct ixfer_event {
    uint64_t user_id;
    uint32_t type;
    int32_t status;   /* IXFER_OK or a negative ixfer_status */
    int32_t fi_errno; /* provider error (positive FI_E* value) or 0 */
    uint32_t reserved;
} ixfer_event;

/* Copies up to max waiting events to out and returns how many. Never blocks. */
IXFER_API uint32_t ixfer_agent_drain(ixfer_agent *agent, ixfer_event *out, uint32_t max);

/* ---- raw memory (for tests and for users without their own allocator) -- */

/* Page-aligned, zeroed native memory. */
IXFER_API int32_t ixfer_mem_alloc(uint64_t len, uint64_t *addr);
IXFER_API void ixfer_mem_free(uint64_t addr);
/* Address of a caller-supplied buffer (valid while the caller keeps it). */
IXFER_API uint64_t ixfer_mem_address(const void *ptr);
IXFER_API void ixfer_mem_copy(uint64_t dst, uint64_t src, uint64_t len);

#ifdef __cplusplus
}
#endif

#endif /* IXFER_H */
