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
#define IXFER_ABI_VERSION 4

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
    IXFER_ERR_END_OF_FILE = -12, /* a file read reached the end of the file */
    IXFER_ERR_NO_SPACE = -13,    /* a file write found the disk (or quota) full */
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
/* Version the shim was compiled against, FI_VERSION(major, minor): the oldest
 * libfabric it loads. */
IXFER_API uint32_t ixfer_fabric_header_version(void);
/* The API version the shim asks fi_getinfo for, FI_VERSION(major, minor). */
IXFER_API uint32_t ixfer_fabric_api_version(void);

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
#define IXFER_REASON_MAX 256

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
    uint32_t addr_format;   /* enum fi_addr_format */
    uint32_t reserved;
    /* Why ixfer refuses this provider (agents cannot be created on it), or "". */
    char unsupported[IXFER_REASON_MAX];
} ixfer_provider_info;

/* Lists (provider, domain) pairs offering FI_EP_RDM with RMA (hmem set on
 * those that also answer a query for FI_HMEM). prov may be NULL for all
 * providers. Writes at most max entries, sets *count to the number
 * found (which can exceed max). */
IXFER_API int32_t ixfer_fabric_query(const char *prov, ixfer_provider_info *out,
                                     uint32_t max, uint32_t *count);

/* ---- agents ----------------------------------------------------------- */

typedef struct ixfer_agent ixfer_agent;
typedef struct ixfer_mr ixfer_mr;

/* Where one rail (endpoint, CQ and address vector) of an agent opens: NULL
 * fields take the agent's node and domain. */
typedef struct ixfer_rail_config {
    const char *node;
    const char *domain;
} ixfer_rail_config;

#define IXFER_MAX_RAILS 32

typedef struct ixfer_agent_config {
    /* libfabric provider name, e.g. "tcp" or "tcp;ofi_rxm" (required): the
     * entry named exactly so wins over others that merely match it */
    const char *provider;
    const char *node;     /* address to bind, e.g. "127.0.0.1"; NULL: any */
    const char *domain;   /* domain (interface/device) name, e.g. "lo"; NULL: any */
    const char *name;     /* agent name, sent with notifications (at most 255 bytes) */
    /* Bytes of unfinished incoming notifications held per sender; past it a
     * message is dropped and reported (IXFER_EVENT_NOTIF, IXFER_ERR_NOT_ALLOWED). */
    uint64_t notif_pending_cap;
    /* An incoming notification that makes no progress for this long is
     * dropped and reported (IXFER_ERR_TIMEOUT); frees what a lost peer left. */
    uint32_t notif_stale_ms;
    /* How device memory travels (IXFER_VRAM_*). */
    uint32_t vram_mode;
    /* Host bounce memory for staged device memory, allocated on first use
     * and cut into chunks; 0: 64 MiB in chunks of 1 MiB. Half of it serves
     * peers' requests, half this agent's own transfers, so two agents
     * staging towards each other never wait on each other's pool. */
    uint64_t staging_bytes;
    uint64_t staging_chunk;
    /* Rails: rail_count of them (0 or 1: one), rail i opened on rails[i], or
     * all on node/domain when rails is NULL. Rails on one domain share its
     * registrations; rails on different domains register memory in each,
     * under one key (so a provider that picks keys itself, FI_MR_PROV_KEY,
     * or binds them to an endpoint, FI_MR_ENDPOINT, gets one rail per
     * domain). Notifications and staged pieces travel on rail 0. */
    const ixfer_rail_config *rails;
    uint32_t rail_count;
    /* A rail whose operation failed with a connection error (reset, abort,
     * refused, unreachable) is taken out of use, its failed operations
     * posted again on the rails still up; after this long it is tried again
     * and rejoins when an operation on it succeeds. 0: 1000 ms. */
    uint32_t rail_cooldown_ms;
    /* A transfer of at least this many bytes is cut across the rails the
     * peer shares with us; smaller ones go to the rails in turn. 0: 128 KiB. */
    uint64_t stripe_min;
    /* Whether the agent opens an extra rail on shm for peers on this host
     * (IXFER_SAME_HOST_*). It comes after the network rails, and only peers
     * given an shm address (ixfer_peer_insert_shm) use it. */
    uint32_t same_host;
    /* Over kernel TCP: a connection under a rail whose data or keepalive
     * probes go unacknowledged this long is aborted by the kernel (a link
     * that died without a reset), so its ops fail and fail over. 0: 2000 ms;
     * IXFER_LINK_TIMEOUT_OFF: never (TCP retransmits for about 15 min). */
    uint32_t link_timeout_ms;
} ixfer_agent_config;

