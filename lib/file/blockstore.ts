/**
 * A store of KV-cache blocks by key, for offloading from GPU or host memory:
 * one file per block in a directory, or, without a directory, a host memory
 * pool (an anonymous memory file). Blocks move with the agent's file
 * transfers, so put() and get() are awaited like any transfer.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { InvalidParamError, IxferError, makeError, MismatchError, NoSpaceError, NotAllowedError, NotFoundError, type ErrorCode } from '../errors.js';
import { parse, parseDescriptors, type Descriptor, type ParsedDescriptor, type WaitOptions } from '../schemas.js';
import type { FileTransfer } from './engine.js';
import type { FileRegion } from './region.js';
import {
  BlockKeySchema,
  BlockStoreOptionsSchema,
  type BlockStoreOptions,
  type FileOpenOptions,
  type FileTransferRequest,
} from './schemas.js';

const SUFFIX = '.blk';
/** This host in temporary file names, so that a store only removes leftovers of its own host's processes. */
const HOST = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);
/** tmp.HOST.PID.RANDOM: a put under way (or one whose process died). */
const TEMP = /^tmp\.([0-9a-f]{8})\.(\d+)\.[0-9a-f]{16}$/;

/** The OS's reasons a store directory or block file cannot be used, as ixfer codes. */
const FS_ERRNO: Record<string, ErrorCode> = {
  ENOENT: 'ERR_NOT_FOUND',
  ENOTDIR: 'ERR_INVALID_PARAM',
  EEXIST: 'ERR_INVALID_PARAM',
  EACCES: 'ERR_NOT_ALLOWED',
  EPERM: 'ERR_NOT_ALLOWED',
  EROFS: 'ERR_NOT_ALLOWED',
  ENOSPC: 'ERR_NO_SPACE',
  EDQUOT: 'ERR_NO_SPACE',
};

interface Block {
  size: number;
  /** Pool only: where the block lies in the memory file. */
  offset: number;
  /** Pool only: gets under way, and whether the block was replaced or deleted meanwhile (its extent is freed by the last get). */
  readers: number;
  forgotten: boolean;
}

