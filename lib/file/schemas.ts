/** zod schemas of the file API (files, file transfers, block stores). */
import { z } from 'zod';

import { FileEngineKindSchema, isCount, OpSchema, parse, type Agrees, type Descriptor, type Op } from '../schemas.js';
import type { FileDescriptor, FileRegion } from './region.js';

const length = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const FileOpenOptionsSchema = z
  .object({
    /** Open for reading (default true). */
    read: z.boolean().default(true),
    /** Open for writing (default true). */
    write: z.boolean().default(true),
    /** Create the file when missing (default: when writing). */
    create: z.boolean().optional(),
    /** Empty it first. */
    truncate: z.boolean().default(false),
    /** O_DIRECT: bypass the page cache; offsets, lengths and memory must then be aligned. */
    direct: z.boolean().default(false),
  })
  .strict();
export interface FileOpenOptions {
  /** Open for reading (default true). */
  read?: boolean;
  /** Open for writing (default true). */
  write?: boolean;
  /** Create the file when missing (default: when writing). */
  create?: boolean;
  /** Empty it first (default false). */
  truncate?: boolean;
  /** O_DIRECT: bypass the page cache; offsets, lengths and memory must then be aligned (default false). */
  direct?: boolean;
}
true satisfies Agrees<FileOpenOptions, z.input<typeof FileOpenOptionsSchema>>;

/** A range of a registered file. */
export const FileDescriptorSchema = z
  .object({
    file: z.custom<FileRegion>((v) => typeof v === 'object' && v !== null, 'a FileRegion from registerFile()'),
    offset: length,
    len: length,
  })
  .strict();

/** File descriptors checked by a plain loop, zod only for the error (see parseDescriptors). */
export function parseFileDescriptors(value: unknown, what: string): FileDescriptor[] {
  if (Array.isArray(value)) {
    const out: FileDescriptor[] = new Array(value.length);
    let i = 0;
    for (; i < value.length; i++) {
      const d = value[i] as { file?: unknown; offset?: unknown; len?: unknown } | null;
      if (typeof d !== 'object' || d === null || typeof d.file !== 'object' || d.file === null) break;
      if (!isCount(d.offset) || !isCount(d.len) || Object.keys(d).length !== 3) break;
      out[i] = { file: d.file as FileRegion, offset: d.offset, len: d.len };
    }
    if (i === value.length) return out;
  }
  return parse(z.array(FileDescriptorSchema), value, what);
}

export const FileTransferRequestSchema = z
  .object({
    /** WRITE: memory to file; READ: file to memory. */
    op: OpSchema,
    /** Checked by parseDescriptors and parseFileDescriptors, off zod's path. */
    local: z.custom<unknown[]>(Array.isArray, 'an array of descriptors'),
    files: z.custom<unknown[]>(Array.isArray, 'an array of file descriptors'),
    /** Overrides the agent's default engine (and IXFER_FILE_ENGINE) for this transfer. */
    engine: FileEngineKindSchema.optional(),
  })
  .strict();
export interface FileTransferRequest {
  /** WRITE: memory to file; READ: file to memory. */
  op: Op;
  local: Descriptor[];
  files: FileDescriptor[];
  /** Overrides the agent's default engine (and IXFER_FILE_ENGINE) for this transfer. */
  engine?: 'auto' | 'gds' | 'gds_mt' | 'posix';
}
true satisfies Agrees<Omit<FileTransferRequest, 'local' | 'files'>, Omit<z.input<typeof FileTransferRequestSchema>, 'local' | 'files'>>;

export const BlockStoreOptionsSchema = z
  .object({
    /** Directory of one file per block; without it, blocks live in host memory. */
    dir: z
      .string()
      .min(1)
      .refine((d) => !d.includes('\0'), 'a directory has no NUL characters')
      .optional(),
    /** Most bytes the store holds. */
    capacityBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    /** Engine of its transfers (default: the agent's). */
    engine: FileEngineKindSchema.optional(),
    /** O_DIRECT block files (dir only). */
    direct: z.boolean().default(false),
  })
  .strict();
export interface BlockStoreOptions {
  /** Directory of one file per block; without it, blocks live in host memory. */
  dir?: string;
  /** Most bytes the store holds. */
  capacityBytes: number;
  /** Engine of its transfers (default: the agent's). */
  engine?: 'auto' | 'gds' | 'gds_mt' | 'posix';
  /** O_DIRECT block files, dir only (default false). */
  direct?: boolean;
}
true satisfies Agrees<BlockStoreOptions, z.input<typeof BlockStoreOptionsSchema>>;

/** A block key names its file (hex of its UTF-8 bytes), which NAME_MAX (255) bounds. */
export const BLOCK_KEY_MAX_BYTES = 120;

export const BlockKeySchema = z
  .string()
  .min(1)
  .refine((k) => !k.includes('\0'), 'no NUL characters')
  .refine((k) => Buffer.byteLength(k, 'utf8') <= BLOCK_KEY_MAX_BYTES, `at most ${BLOCK_KEY_MAX_BYTES} bytes in UTF-8`);