#define IXFER_LINK_TIMEOUT_OFF UINT32_MAX

/* ixfer_agent_config.same_host */
enum {
    /* An shm rail where the loaded libfabric has a usable shm, the agent's
     * provider is not shm and picks no keys itself (FI_MR_PROV_KEY,
     * FI_MR_ENDPOINT: EFA and verbs; EFA reaches local peers over shm by
     * itself); none, silently, otherwise. */
    IXFER_SAME_HOST_AUTO = 0,
    /* An shm rail (none on shm itself) or IXFER_ERR_NOT_SUPPORTED saying why not. */
    IXFER_SAME_HOST_SHM = 1,
    IXFER_SAME_HOST_OFF = 2,
};

/* ixfer_agent_config.vram_mode */
enum {
    /* Ask the provider for FI_HMEM when the CUDA driver sees a device (and
     * fall back to a provider without it); device memory it cannot register
     * is staged. */
    IXFER_VRAM_AUTO = 0,
    /* Never ask for FI_HMEM: all device memory is staged through host memory. */
    IXFER_VRAM_STAGED = 1,
    /* Require FI_HMEM: agent creation fails with IXFER_ERR_NOT_SUPPORTED
     * where the provider lacks it. */
    IXFER_VRAM_GPUDIRECT = 2,
};

/* Opens fabric, domain, endpoint, CQ and AV, and starts the progress thread. */
IXFER_API int32_t ixfer_agent_create(const ixfer_agent_config *cfg, ixfer_agent **out);
/* Stops the progress thread and closes everything. Outstanding work is
 * abandoned: no events are delivered after this returns. */
IXFER_API void ixfer_agent_destroy(ixfer_agent *agent);

/* What the opened endpoint actually offers (same layout as discovery). */
IXFER_API int32_t ixfer_agent_info(ixfer_agent *agent, ixfer_provider_info *out);
/* The endpoint's address. *len: in, capacity of buf; out, bytes needed. */
IXFER_API int32_t ixfer_agent_address(ixfer_agent *agent, uint8_t *buf, uint64_t *len);
/* Rails opened; rail 0 is the one ixfer_agent_info and _address describe. */
IXFER_API uint32_t ixfer_agent_rail_count(ixfer_agent *agent);
/* The index of the shm rail (the last one), or 0 when the agent has none. */
IXFER_API uint32_t ixfer_agent_shm_rail(ixfer_agent *agent);
/* Like ixfer_agent_info and ixfer_agent_address, for rail `rail`. */
IXFER_API int32_t ixfer_agent_rail_info(ixfer_agent *agent, uint32_t rail, ixfer_provider_info *out);
IXFER_API int32_t ixfer_agent_rail_address(ixfer_agent *agent, uint32_t rail, uint8_t *buf,
                                           uint64_t *len);

