/**
 * A store of KV-cache blocks by key, for offloading from GPU or host memory:
 * one file per block in a directory, or, without a directory, a host memory
 * pool (an anonymous memory file). Blocks move with the agent's file
 * transfers, so put() and get() are awaited like any transfer.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import type { Agent } from './agent.js';
import { MismatchError, NoSpaceError, NotFoundError } from './errors.js';
import { BlockKeySchema, BlockStoreOptionsSchema, type BlockStoreOptions } from './file-schemas.js';
import type { FileRegion } from './files.js';
import { DescriptorListSchema, parse, type Descriptor, type ParsedDescriptor, type WaitOptions } from './schemas.js';

const SUFFIX = '.blk';

interface Block {
  size: number;
  /** Pool only: where the block lies in the memory file. */
  offset: number;
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

export class BlockStore implements AsyncDisposable {
  readonly capacityBytes: number;
  /** The directory, or undefined for the host memory pool. */
  readonly dir: string | undefined;
  readonly #agent: Agent;
  readonly #opts: ReturnType<typeof BlockStoreOptionsSchema.parse>;
  readonly #blocks = new Map<string, Block>();
  readonly #pool: { file: FileRegion; extents: Extents } | undefined;
  #used = 0;
  #tmp = 0;

  private constructor(agent: Agent, opts: ReturnType<typeof BlockStoreOptionsSchema.parse>) {
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
  static async open(agent: Agent, options: BlockStoreOptions): Promise<BlockStore> {
    const opts = parse(BlockStoreOptionsSchema, options, 'block store options');
    const store = new BlockStore(agent, opts);
    if (opts.dir) await store.#scan(opts.dir);
    return store;
  }

  async #scan(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    for (const name of await fs.readdir(dir)) {
      if (!name.endsWith(SUFFIX) || !/^[0-9a-f]+\.blk$/.test(name)) continue;
      const st = await fs.stat(path.join(dir, name));
      const key = Buffer.from(name.slice(0, -SUFFIX.length), 'hex').toString('utf8');
      this.#blocks.set(key, { size: st.size, offset: 0 });
      this.#used += st.size;
    }
  }

  get usedBytes(): number {
    return this.#used;
  }

  has(key: string): boolean {
    return this.#blocks.has(key);
  }

  /** Bytes of the block, or undefined. */
  size(key: string): number | undefined {
    return this.#blocks.get(key)?.size;
  }

  keys(): string[] {
    return [...this.#blocks.keys()];
  }

  #file(key: string): string {
    return path.join(this.dir!, Buffer.from(key, 'utf8').toString('hex') + SUFFIX);
  }

  /**
   * Stores the bytes of `src` (descriptors of registered memory, concatenated)
   * as block `key`, replacing any block of that key once the new one is
   * complete. ERR_NO_SPACE beyond capacityBytes.
   */
  async put(key: string, src: Descriptor | Descriptor[], options: WaitOptions = {}): Promise<void> {
    parse(BlockKeySchema, key, 'key');
    const descs = parse(DescriptorListSchema, Array.isArray(src) ? src : [src], 'src');
    const size = descs.reduce((n, d) => n + d.len, 0);
    const old = this.#blocks.get(key);
    if (this.#used - (old?.size ?? 0) + size > this.capacityBytes) {
      throw new NoSpaceError(`block '${key}' of ${size} bytes does not fit: ${this.#used} of ${this.capacityBytes} bytes are used`);
    }
    if (this.#pool) {
      const offset = this.#pool.extents.take(size);
      if (offset === undefined) throw new NoSpaceError(`block '${key}' of ${size} bytes does not fit in the pool's free space`);
      try {
        await this.#move('WRITE', this.#pool.file, offset, descs, options);
      } catch (err) {
        this.#pool.extents.give(offset, size);
        throw err;
      }
      this.#forget(key);
      this.#blocks.set(key, { size, offset });
    } else {
      // Written to a temporary file and renamed: a failed put leaves no half block and keeps the old one.
      const final = this.#file(key);
      const tmp = `${final}.tmp${this.#tmp++}`;
      const file = this.#agent.registerFile(tmp, { read: false, write: true, truncate: true, direct: this.#opts.direct });
      try {
        await this.#move('WRITE', file, 0, descs, options);
      } catch (err) {
        file.deregister();
        await fs.rm(tmp, { force: true });
        throw err;
      }
      file.deregister();
      await fs.rename(tmp, final);
      this.#forget(key);
      this.#blocks.set(key, { size, offset: 0 });
    }
    this.#used += size;
  }

  /** Reads block `key` into `dst`, whose lengths must add up to its size. */
  async get(key: string, dst: Descriptor | Descriptor[], options: WaitOptions = {}): Promise<void> {
    parse(BlockKeySchema, key, 'key');
    const descs = parse(DescriptorListSchema, Array.isArray(dst) ? dst : [dst], 'dst');
    const block = this.#blocks.get(key);
    if (!block) throw new NotFoundError(`no block '${key}'`);
    const size = descs.reduce((n, d) => n + d.len, 0);
    if (size !== block.size) throw new MismatchError(`block '${key}' has ${block.size} bytes, the destination ${size}`);
    if (this.#pool) return this.#move('READ', this.#pool.file, block.offset, descs, options);
    const file = this.#agent.registerFile(this.#file(key), { write: false, direct: this.#opts.direct });
    try {
      await this.#move('READ', file, 0, descs, options);
    } finally {
      file.deregister();
    }
  }

  /** Removes block `key`; false when there was none. */
  async delete(key: string): Promise<boolean> {
    if (!this.#blocks.has(key)) return false;
    this.#forget(key);
    if (!this.#pool) await fs.rm(this.#file(key), { force: true });
    return true;
  }

  #forget(key: string): void {
    const b = this.#blocks.get(key);
    if (!b) return;
    this.#blocks.delete(key);
    this.#used -= b.size;
    this.#pool?.extents.give(b.offset, b.size);
  }

  /** One transfer between the descriptors and consecutive bytes of file from offset. */
  #move(op: 'READ' | 'WRITE', file: FileRegion, offset: number, descs: ParsedDescriptor[], options: WaitOptions): Promise<void> {
    let at = offset;
    const files = descs.map((d) => {
      const f = file.desc(at, d.len);
      at += d.len;
      return f;
    });
    return this.#agent.createFileTransfer({ op, local: descs, files, engine: this.#opts.engine }).run(options);
  }

  /** Releases the pool (its blocks are gone) or forgets the directory's index (its files stay). */
  async close(): Promise<void> {
    this.#pool?.file.deregister();
    this.#blocks.clear();
    this.#used = 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
