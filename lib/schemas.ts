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
    /** Default deadline of Transfer.done() when the call gives none. */
    transferTimeoutMs: z.number().int().positive().optional(),
  })
  .strict();
export type AgentOptions = z.input<typeof AgentOptionsSchema>;

export const OpSchema = z.enum(['READ', 'WRITE']);
export type Op = z.infer<typeof OpSchema>;

export const TransferRequestSchema = z
  .object({
    op: OpSchema,
    local: DescriptorListSchema,
    remote: DescriptorListSchema,
    peer: z.string().min(1),
  })
  .strict();
export type TransferRequest = z.input<typeof TransferRequestSchema>;

export const WaitOptionsSchema = z
  .object({
    timeoutMs: z.number().int().positive().optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export type WaitOptions = z.input<typeof WaitOptionsSchema>;

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