/* What one rail moved (read with atomic loads: counts may lag a moment). */
typedef struct ixfer_rail_stats {
    uint64_t ops;      /* provider ops posted on it */
    uint64_t bytes;    /* ... and their bytes */
    uint64_t failed;   /* ops that completed with an error */
    uint64_t reposted; /* failed ops posted again on another rail */
    uint32_t downs;    /* times it was taken out of use */
    uint32_t rejoins;  /* times it came back */
    uint32_t up;       /* 0 while cooling off towards every peer that has it, else 1 */
    uint32_t peers_down; /* peers towards which it is cooling off */
} ixfer_rail_stats;
IXFER_API int32_t ixfer_rail_stats_get(ixfer_agent *agent, uint32_t rail, ixfer_rail_stats *out);

/* Read end of a pipe that becomes readable when events are waiting. The
 * caller takes ownership of the descriptor and closes it; call once. */
IXFER_API int32_t ixfer_agent_take_event_fd(ixfer_agent *agent, int32_t *fd);

/* Registers [addr, addr+len) for local and remote READ/WRITE. *key receives
 * the remote key to publish. */
IXFER_API int32_t ixfer_mr_register(ixfer_agent *agent, uint64_t addr, uint64_t len,
                                    uint64_t *key, ixfer_mr **out);
IXFER_API int32_t ixfer_mr_deregister(ixfer_mr *mr);

/* Registers CUDA device memory [addr, addr+len) of device dev for local and
 * remote READ/WRITE, through the provider (FI_HMEM, CUDA interface:
 * *path = IXFER_PATH_GPUDIRECT) where the endpoint has FI_HMEM and flags do
 * not say IXFER_VRAM_REG_STAGED, else as staged memory (*path =
 * IXFER_PATH_STAGED): transfers then move it through the agent's bounce
 * buffers, on both sides. Deregistered with ixfer_mr_deregister, which waits
 * for a device copy of the region under way. */
enum { IXFER_VRAM_REG_STAGED = 1 };
enum { IXFER_PATH_GPUDIRECT = 1, IXFER_PATH_STAGED = 2 };
IXFER_API int32_t ixfer_vram_register(ixfer_agent *agent, uint64_t addr, uint64_t len,
                                      int32_t dev, uint32_t flags, uint64_t *key,
                                      uint32_t *path, ixfer_mr **out);

/* The staging pool of an agent (all zero until first used). */
typedef struct ixfer_staging_stats {
    uint64_t pool_bytes;   /* allocated bounce memory */
    uint64_t chunk_bytes;
    uint32_t chunks_busy;  /* bounce chunks held now */
    uint32_t chunks_peak;  /* most held at once */
    uint64_t pieces;       /* chunks of this agent's transfers staged */
    uint64_t served;       /* peers' staged requests served */
    uint64_t serve_failed; /* ... refused or failed */
    uint64_t copied_bytes; /* host<->device bytes copied */
} ixfer_staging_stats;
IXFER_API int32_t ixfer_staging_stats_get(ixfer_agent *agent, ixfer_staging_stats *out);

/* Adds a peer address to the address vector; *peer receives its handle.
 * Work for a peer found gone (its socket address refuses connections, or it
 * refused every post for IXFER_PEER_STALL_MS) fails with
 * IXFER_ERR_REMOTE_DISCONNECT until its address is inserted again. */
IXFER_API int32_t ixfer_peer_insert(ixfer_agent *agent, const uint8_t *addr, uint64_t len,
                                    uint64_t *peer);

/* Like ixfer_peer_insert for a peer with count rails: addrs holds their
 * addresses one after another, lens[i] bytes each. The peer is reached on
 * the first min(count, rails of this agent) rails; its handle is rail 0's. */
IXFER_API int32_t ixfer_peer_insert_rails(ixfer_agent *agent, const uint8_t *addrs,
                                          const uint64_t *lens, uint32_t count, uint64_t *peer);

/* Routes a peer already inserted (handle peer) over the shm rail: addr is
 * its shm rail's address (NUL-terminated text). Its transfers then take the
 * shm rail only, unless posted with IXFER_POST_NETWORK or touching device
 * memory of ours; notifications stay on rail 0. Inserting the peer again
 * ends the routing until this is called again. IXFER_ERR_NOT_SUPPORTED
 * without an shm rail. */
