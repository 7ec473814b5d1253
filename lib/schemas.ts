/**
 * zod schemas for everything that crosses the public API. The public types are
 * written out as plain interfaces (what an editor shows), each checked against
 * its schema's input at compile time. parse() turns a zod failure into
 * InvalidParamError naming the field.
 */
import { z } from 'zod';

import type { MemoryRegion } from './core/memory.js';
import { InvalidParamError } from './errors.js';

/** true when A and B accept the same values: a hand-written type has not drifted from its schema. */
/** A and B accept the same values and name the same keys (optional keys are invisible to assignability alone). */
export type Agrees<A, B> = [A] extends [B] ? ([B] extends [A] ? SameKeys<A, B> : false) : false;
type SameKeys<A, B> = [Exclude<keyof A, keyof B> | Exclude<keyof B, keyof A>] extends [never] ? true : false;

/** Addresses are numbers (user-space addresses are below 2^53); bigint is accepted. */
const address = z.union([
  z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  z
    .bigint()
    .nonnegative()
    .max(BigInt(Number.MAX_SAFE_INTEGER))
    .transform((v) => Number(v)),
]);
const length = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const DescriptorSchema = z.object({
  addr: address,
  len: length,
  /** Device id: 0 for host memory. */
  devId: z.number().int().nonnegative().max(0xffff).default(0),
});
/** A range of registered memory. */
export interface Descriptor {
  /** Address; a bigint below 2^53 is accepted. */
  addr: number | bigint;
  len: number;
  /** Device id: 0 for host memory. */
  devId?: number;
}
true satisfies Agrees<Descriptor, z.input<typeof DescriptorSchema>>;
export type ParsedDescriptor = z.output<typeof DescriptorSchema>;
export const DescriptorListSchema = z.array(DescriptorSchema);

export const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * DescriptorListSchema on the hot path: a plain loop accepts well-formed
 * lists (what region.desc() and blocks() make) without zod, which costs more
 * than building the transfer; anything else goes through zod for its error.
 */
export function parseDescriptors(value: unknown, what: string): ParsedDescriptor[] {
  if (Array.isArray(value)) {
    const out: ParsedDescriptor[] = new Array(value.length);
    let i = 0;
    for (; i < value.length; i++) {
      const d = value[i] as { addr?: unknown; len?: unknown; devId?: unknown } | null;
      if (typeof d !== 'object' || d === null || !isCount(d.addr) || !isCount(d.len)) break;
      const devId = d.devId ?? 0;
      if (!isCount(devId) || devId > 0xffff) break;
      out[i] = { addr: d.addr, len: d.len, devId }; // a copy: later changes to d change nothing
    }
    if (i === value.length) return out;
  }
  return parse(DescriptorListSchema, value, what);
}

/**
 * A descriptor list in two typed arrays (like NIXL's xfer descriptor list):
 * descriptor i is [addrs[i], +lens[i]). Nothing is made per descriptor, so
 * transfers of 100,000 descriptors build in a few milliseconds. No devId: the
 * registered region holding the address says which memory it is.
 */
export interface PackedDescriptors {
  addrs: Float64Array | BigUint64Array;
  lens: Float64Array | Uint32Array;
}

/** Descriptors either way: objects, or packed in typed arrays. */
export type DescriptorList = Descriptor[] | PackedDescriptors;

export function isPacked(value: unknown): value is PackedDescriptors {
  const v = value as Partial<PackedDescriptors> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    (v.addrs instanceof Float64Array || v.addrs instanceof BigUint64Array) &&
    (v.lens instanceof Float64Array || v.lens instanceof Uint32Array)
  );
}

/** Descriptors as addresses and lengths, for the network engine to check and resolve. */
export interface DescriptorColumns {
  addrs: Float64Array;
  lens: Float64Array;
}

