/**
 * zod schemas for everything that crosses the public API; the types come from
 * them. parse() turns a zod failure into InvalidParamError naming the field.
 */
import { z } from 'zod';

import { InvalidParamError } from './errors.js';

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
export type Descriptor = z.input<typeof DescriptorSchema>;
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

/** Indices into prepared lists, checked without zod (see parseDescriptors). */
export function parseIndices(value: unknown, what: string): number[] {
  if (Array.isArray(value) && value.every(isCount)) return value;
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
export type EtcdOptions = z.input<typeof EtcdOptionsSchema>;

export const ExchangeOptionsSchema = z
  .object({
    /** Shared secret (16 bytes or more): every frame of the TCP channel then carries an HMAC-SHA256. */
    secret: z
      .union([z.string(), z.instanceof(Uint8Array)])
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
    /** Connections a listener holds at once; more are closed on arrival (each request takes one, briefly). */
    maxConnections: z.number().int().min(1).max(65535).default(64),
    etcd: EtcdOptionsSchema.optional(),
  })
  .strict();
export type ExchangeOptions = z.input<typeof ExchangeOptionsSchema>;
export type ExchangeOptionsParsed = z.output<typeof ExchangeOptionsSchema>;

/** Where a listener binds: loopback and a free port unless told otherwise. */
export const ListenOptionsSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(0),
  })
  .strict();
export type ListenOptions = z.input<typeof ListenOptionsSchema>;

/** A peer's listener. */
export const PeerAddressSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.min(1),
  })
  .strict();
export type PeerAddress = z.input<typeof PeerAddressSchema>;

export const InvalidateOptionsSchema = z
  .object({
    /** Listeners to tell, besides those we sent our metadata to. */
    to: z.array(PeerAddressSchema).default([]),
    timeoutMs: timeoutMs.optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export type InvalidateOptions = z.input<typeof InvalidateOptionsSchema>;

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

export const AgentOptionsSchema = z
  .object({
    /** Unique among the agents that talk to each other. */
    name: z
      .string()
      .min(1)
      .max(255)
      .refine((s) => Buffer.byteLength(s) <= 255 && !/[\u0000-\u001f]/.test(s), 'at most 255 bytes, no control characters'),
    /** 'auto' or a libfabric provider name ('tcp', 'efa', 'cxi', 'verbs', 'shm', ...). IXFER_PROVIDER overrides it. */
    provider: z.string().min(1).default('auto'),
    /** Interface (libfabric domain) to bind, e.g. 'lo' or 'eth0'. */
    iface: z.string().min(1).optional(),
    /** Address to bind, e.g. '127.0.0.1' or '::1'. Defaults to loopback when no iface is given. */
    address: z.string().min(1).optional(),
    /** Default deadline of Transfer.done() and notify() when the call gives none; `Infinity`: none. */
    transferTimeoutMs: timeoutOrInfinity.default(DEFAULT_TRANSFER_TIMEOUT_MS),
    /** Incoming notifications. */
    notifications: z
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
      })
      .strict()
      .prefault({}),
    /** Metadata exchange: TCP side channel settings, and etcd. */
    metadata: ExchangeOptionsSchema.prefault({}),
    /** File transfers. */
    files: FileEngineOptionsSchema.prefault({}),
  })
  .strict();
export type AgentOptions = z.input<typeof AgentOptionsSchema>;

/** A notification's content: bytes, or text sent as UTF-8. */
export const NotificationBodySchema = z.union([z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'a Uint8Array'), z.string()]);
export type NotificationBody = z.input<typeof NotificationBodySchema>;

export const OpSchema = z.enum(['READ', 'WRITE']);
export type Op = z.infer<typeof OpSchema>;

/** The request's shell; its descriptor lists go through parseDescriptors. */
export const TransferRequestSchema = z
  .object({
    op: OpSchema,
    local: z.custom<unknown[]>(Array.isArray, 'an array of descriptors'),
    remote: z.custom<unknown[]>(Array.isArray, 'an array of descriptors'),
    peer: z.string().min(1),
    /** Delivered to the peer once the transfer's data is in place. */
    notification: NotificationBodySchema.optional(),
  })
  .strict();
export interface TransferRequest {
  op: Op;
  local: Descriptor[];
  remote: Descriptor[];
  peer: string;
  notification?: NotificationBody;
}

export const WaitOptionsSchema = z
  .object({
    timeoutMs: timeoutOrInfinity.optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export type WaitOptions = z.input<typeof WaitOptionsSchema>;

export const IterateOptionsSchema = z.object({ signal: z.instanceof(AbortSignal).optional() }).strict();

export const MetadataOptionsSchema = z
  .object({
    /** Only these regions (partial metadata); all when absent. */
    regions: z.array(z.any()).optional(),
    /** Include the agent's fabric address (needed by a peer that has never loaded us). */
    includeConnection: z.boolean().default(true),
  })
  .strict();
export type MetadataOptions = z.input<typeof MetadataOptionsSchema>;

export const IndexListSchema = z.array(z.number().int().nonnegative());

export function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const where = issue.path.length ? `${what}.${issue.path.join('.')}` : what;
  throw new InvalidParamError(`invalid ${where}: ${issue.message}`);
}