IXFER_API int32_t ixfer_peer_insert_shm(ixfer_agent *agent, uint64_t peer, const uint8_t *addr,
                                        uint64_t len);

/* Removes a peer: nothing more is posted to it, and its transfers and
 * notifications still waiting to be posted fail with
 * IXFER_ERR_REMOTE_DISCONNECT. The address leaves the address vector once no
 * operation refers to it, so its handle is not reused before.
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
    uint32_t flags; /* IXFER_PAIR_* */
    uint32_t reserved;
} ixfer_iov_pair;

/* ixfer_iov_pair.flags */
enum {
    /* The remote region is device memory the peer stages (its metadata says
     * so): the peer's progress thread moves the bytes between a bounce buffer
     * and device memory, and remote_addr is its virtual address whatever the
     * provider's mr_mode. */
    IXFER_PAIR_REMOTE_STAGED = 1,
};

/* ixfer_xfer_post flags */
enum {
    IXFER_POST_NOTIFY = 1, /* send notif[0..notif_len) with the transfer */
    /* Take the network rails even to a peer routed over shm (remote
     * addresses are then in the network provider's form). */
    IXFER_POST_NETWORK = 2,
};

/* Queues a transfer for the progress thread. The pairs (and the notification)
 * are copied; the memory they describe must stay registered until its event
 * arrives. The event carries user_id.
 * With IXFER_POST_NOTIFY the peer receives the notification only once every
 * byte of a WRITE is in its memory (its remote-write completions are counted
 * against the number of operations, carried in the message), or, for a READ,
 * once the reads have completed. The event arrives when the notification has
 * been sent as well. */
IXFER_API int32_t ixfer_xfer_post(ixfer_agent *agent, uint32_t op, uint64_t peer,
                                  const ixfer_iov_pair *pairs, uint32_t count,
                                  uint64_t user_id, const uint8_t *notif,
                                  uint64_t notif_len, uint32_t flags);

/* Stops posting what is left of transfer user_id. Its event arrives once the
 * operations already handed to the provider have finished, with status
 * (IXFER_ERR_CANCELED or IXFER_ERR_TIMEOUT) unless it had already failed or
 * finished. Unknown ids are ignored. */
IXFER_API int32_t ixfer_xfer_cancel(ixfer_agent *agent, uint64_t user_id, int32_t status);

/* ---- notifications ------------------------------------------------------ */

/* Sends data[0..len) to peer as one notification, in fragments of at most
 * 16 KiB (tcp;ofi_rxm's eager size). The peer delivers the standalone notifications of
 * one sender in seq order (seq: 1, 2, ... per receiving agent instance). An
 * IXFER_EVENT_XFER_DONE event with user_id follows once it is sent;
 * ixfer_xfer_cancel stops it. */
IXFER_API int32_t ixfer_notify(ixfer_agent *agent, uint64_t peer, const uint8_t *data,
                               uint64_t len, uint64_t seq, uint64_t user_id);

/* Drops everything held for incoming notifications from the agent named
 * name (partial messages, messages waiting for data or for their turn). */
IXFER_API int32_t ixfer_notif_forget(ixfer_agent *agent, const char *name);

/* Incoming fragments that were malformed or did not fit a receive buffer. */
IXFER_API uint64_t ixfer_notif_malformed(ixfer_agent *agent);
/* Bytes held now for incoming notifications not yet delivered. */
IXFER_API uint64_t ixfer_notif_pending(ixfer_agent *agent);

#define IXFER_SENDER_MAX 256

/* An incoming notification (IXFER_EVENT_NOTIF). status IXFER_OK: data holds
 * len bytes. Otherwise it was dropped (len: its announced size, no data):
 * IXFER_ERR_NOT_ALLOWED over the pending cap, IXFER_ERR_TIMEOUT stale. */