/**
 * Either form of a descriptor list as columns: packed lists as they are
 * (BigUint64Array addresses and Uint32Array lengths converted), object lists
 * checked in one pass (ERR_INVALID_PARAM names the first bad entry) and
 * copied. The engine checks packed entries as it resolves them; `copy` when
 * the columns outlive the call (prepared lists), so the caller's later
 * changes change nothing.
 */
export function descriptorColumns(value: unknown, what: string, copy = false): DescriptorColumns {
  if (isPacked(value)) {
    const { addrs, lens } = value;
    if (lens.length !== addrs.length) throw new InvalidParamError(`invalid ${what}: ${addrs.length} addresses but ${lens.length} lengths`);
    return {
      addrs: addrs instanceof Float64Array ? (copy ? addrs.slice() : addrs) : Float64Array.from(addrs, Number),
      lens: lens instanceof Float64Array ? (copy ? lens.slice() : lens) : new Float64Array(lens),
    };
  }
  if (Array.isArray(value)) {
    const addrs = new Float64Array(value.length);
    const lens = new Float64Array(value.length);
    if (copyObjects(value, addrs, lens) === value.length) return { addrs, lens };
  }
  // Unusual input (bigint addresses) or a bad entry: zod accepts it or names what is wrong.
  const parsed = parse(DescriptorListSchema, value, what);
  return {
    addrs: Float64Array.from(parsed, (d) => d.addr),
    lens: Float64Array.from(parsed, (d) => d.len),
  };
}

/**
 * Copies well-formed descriptor objects into the columns; returns how many
 * (the index of the first that is not). The loop alone, so that V8 keeps it
 * compiled whichever list form the caller saw last.
 */
function copyObjects(list: unknown[], addrs: Float64Array, lens: Float64Array): number {
  const n = list.length;
  let i = 0;
  for (; i < n; i++) {
    const d = list[i] as { addr?: unknown; len?: unknown; devId?: unknown } | null;
    if (typeof d !== 'object' || d === null) break;
    const a = d.addr;
    const l = d.len;
    const devId = d.devId;
    if (!isCount(a) || !isCount(l)) break;
    if (devId !== undefined && (!isCount(devId) || devId > 0xffff)) break;
    addrs[i] = a;
    lens[i] = l;
  }
  return i;
}

/** Indices into prepared lists, checked without zod (see parseDescriptors); typed arrays of indices are taken as they are. */
export function parseIndices(value: unknown, what: string): ArrayLike<number> {
  if (value instanceof Uint32Array) return value;
  if (Array.isArray(value) || value instanceof Int32Array || value instanceof Float64Array) {
    const v = value as ArrayLike<number>;
    let i = 0;
    while (i < v.length && isCount(v[i])) i++;
    if (i === v.length) return v;
    if (!Array.isArray(value)) throw new InvalidParamError(`invalid ${what}[${i}]: ${v[i]} is not an index`);
  }
  return parse(IndexListSchema, value, what);
}

const port = z.number().int().min(0).max(65535);
/** A deadline in ms; setTimeout fires at once when given more than 2^31 - 1. */
export const timeoutMs = z.number().int().positive().max(2 ** 31 - 1);
/** A deadline that may also be `Infinity`, given explicitly: no deadline at all. */
export const timeoutOrInfinity = z.union([timeoutMs, z.literal(Infinity)]);
/** The agent's default deadline of done() and notify(). */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 30_000;

export const EtcdOptionsSchema = z
  .object({
    /** etcd client URLs, e.g. 'http://127.0.0.1:2379'. */
    endpoints: z.array(z.string().regex(/^https?:\/\/\S+$/, 'an http:// or https:// URL')).min(1),
    /** Key prefix: the agent publishes under `${namespace}/${name}`. */
    namespace: z.string().min(1).default('ixfer'),
    /** Lease of the published entry: a crashed agent's entry goes away this many seconds after its last keepalive. */
    leaseTtlSec: z.number().int().min(1).max(3600).default(10),
  })
  .strict();