/** A typed error for a failed file system call on `what` (the OS's code in nativeMessage). */
function fsError(err: unknown, what: string): IxferError {
  if (err instanceof IxferError) return err;
  const errno = (err as NodeJS.ErrnoException).code ?? '';
  const why = errno === 'ENOTDIR' || errno === 'EEXIST' ? 'is not a directory' : 'cannot be used';
  return makeError(FS_ERRNO[errno] ?? 'ERR_BACKEND', `${what} ${why}: ${(err as Error).message}`, {
    nativeMessage: errno,
    cause: err,
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** First-fit allocation of extents of [0, capacity). */
class Extents {
  #free: { offset: number; len: number }[];
  constructor(capacity: number) {
    this.#free = [{ offset: 0, len: capacity }];
  }
  take(len: number): number | undefined {
    const i = this.#free.findIndex((e) => e.len >= len);
    if (i < 0) return undefined;
    const e = this.#free[i]!;
    const offset = e.offset;
    e.offset += len;
    e.len -= len;
    if (e.len === 0) this.#free.splice(i, 1);
    return offset;
  }
  give(offset: number, len: number): void {
    const all = [...this.#free, { offset, len }].sort((a, b) => a.offset - b.offset);
    this.#free = [];
    for (const e of all) {
      const last = this.#free.at(-1);
      if (last && last.offset + last.len === e.offset) last.len += e.len;
      else this.#free.push({ ...e });
    }
  }
}

/** What a store uses of its agent (an Agent): file registration and file transfers. */
export interface BlockStoreAgent {
  registerFile(source: string, options?: FileOpenOptions): FileRegion;
  /** @internal Agent's, unpublished: stripped here too, or a published Agent would not fit. */
  memoryFile(name: string): FileRegion;
  createFileTransfer(request: FileTransferRequest): FileTransfer;
}

export class BlockStore implements AsyncDisposable {
  readonly capacityBytes: number;
  /** The directory, or undefined for the host memory pool. */
  readonly dir: string | undefined;
  readonly #agent: BlockStoreAgent;
  readonly #opts: ReturnType<typeof BlockStoreOptionsSchema.parse>;
  readonly #blocks = new Map<string, Block>();
  readonly #pool: { file: FileRegion; extents: Extents } | undefined;
  /** Bytes of the blocks and of the puts under way. */
  #used = 0;
  /** Puts, gets and deletes under way, which close() waits for. */
  readonly #busy = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;

  private constructor(agent: BlockStoreAgent, opts: ReturnType<typeof BlockStoreOptionsSchema.parse>) {
    this.#agent = agent;
    this.#opts = opts;
    this.dir = opts.dir;
    this.capacityBytes = opts.capacityBytes;
    if (!opts.dir) {
      this.#pool = { file: agent.memoryFile('ixfer-blockstore'), extents: new Extents(opts.capacityBytes) };
    }
  }

  /**
   * Opens a store. With `dir`, blocks already there (from an earlier store)
   * are found again; without it, blocks live in host memory.
   */
  static async open(agent: BlockStoreAgent, options: BlockStoreOptions): Promise<BlockStore> {
    if (typeof agent?.registerFile !== 'function' || typeof agent.memoryFile !== 'function') {
      throw new InvalidParamError('BlockStore.open(agent, options): agent is an ixfer Agent');
    }
    const opts = parse(BlockStoreOptionsSchema, options, 'block store options');
    const store = new BlockStore(agent, opts);
    if (opts.dir) {
      const dir = opts.dir;
      await store.#scan(dir);
    }
    return store;
  }

  /**
   * Indexes the directory's blocks, and removes temporary files left by dead
   * processes of this host. Other processes may write and delete blocks
   * meanwhile: a file gone between listing and stat is skipped, and only
   * regular files are blocks (a FIFO would block the reads).
   */
  async #scan(dir: string): Promise<void> {
    let names: string[];
    try {
      await fs.mkdir(dir, { recursive: true });
      names = await fs.readdir(dir);
    } catch (err) {
      throw fsError(err, `block store directory '${dir}'`);
    }
    for (const name of names) {
      const temp = TEMP.exec(name);
      if (temp) {
        if (temp[1] === HOST && !alive(Number(temp[2]))) await fs.rm(path.join(dir, name), { force: true });
        continue;
      }
      if (!/^[0-9a-f]+\.blk$/.test(name)) continue;
      let st;
      try {
        st = await fs.lstat(path.join(dir, name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw fsError(err, `block file '${name}' in '${dir}'`);
      }
      if (!st.isFile()) continue;
      const stem = name.slice(0, -SUFFIX.length);
      const key = Buffer.from(stem, 'hex').toString('utf8');
      // A name no key maps to (odd hex, bytes that are not UTF-8, a NUL) is not a block of a store.
      if (Buffer.from(key, 'utf8').toString('hex') !== stem || !BlockKeySchema.safeParse(key).success) continue;
      this.#blocks.set(key, { size: st.size, offset: 0, readers: 0, forgotten: false });
      this.#used += st.size;
    }
  }

  /** Bytes of the blocks, and of the puts under way. */
  get usedBytes(): number {
    return this.#used;
  }

  has(key: string): boolean {
    parse(BlockKeySchema, key, 'key');
    return this.#blocks.has(key);
  }

  /** Bytes of the block, or undefined. */
  size(key: string): number | undefined {
    parse(BlockKeySchema, key, 'key');
    return this.#blocks.get(key)?.size;
  }

  keys(): string[] {
    return [...this.#blocks.keys()];
  }

  #file(key: string): string {
    return path.join(this.dir!, Buffer.from(key, 'utf8').toString('hex') + SUFFIX);
  }

  /** Runs an operation unless the store is closed, and lets close() wait for it. */
  async #run<T>(op: () => Promise<T>): Promise<T> {
    if (this.#closing) throw new NotAllowedError('block store is closed');
    const p = op();
    this.#busy.add(p);
    try {
      return await p;
    } finally {
      this.#busy.delete(p);
    }
  }

  /**
   * Stores the bytes of `src` (descriptors of registered memory, concatenated)
   * as block `key`, replacing any block of that key once the new one is
   * complete. ERR_NO_SPACE beyond capacityBytes (puts under way count).
   */
  put(key: string, src: Descriptor | Descriptor[], options: WaitOptions = {}): Promise<void> {
    return this.#run(() => this.#put(key, src, options));
  }

  async #put(key: string, src: Descriptor | Descriptor[], options: WaitOptions): Promise<void> {
    parse(BlockKeySchema, key, 'key');
    const descs = parseDescriptors(Array.isArray(src) ? src : [src], 'src');
    const size = descs.reduce((n, d) => n + d.len, 0);
    const old = this.#blocks.get(key);
    if (this.#used - (old?.size ?? 0) + size > this.capacityBytes) {
      throw new NoSpaceError(`block '${key}' of ${size} bytes does not fit: ${this.#used} of ${this.capacityBytes} bytes are used`);
    }
    // Reserved before anything is awaited, so that concurrent puts see it.
    this.#used += size;
    let offset = 0;
    try {
      offset = this.#pool ? await this.#writePool(key, descs, size, options) : await this.#writeFile(key, descs, options);
    } catch (err) {
      this.#used -= size;
      throw err;
    }
    this.#forget(key);
    this.#blocks.set(key, { size, offset, readers: 0, forgotten: false });
  }

  /** Writes a block into a free extent of the pool; returns its offset. */
  async #writePool(key: string, descs: ParsedDescriptor[], size: number, options: WaitOptions): Promise<number> {
    const pool = this.#pool!;
    const offset = pool.extents.take(size);
    if (offset === undefined) throw new NoSpaceError(`block '${key}' of ${size} bytes does not fit in the pool's free space`);
    try {
      await this.#move('WRITE', pool.file, offset, descs, options);
    } catch (err) {
      pool.extents.give(offset, size);
      throw err;
    }
    return offset;
  }

  /** Writes a block to a temporary file and renames it: a failed put leaves no half block and keeps the old one. */
  async #writeFile(key: string, descs: ParsedDescriptor[], options: WaitOptions): Promise<number> {
    const tmp = path.join(this.dir!, `tmp.${HOST}.${process.pid}.${randomBytes(8).toString('hex')}`);
    const file = this.#agent.registerFile(tmp, { read: false, write: true, truncate: true, direct: this.#opts.direct });
    try {
      await this.#move('WRITE', file, 0, descs, options);
      file.deregister();
      await fs.rename(tmp, this.#file(key));
    } catch (err) {
      file.deregister();
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return 0;
  }

  /** Reads block `key` into `dst`, whose lengths must add up to its size. */
  get(key: string, dst: Descriptor | Descriptor[], options: WaitOptions = {}): Promise<void> {
    return this.#run(() => this.#get(key, dst, options));
  }

  async #get(key: string, dst: Descriptor | Descriptor[], options: WaitOptions): Promise<void> {
    parse(BlockKeySchema, key, 'key');
    const descs = parseDescriptors(Array.isArray(dst) ? dst : [dst], 'dst');
    const block = this.#blocks.get(key);
    if (!block) throw new NotFoundError(`no block '${key}'`);
    const size = descs.reduce((n, d) => n + d.len, 0);
    if (size !== block.size) throw new MismatchError(`block '${key}' has ${block.size} bytes, the destination ${size}`);
    if (this.#pool) {
      const pool = this.#pool;
      block.readers++;
      try {
        await this.#move('READ', pool.file, block.offset, descs, options);
      } finally {
        if (--block.readers === 0 && block.forgotten) pool.extents.give(block.offset, block.size);
      }
      return;
    }
    // Once open, the file reads whole even if a put or delete replaces or removes it meanwhile.
    let file: FileRegion;
    try {
      file = this.#agent.registerFile(this.#file(key), { write: false, direct: this.#opts.direct });
    } catch (err) {
      // Another process deleted (or replaced it with something that is not a block): the index heals.
      if (err instanceof IxferError && (err.code === 'ERR_NOT_FOUND' || err.code === 'ERR_INVALID_PARAM')) {
        this.#forget(key);
        throw new NotFoundError(`no block '${key}' (its file was removed or replaced by another process)`, { cause: err });
      }
      throw err;
    }
    const fileSize = file.size;
    if (fileSize !== block.size) {
      // Rewritten by another process since we indexed it (caught mid-write, or another block now).
      file.deregister();
      this.#forget(key);
      throw new NotFoundError(`no block '${key}' (its file was replaced by another process: ${fileSize} bytes, not ${block.size})`);
    }
    try {
      await this.#move('READ', file, 0, descs, options);
    } finally {
      file.deregister();
    }
  }

  /** Removes block `key`; false when there was none. */
  delete(key: string): Promise<boolean> {
    return this.#run(async () => {
      parse(BlockKeySchema, key, 'key');
      if (!this.#blocks.has(key)) return false;
      this.#forget(key);
      if (!this.#pool) await fs.rm(this.#file(key), { force: true });
      return true;
    });
  }

  /** Drops block `key` from the index; a pool extent is freed at once, or by the last get reading it. */
  #forget(key: string): void {
    const b = this.#blocks.get(key);
    if (!b) return;
    this.#blocks.delete(key);
    this.#used -= b.size;
    b.forgotten = true;
    if (b.readers === 0) this.#pool?.extents.give(b.offset, b.size);
  }

  /**
   * One transfer between the descriptors and consecutive bytes of file from
   * offset. When it fails (a timeout or abort included) it rejects only once
   * the I/O under way has stopped, so that the caller may free the file and
   * the extent.
   */
  async #move(op: 'READ' | 'WRITE', file: FileRegion, offset: number, descs: ParsedDescriptor[], options: WaitOptions): Promise<void> {
    let at = offset;
    const files = descs.map((d) => {
      const f = file.desc(at, d.len);
      at += d.len;
      return f;
    });
    const t = this.#agent.createFileTransfer({ op, local: descs, files, engine: this.#opts.engine });
    try {
      await t.run(options);
    } catch (err) {
      await t.settled();
      throw err;
    }
  }

  /**
   * Waits for the puts, gets and deletes under way, then releases the pool
   * (its blocks are gone) or forgets the directory's index (its files stay).
   * Later puts, gets and deletes are ERR_NOT_ALLOWED.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await Promise.allSettled(this.#busy);
    this.#pool?.file.deregister();
    this.#blocks.clear();
    this.#used = 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