typedef struct ixfer_notification {
    uint64_t len;
    uint32_t name_len;
    int32_t status;
    char name[IXFER_SENDER_MAX]; /* sender's agent name, not NUL-terminated */
    uint8_t data[];
} ixfer_notification;

IXFER_API void ixfer_notif_free(ixfer_notification *n);

/* ---- events ------------------------------------------------------------- */

/* IXFER_EVENT_NOTIF: user_id is an ixfer_notification *, freed by the
 * receiver with ixfer_notif_free. */
/* IXFER_EVENT_RAIL: rail `reserved` was taken out of use (status: the error,
 * fi_errno the provider's) or came back (status IXFER_OK) towards the peer
 * whose handle is user_id, or towards every peer (user_id UINT64_MAX: the
 * local endpoint failed). */
enum { IXFER_EVENT_XFER_DONE = 1, IXFER_EVENT_NOTIF = 2, IXFER_EVENT_RAIL = 3 };

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
/* Page-aligned, zeroed mapping; retire gives its pages back but keeps the
 * range mapped (reads see zeros) until unmap. */
IXFER_API int32_t ixfer_mem_map(uint64_t len, uint64_t *addr);
IXFER_API void ixfer_mem_retire(uint64_t addr, uint64_t len);
IXFER_API void ixfer_mem_unmap(uint64_t addr, uint64_t len);
/* Address of a caller-supplied buffer (valid while the caller keeps it). */
IXFER_API uint64_t ixfer_mem_address(const void *ptr);

/* ==== CUDA memory ========================================================== */

/* Synchronous helpers over the driver API, each in the primary context of the
 * device concerned.
 * With IXFER_EMULATE_VRAM=1 in the environment (testing the staging path on
 * machines without a GPU; never for real work) they use no driver: memory
 * from ixfer_cuda_alloc is host memory that ixfer_cuda_pointer_device
 * reports as device 0's, and copies are memcpy. */
IXFER_API int32_t ixfer_cuda_alloc(int32_t dev, uint64_t len, uint64_t *addr);
IXFER_API int32_t ixfer_cuda_free(uint64_t addr);
IXFER_API int32_t ixfer_cuda_to_device(uint64_t dst, const void *src, uint64_t len);
IXFER_API int32_t ixfer_cuda_from_device(void *dst, uint64_t src, uint64_t len);
IXFER_API int32_t ixfer_cuda_fill(uint64_t addr, uint32_t value, uint64_t len);
/* *dev receives the CUDA device holding addr, or -1 for host memory. */
IXFER_API int32_t ixfer_cuda_pointer_device(uint64_t addr, int32_t *dev);

/* ==== files: loopback transfers between memory and files =================== */

typedef struct ixfer_file ixfer_file;
typedef struct ixfer_file_engine ixfer_file_engine;

/* How a file is opened (ixfer_file_open) or was opened (ixfer_file_adopt). */
enum {
    IXFER_FILE_READ = 1,
    IXFER_FILE_WRITE = 2,
    IXFER_FILE_CREATE = 4,   /* open only: create it (mode 0644) */
    IXFER_FILE_TRUNCATE = 8, /* open only */
    IXFER_FILE_DIRECT = 16,  /* O_DIRECT: no page cache, aligned I/O only */
    IXFER_FILE_MEMORY = 32,  /* open only: an anonymous memory file (memfd) named path */
};

typedef struct ixfer_file_info {
    uint64_t size;         /* bytes, when asked */
    uint32_t flags;        /* IXFER_FILE_READ, _WRITE, _DIRECT */
    uint32_t mem_align;    /* alignment O_DIRECT needs of memory addresses; 1 without it */
    uint32_t offset_align; /* ... of file offsets and lengths */
    uint32_t reserved;
} ixfer_file_info;