export interface EtcdOptions {
  /** etcd client URLs, e.g. 'http://127.0.0.1:2379'. */
  endpoints: string[];
  /** Key prefix: the agent publishes under `${namespace}/${name}` (default 'ixfer'). */
  namespace?: string;
  /** Seconds a crashed agent's entry outlives its last keepalive (default 10). */
  leaseTtlSec?: number;
}
true satisfies Agrees<EtcdOptions, z.input<typeof EtcdOptionsSchema>>;

export const ExchangeOptionsSchema = z
  .object({
    /** Shared secret (16 bytes or more): every frame of the TCP channel then carries an HMAC-SHA256. */
    secret: z
      // Not z.instanceof: its type, Uint8Array<ArrayBuffer>, refuses Node's Buffer.
      .union([z.string(), z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'a string or Uint8Array')])
      .refine((s) => (typeof s === 'string' ? Buffer.byteLength(s) : s.byteLength) >= 16, 'at least 16 bytes')
      .optional(),
    /** Default deadline of exchange calls (connect and answer, or waiting for a peer in etcd), and of a listener's read of one frame. */
    timeoutMs: timeoutMs.default(5000),
    /** Largest frame payload sent or accepted on the TCP channel. */
    maxFrameBytes: z
      .number()
      .int()
      .min(1024)
      .max(64 << 20)
      .default(16 << 20),
    /** Connections a listener holds at once (each request takes one, briefly); see README for who makes room. */
    maxConnections: z.number().int().min(1).max(65535).default(64),
    /** Connections a listener holds at once from one remote (not loopback) address. */
    maxConnectionsPerSource: z.number().int().min(1).max(65535).default(32),
    /** Regions one peer's metadata may list; a blob (or a partial update) that would make more is ERR_INVALID_PARAM. */
    maxRegionsPerPeer: z.number().int().min(1).max(2 ** 32).default(1_000_000),
    /** Peers loaded at once; loading one more drops the least recently used. */
    maxPeers: z.number().int().min(1).max(1 << 20).default(4096),
    etcd: EtcdOptionsSchema.optional(),
  })
  .strict();
export interface ExchangeOptions {
  /** Shared secret (16 bytes or more): every frame of the TCP channel then carries an HMAC-SHA256. */
  secret?: string | Uint8Array;
  /** Default deadline of exchange calls, and of a listener's read of one frame (default 5000). */
  timeoutMs?: number;
  /** Largest frame payload sent or accepted on the TCP channel (default 16 MiB). */
  maxFrameBytes?: number;
  /** Connections a listener holds at once (default 64). */
  maxConnections?: number;
  /** Connections a listener holds at once from one remote (not loopback) address (default 32). */
  maxConnectionsPerSource?: number;
  /** Regions one peer's metadata may list (default 1,000,000). */
  maxRegionsPerPeer?: number;
  /** Peers loaded at once; loading one more drops the least recently used (default 4096). */
  maxPeers?: number;
  etcd?: EtcdOptions;
}
true satisfies Agrees<ExchangeOptions, z.input<typeof ExchangeOptionsSchema>>;
export type ExchangeOptionsParsed = z.output<typeof ExchangeOptionsSchema>;

/** Where a listener binds: loopback and a free port unless told otherwise. */
export const ListenOptionsSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(0),
  })
  .strict();
export interface ListenOptions {
  /** Default '127.0.0.1'. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
}
true satisfies Agrees<ListenOptions, z.input<typeof ListenOptionsSchema>>;

/** A peer's listener. */
export const PeerAddressSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.min(1),
  })
  .strict();
export interface PeerAddress {
  /** Default '127.0.0.1'. */
  host?: string;
  port: number;
}
true satisfies Agrees<PeerAddress, z.input<typeof PeerAddressSchema>>;

export const InvalidateOptionsSchema = z
  .object({
    /** Listeners to tell, besides those we sent our metadata to. */
    to: z.array(PeerAddressSchema).default([]),
    timeoutMs: timeoutMs.optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export interface InvalidateOptions {
  /** Listeners to tell, besides those we sent our metadata to. */
  to?: PeerAddress[];
  timeoutMs?: number;
  signal?: AbortSignal;
}
true satisfies Agrees<InvalidateOptions, z.input<typeof InvalidateOptionsSchema>>;

/** Memory <-> file transfers (the agent's file engine, started on first use). */
export const FileEngineKindSchema = z.enum(['auto', 'gds', 'gds_mt', 'posix']);
export const FileEngineOptionsSchema = z
  .object({
    /** Default engine of file transfers; IXFER_FILE_ENGINE overrides it. */
    engine: FileEngineKindSchema.default('auto'),
    /** I/O threads (posix and gds_mt). */
    threads: z.number().int().min(1).max(256).default(4),
    /** Largest single I/O call, and the size of each thread's staging buffer for VRAM. */
    chunkBytes: z
      .number()
      .int()
      .min(4096)
      .max(2 ** 30)
      .default(8 << 20),
    /** Entries per cuFile batch ('gds'). */
    gdsBatch: z.number().int().min(1).max(256).default(16),
  })
  .strict();
export type FileEngineOptions = z.output<typeof FileEngineOptionsSchema>;

/** A name carried in metadata: UTF-8, 1 to 255 bytes, no control characters. */
const label = z
  .string()
  .min(1)
  .max(255)
  .refine((s) => Buffer.byteLength(s) <= 255 && !/[\u0000-\u001f]/.test(s), 'at most 255 bytes, no control characters');

/** Options of registerMemory and allocate. */
export const RegionOptionsSchema = z
  .object({
    /** Names the region in our metadata, so that peers find it (remoteRegion); unique per agent. */
    name: label.optional(),
  })
  .strict();
export type RegionOptions = z.input<typeof RegionOptionsSchema>;

/** Options of registerVram and allocateVram. */
export const VramRegionOptionsSchema = z
  .object({
    /** Names the region in our metadata (one namespace with host regions). */
    name: label.optional(),
    /** Stage this region through host memory even where the provider could reach it (GPUDirect). */
    staged: z.boolean().default(false),
  })
  .strict();
export interface VramRegionOptions {
  /** Names the region in our metadata (one namespace with host regions). */
  name?: string;
  /** Stage it through host memory even where GPUDirect is offered (default false). */
  staged?: boolean;
}
true satisfies Agrees<VramRegionOptions, z.input<typeof VramRegionOptionsSchema>>;
/** allocateVram's options: the device (default 0) and the region options. */
export const AllocateVramOptionsSchema = VramRegionOptionsSchema.extend({ devId: z.number().int().min(0).max(0xffff).default(0) });
export interface AllocateVramOptions extends VramRegionOptions {
  /** CUDA device ordinal (default 0). */
  devId?: number;
}
true satisfies Agrees<AllocateVramOptions, z.input<typeof AllocateVramOptionsSchema>>;

/** What ixfer uses of a prom-client Registry (typed here so that prom-client stays optional). */
export interface MetricsRegistry {
  registerMetric(metric: never): void;
  getSingleMetric(name: string): unknown;
}

export const NotificationOptionsSchema = z
  .object({
    /** Bytes of unfinished incoming notifications held per sender; a message past it is dropped and reported. */
    maxPendingBytesPerPeer: z
      .number()
      .int()
      .min(1024)
      .max(2 ** 40)
      .default(64 << 20),
    /** An incoming notification that makes no progress for this long is dropped and reported (frees what a lost peer left). */
    staleMs: z
      .number()
      .int()
      .min(10)
      .max(2 ** 31)
      .default(30_000),
    /** Delivered notifications held for the application to take; past it the oldest are dropped and reported. */
    maxQueued: z
      .number()
      .int()
      .min(1)
      .max(2 ** 32)
      .default(10_000),
    /** Bytes of delivered notifications held for the application to take. */
    maxQueuedBytes: z
      .number()
      .int()
      .min(1024)
      .max(2 ** 50)
      .default(256 << 20),
    /** Bytes of delivered notifications from one sender held for the application to take. */
    maxQueuedBytesPerPeer: z
      .number()
      .int()
      .min(1024)
      .max(2 ** 50)
      .default(64 << 20),
  })
  .strict();
export interface NotificationOptions {
  /** Bytes of unfinished incoming notifications held per sender (default 64 MiB). */
  maxPendingBytesPerPeer?: number;
  /** An incoming notification that makes no progress for this long is dropped (default 30000). */
  staleMs?: number;
  /** Delivered notifications held for the application to take (default 10,000). */
  maxQueued?: number;
  /** Bytes of delivered notifications held for the application to take (default 256 MiB). */
  maxQueuedBytes?: number;
  /** Bytes of delivered notifications from one sender held for the application to take (default 64 MiB). */
  maxQueuedBytesPerPeer?: number;
}
true satisfies Agrees<NotificationOptions, z.input<typeof NotificationOptionsSchema>>;

/** How device memory travels over the network, and the host bounce memory of the staged path. */
export const VramOptionsSchema = z
  .object({
    /** 'auto': GPUDirect where the provider has FI_HMEM, else staged; 'staged': always staged; 'gpudirect': FI_HMEM or no agent. */
    mode: z.enum(['auto', 'staged', 'gpudirect']).default('auto'),
    /** Host bounce memory of the staged path, allocated on first use: half for peers' requests, half for our own transfers. */
    stagingBytes: z
      .number()
      .int()
      .positive()
      .max(2 ** 40)
      .default(64 << 20),
    /** Piece of a staged transfer: one device copy and one RMA each, pipelined. */
    stagingChunkBytes: z
      .number()
      .int()
      .min(64 << 10)
      .max(2 ** 30)
      .default(1 << 20),
  })
  .strict()
  .refine((v) => v.stagingBytes >= 2 * v.stagingChunkBytes, {
    message: 'stagingBytes must hold at least two chunks (stagingChunkBytes): one for our transfers, one for peers',
    path: ['stagingBytes'],
  });
export interface VramOptions {
  /** 'auto' (default): GPUDirect where the provider offers FI_HMEM, else staged; 'staged': always staged; 'gpudirect': FI_HMEM required. */
  mode?: 'auto' | 'staged' | 'gpudirect';
  /** Host bounce memory of the staged path (default 64 MiB), at least two chunks. */
  stagingBytes?: number;
  /** Piece of a staged transfer (default 1 MiB, at least 64 KiB). */
  stagingChunkBytes?: number;
}
true satisfies Agrees<VramOptions, z.input<typeof VramOptionsSchema>>;
/** ixfer.h IXFER_MAX_RAILS. */
export const MAX_RAILS = 32;

export const AgentOptionsSchema = z
  .object({
    /** Unique among the agents that talk to each other. */
    name: label,
    /** 'auto' or a libfabric provider name ('tcp', 'efa', 'cxi', 'verbs', 'shm', ...). IXFER_PROVIDER stands in for 'auto'. */
    provider: z.string().min(1).default('auto'),
    /** Interface (libfabric domain) to bind, e.g. 'lo' or 'eth0'. */
    iface: z.string().min(1).optional(),
    /** Address to bind, e.g. '127.0.0.1' or '::1'. Defaults to loopback when no iface is given. */
    address: z.string().min(1).optional(),
    /** Rails: a count on `iface`/`address`, 'auto' (every interface of the provider), or one entry per rail. */
    rails: z
      .union([
        z.number().int().min(1).max(MAX_RAILS),
        z.literal('auto'),
        z
          .array(z.object({ iface: z.string().min(1).optional(), address: z.string().min(1).optional() }).strict())
          .min(1)
          .max(MAX_RAILS),
      ])
      .default(1),
    /** Transfers of at least this many bytes are cut across the rails; smaller ones take the rails in turn. */
    stripeThresholdBytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).default(128 * 1024),
    /** How long a rail taken out of use after a connection error rests before it is tried again. */
    railCooldownMs: z.number().int().min(1).max(3_600_000).default(1000),
    /** Peers on this host: 'auto' opens an shm rail where it works, 'shm' requires one, 'off' opens none. */
    sameHost: z.enum(['auto', 'shm', 'off']).default('auto'),
    /** Over TCP: a rail's connection unacknowledged this long is aborted by the kernel (a link that died silently); 0: never. */
    linkTimeoutMs: z
      .number()
      .int()
      .min(0)
      .max(3_600_000)
      .refine((v) => v === 0 || v >= 100, 'linkTimeoutMs is 0 (none) or at least 100 ms')
      .default(2000),
    /** Default deadline of Transfer.done() and notify() when the call gives none; `Infinity`: none. */
    transferTimeoutMs: timeoutOrInfinity.default(DEFAULT_TRANSFER_TIMEOUT_MS),
    /** Incoming notifications. */
    notifications: NotificationOptionsSchema.prefault({}),
    /** Metadata exchange: TCP side channel settings, and etcd. */
    metadata: ExchangeOptionsSchema.prefault({}),
    /** File transfers. */
    files: FileEngineOptionsSchema.prefault({}),
    /** Device memory over the network. */
    vram: VramOptionsSchema.prefault({}),
    /** Prometheus metrics on the user's prom-client registry (prom-client is loaded only then). */
    metrics: z
      .object({
        registry: z.custom<MetricsRegistry>(
          (v) => typeof v === 'object' && v !== null && typeof (v as MetricsRegistry).registerMetric === 'function',
          'a prom-client Registry',
        ),
        /** Distinct `peer` label values per agent; later peers are counted as 'other'. */
        maxPeerLabels: z.number().int().min(1).max(10_000).default(32),
      })
      .strict()
      .optional(),
  })
  .strict();
export interface AgentOptions {
  /** Unique among the agents that talk to each other: at most 255 bytes, no control characters. */
  name: string;
  /** 'auto' (default) or a libfabric provider name ('tcp', 'efa', 'cxi', 'verbs', 'shm', ...). */
  provider?: string;
  /** Interface (libfabric domain) to bind, e.g. 'lo' or 'eth0'. */
  iface?: string;
  /** Address to bind, e.g. '127.0.0.1' or '::1'. Defaults to loopback when no iface is given. */
  address?: string;
  /**
   * Rails (an endpoint with its completion queue and address vector each):
   * a count (1 to 32, default 1) on `iface`/`address`, 'auto' (one per
   * interface the provider offers), or one `{ iface?, address? }` per rail.
   */
  rails?: number | 'auto' | { iface?: string; address?: string }[];
  /** Transfers of at least this many bytes are cut across the rails (default 131072). */
  stripeThresholdBytes?: number;
  /**
   * A rail whose operation fails with a connection error is taken out of use
   * and its failed operations posted again on the others; after this long
   * (default 1000 ms) it is tried again, and rejoins when an operation succeeds.
   */
  railCooldownMs?: number;
  /**
   * Peers on this host (default 'auto'): 'auto' opens an extra rail on shm
   * where the loaded libfabric has a usable one, and a peer whose metadata
   * says it runs on this host (another process) is then reached over it;
   * 'shm' fails agent creation without one; 'off' opens none.
   */
  sameHost?: 'auto' | 'shm' | 'off';
  /**
   * Over kernel TCP (tcp, sockets): a connection under a rail whose data or
   * keepalive probes go unacknowledged this long (default 2000 ms) is aborted
   * by the kernel, so that a link that died without a reset fails over like
   * one that was reset. 0: no deadline (TCP retransmits for about 15 minutes).
   */
  linkTimeoutMs?: number;
  /** Default deadline of Transfer.done() when the call gives none. */
  transferTimeoutMs?: number;
  notifications?: NotificationOptions;
  /** Metadata exchange: TCP side channel settings, and etcd. */
  metadata?: ExchangeOptions;
  /** File transfers. */
  files?: {
    /** Default engine of file transfers (default 'auto'); IXFER_FILE_ENGINE overrides it. */
    engine?: 'auto' | 'gds' | 'gds_mt' | 'posix';
    /** I/O threads, posix and gds_mt (default 4). */
    threads?: number;
    /** Largest single I/O call, and each thread's VRAM staging buffer (default 8 MiB). */
    chunkBytes?: number;
    /** Entries per cuFile batch, 'gds' (default 16). */
    gdsBatch?: number;
  };
  /** Device memory over the network: GPUDirect or staged, and the staging pool. */
  vram?: VramOptions;
  /** Prometheus metrics on your prom-client registry (prom-client is loaded only then). */
  metrics?: {
    registry: MetricsRegistry;
    /** Distinct `peer` label values per agent; later peers are counted as 'other' (default 32). */
    maxPeerLabels?: number;
  };
}
true satisfies Agrees<AgentOptions, z.input<typeof AgentOptionsSchema>>;

/** A notification's content: bytes, or text sent as UTF-8. */
export const NotificationBodySchema = z.union([z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'a Uint8Array'), z.string()]);
export type NotificationBody = Uint8Array | string;
true satisfies Agrees<NotificationBody, z.input<typeof NotificationBodySchema>>;