/* Opens path. Missing: IXFER_ERR_NOT_FOUND; permission: IXFER_ERR_NOT_ALLOWED;
 * O_DIRECT refused by the filesystem: IXFER_ERR_NOT_SUPPORTED. */
IXFER_API int32_t ixfer_file_open(const char *path, uint32_t flags, ixfer_file **out);
/* Uses a descriptor the caller keeps open (and closes after ixfer_file_close);
 * reading, writing and O_DIRECT are what the descriptor was opened with. */
IXFER_API int32_t ixfer_file_adopt(int32_t fd, ixfer_file **out);
IXFER_API int32_t ixfer_file_stat(ixfer_file *file, ixfer_file_info *out);
/* Registers the file with cuFile (opening its driver first), for the 'gds' and
 * 'gds_mt' engines. Fails with cuFile's error in the message (5027 where udev
 * has no record of the disk) and leaves the file usable by POSIX I/O. */
IXFER_API int32_t ixfer_file_use_cufile(ixfer_file *file);
/* No transfer may be using the file. */
IXFER_API void ixfer_file_close(ixfer_file *file);

/* cuFileBufRegister / cuFileBufDeregister of device memory. */
IXFER_API int32_t ixfer_cufile_buf_register(uint64_t addr, uint64_t len);
IXFER_API int32_t ixfer_cufile_buf_deregister(uint64_t addr);

enum {
    IXFER_FILE_ENGINE_POSIX = 0,  /* pread/pwrite from the pool; device memory staged */
    IXFER_FILE_ENGINE_GDS = 1,    /* cuFile batch API for device memory */
    IXFER_FILE_ENGINE_GDS_MT = 2, /* cuFileRead/cuFileWrite from the pool */
};

typedef struct ixfer_file_engine_config {
    uint32_t threads;     /* worker threads; 0: 4 */
    uint32_t gds_batch;   /* entries per cuFile batch; 0: 16 */
    uint64_t chunk_bytes; /* largest single I/O, and staging buffer size; 0: 8 MiB */
} ixfer_file_engine_config;

/* A pool of I/O threads whose completions are events of agent (its event pipe,
 * ixfer_agent_drain). Destroy the engine before the agent. */
IXFER_API int32_t ixfer_file_engine_create(ixfer_agent *agent, const ixfer_file_engine_config *cfg,
                                           ixfer_file_engine **out);
/* Finishes the I/O calls under way, drops the rest: no events after this. */
IXFER_API void ixfer_file_engine_destroy(ixfer_file_engine *engine);

/* One memory range and the file range of the same length it moves to or from. */
typedef struct ixfer_file_pair {
    uint64_t mem_addr;
    uint64_t len;
    uint64_t mem_base; /* start of mem_addr's registration (cuFile's buffer base) */
    ixfer_file *file;
    uint64_t file_offset;
    int32_t dev;       /* CUDA device of mem_addr, or -1 for host memory */
    uint32_t reserved;
} ixfer_file_pair;

/* Queues a transfer (op IXFER_OP_WRITE: memory to file; IXFER_OP_READ: file
 * to memory). Its IXFER_EVENT_XFER_DONE event, on the agent's queue, carries
 * user_id, the status (IXFER_ERR_END_OF_FILE, IXFER_ERR_NO_SPACE, ...), the
 * OS errno in fi_errno and the index of the failed pair in reserved. */
IXFER_API int32_t ixfer_file_xfer_post(ixfer_file_engine *engine, uint32_t op, uint32_t engine_kind,
                                       const ixfer_file_pair *pairs, uint32_t count,
                                       uint64_t user_id);
/* Like ixfer_xfer_cancel: I/O not yet started is dropped. */
IXFER_API int32_t ixfer_file_xfer_cancel(ixfer_file_engine *engine, uint64_t user_id,
                                         int32_t status);

#ifdef __cplusplus
}
#endif

#endif /* IXFER_H */