export const OpSchema = z.enum(['READ', 'WRITE']);
export type Op = z.infer<typeof OpSchema>;

/** The request's shell; its descriptor lists go through parseDescriptors. */
export const TransferRequestSchema = z
  .object({
    op: OpSchema,
    local: z.custom<DescriptorList>((v) => Array.isArray(v) || isPacked(v), 'an array of descriptors or packed descriptors'),
    remote: z.custom<DescriptorList>((v) => Array.isArray(v) || isPacked(v), 'an array of descriptors or packed descriptors'),
    peer: z.string().min(1),
    /** Delivered to the peer once the transfer's data is in place. */
    notification: NotificationBodySchema.optional(),
  })
  .strict();
export interface TransferRequest {
  op: Op;
  local: DescriptorList;
  remote: DescriptorList;
  peer: string;
  notification?: NotificationBody;
}

/** makeTransfer's options. */
export const MakeTransferOptionsSchema = z.object({ notification: NotificationBodySchema.optional() }).strict();

export const WaitOptionsSchema = z
  .object({
    timeoutMs: timeoutOrInfinity.optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export interface WaitOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}
true satisfies Agrees<WaitOptions, z.input<typeof WaitOptionsSchema>>;

export const IterateOptionsSchema = z.object({ signal: z.instanceof(AbortSignal).optional() }).strict();

export const MetadataOptionsSchema = z
  .object({
    /** Only these regions (partial metadata); all when absent. */
    regions: z.array(z.any()).optional(),
    /** Include the agent's fabric address (needed by a peer that has never loaded us). */
    includeConnection: z.boolean().default(true),
  })
  .strict();
export interface MetadataOptions {
  /** Only these regions (partial metadata); all when absent. */
  regions?: MemoryRegion[];
  /** Include the agent's fabric address (default true; needed by a peer that has never loaded us). */
  includeConnection?: boolean;
}
true satisfies Agrees<MetadataOptions, z.input<typeof MetadataOptionsSchema>>;

export const IndexListSchema = z.array(z.number().int().nonnegative());

export function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const where = issue.path.length ? `${what}.${issue.path.join('.')}` : what;
  throw new InvalidParamError(`invalid ${where}: ${issue.message}`);
}
