/**
 * Memory <-> file transfers on an agent: registered files, VRAM regions, and
 * the engine that moves bytes between them (cuFile batch, cuFile from a
 * thread pool, or pread/pwrite from a thread pool with VRAM staged through
 * host memory). File transfers are ordinary Transfers: their completions
 * arrive on the agent's event pipe like network ones.
 */
import util from 'node:util';

import type { GiveUpCode } from './deadline-wait.js';
import { codeOfStatus, InvalidParamError, MismatchError, NotAllowedError, NotFoundError, statusOf } from './errors.js';
import {
  FileOpenOptionsSchema,
  FileTransferRequestSchema,
  parseFileDescriptors,
  VramSourceSchema,
  type FileDescriptor,
  type FileOpenOptions,
  type FileTransferRequest,
  type VramSource,
} from './file-schemas.js';
import { MemoryRegion, type RegionOwner } from './memory.js';
import {
  check,
  FILE_CREATE,
  FILE_DIRECT,
  FILE_ENGINE_KINDS,
  FILE_MEMORY,
  FILE_PAIR_BYTES,
  FILE_READ,
  FILE_TRUNCATE,
  FILE_WRITE,
  OP_READ,
  OP_WRITE,
  type AgentHandle,
  type FileEngineHandle,
  type FileHandle,
  type FileInfoRaw,
  type MrHandle,
  type Shim,
} from './native.js';
import { RangeIndex } from './regions.js';
import { parse, parseDescriptors, type FileEngineKindSchema, type Op, type ParsedDescriptor } from './schemas.js';
import { Transfer, type Completion, type TransferHost } from './transfer.js';
import type { z } from 'zod';

export type FileEngineKind = Exclude<z.infer<typeof FileEngineKindSchema>, 'auto'>;

/** Status codes of ixfer.h used here. */
/** A file registered with an agent for transfers. */
export class FileRegion implements Disposable {
  /** The path it was opened with, or `fd N` for an adopted descriptor. */
  readonly path: string;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly direct: boolean;
  /** What O_DIRECT asks: memory addresses aligned to memAlign, offsets and lengths to offsetAlign (1 without O_DIRECT). */
  readonly memAlign: number;
  readonly offsetAlign: number;
  /** @internal */ readonly handle: FileHandle;
  /** @internal true once registered with cuFile; the reason when cuFile refused it. */
  cufile: true | string | undefined;
  #registered = true;
  #inUse = 0;
  readonly #owner: FileEngine;

  /** @internal */
  constructor(owner: FileEngine, path: string, handle: FileHandle, info: FileInfoRaw) {
    this.#owner = owner;
    this.path = path;
    this.handle = handle;
    this.readable = (info.flags & FILE_READ) !== 0;
    this.writable = (info.flags & FILE_WRITE) !== 0;
    this.direct = (info.flags & FILE_DIRECT) !== 0;
    this.memAlign = info.mem_align;
    this.offsetAlign = info.offset_align;
  }

  /** The file's size now. */
  get size(): number {
    return this.#owner.fileSize(this);
  }

  get registered(): boolean {
    return this.#registered;
  }

  /** @internal Checked by Transfer.post(). */
  get valid(): boolean {
    return this.#registered;
  }

  /** A descriptor of [offset, offset+len) of the file. */
  desc(offset: number, len: number): FileDescriptor {
    return { file: this, offset, len };
  }

  /** `count` descriptors of `blockSize` bytes from `offset`. */
  blocks(blockSize: number, count: number, offset = 0): FileDescriptor[] {
    return Array.from({ length: count }, (_, i) => this.desc(offset + i * blockSize, blockSize));
  }

  /** Closes the file (if ixfer opened it); refused with ERR_NOT_ALLOWED while a transfer uses it. */
  deregister(): void {
    if (!this.#registered) return;
    if (this.#inUse > 0) throw new NotAllowedError(`${this.path} is used by ${this.#inUse} transfer(s) in flight`);
    this.#registered = false;
    this.#owner.closeFile(this);
  }

  [Symbol.dispose](): void {
    this.deregister();
  }

  /** @internal */ acquire(): void {
    this.#inUse++;
  }
  /** @internal */ releaseUse(): void {
    this.#inUse--;
  }
  /** @internal The agent closed. */ markClosed(): void {
    this.#registered = false;
  }
}

/** A file transfer: a Transfer that also says which engine moves it, and why. */
export class FileTransfer extends Transfer {
  readonly engine: FileEngineKind;
  /** Why this engine: the one asked for, or what 'auto' found (e.g. cuFile's refusal). */
  readonly engineReason: string;

  /** @internal */
  constructor(host: TransferHost, resolved: ConstructorParameters<typeof Transfer>[1], engine: FileEngineKind, reason: string) {
    super(host, resolved);
    this.engine = engine;
    this.engineReason = reason;
  }
}

/** What the engine needs of its agent. */
export interface FileEngineDeps {
  native: Shim;
  agent(): AgentHandle;
  defaultTimeoutMs: number | undefined;
  options: { engine: 'auto' | FileEngineKind; threads: number; chunkBytes: number; gdsBatch: number };
  /** Host memory registered with the agent. */
  findDram(addr: number, len: number): MemoryRegion | undefined;
  /** Assigns an id, calls post(id), and routes the id's completion event to c. */
  track(c: Completion, post: (id: number) => void): number;
}

const warned = new Set<string>();
/** The fallback of 'auto' is logged once per reason. */
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  process.emitWarning(message, { code: 'IXFER_FILE_ENGINE' });
}

/** @internal One per agent, made on first use. */
export class FileEngine implements RegionOwner {
  readonly #d: FileEngineDeps;
  #handle: FileEngineHandle | undefined;
  #files = new Set<FileRegion>();
  #vram = new RangeIndex<MemoryRegion>();
  #ownedVram = new Set<MemoryRegion>();
  #cufileBufs = new Set<MemoryRegion>();

  constructor(deps: FileEngineDeps) {
    this.#d = deps;
  }

  #engine(): FileEngineHandle {
    if (this.#handle) return this.#handle;
    const o = this.#d.options;
    const out: (bigint | null)[] = [null];
    check(
      this.#d.native.fileEngineCreate(this.#d.agent(), { threads: o.threads, gds_batch: o.gdsBatch, chunk_bytes: o.chunkBytes }, out),
      'starting the file engine',
    );
    this.#handle = out[0] as FileEngineHandle;
    return this.#handle;
  }

  // ---- files ---------------------------------------------------------------

  /** Opens path (or adopts an open descriptor, which stays the caller's to close). */
  registerFile(source: string | number, options: FileOpenOptions = {}): FileRegion {
    this.#d.agent();
    const o = parse(FileOpenOptionsSchema, options, 'file options');
    const native = this.#d.native;
    const out: (bigint | null)[] = [null];
    let label: string;
    if (typeof source === 'number') {
      if (!Number.isInteger(source) || source < 0) throw new InvalidParamError('a file descriptor is a non-negative integer');
      label = `fd ${source}`;
      check(native.fileAdopt(source, out), `registering ${label}`);
    } else if (typeof source === 'string' && source.length > 0) {
      label = source;
      if (!o.read && !o.write) throw new InvalidParamError(`open '${source}' for reading, writing or both`);
      const flags =
        (o.read ? FILE_READ : 0) |
        (o.write ? FILE_WRITE : 0) |
        ((o.create ?? o.write) ? FILE_CREATE : 0) |
        (o.truncate ? FILE_TRUNCATE : 0) |
        (o.direct ? FILE_DIRECT : 0);
      check(native.fileOpen(source, flags, out), `registering file '${source}'`);
    } else {
      throw new InvalidParamError('registerFile takes a path or a file descriptor');
    }
    return this.#adopt(label, out[0] as FileHandle);
  }

  /** @internal An anonymous memory file (memfd), for block stores without a directory. */
  memoryFile(name: string): FileRegion {
    this.#d.agent();
    const out: (bigint | null)[] = [null];
    check(this.#d.native.fileOpen(name, FILE_MEMORY | FILE_READ | FILE_WRITE, out), 'creating a memory file');
    return this.#adopt(`memory:${name}`, out[0] as FileHandle);
  }

  #adopt(label: string, handle: FileHandle): FileRegion {
    try {
      const file = new FileRegion(this, label, handle, this.#stat(handle));
      this.#files.add(file);
      return file;
    } catch (err) {
      this.#d.native.fileClose(handle);
      throw err;
    }
  }

  #stat(handle: FileHandle): FileInfoRaw {
    const info: Partial<FileInfoRaw> = {};
    check(this.#d.native.fileStat(handle, info), 'reading file attributes');
    return info as FileInfoRaw;
  }

  /** @internal */
  fileSize(file: FileRegion): number {
    if (!file.registered) throw new NotAllowedError(`${file.path} is no longer registered`);
    return Number(this.#stat(file.handle).size);
  }

  /** @internal */
  closeFile(file: FileRegion): void {
    this.#files.delete(file);
    this.#d.native.fileClose(file.handle);
  }

  /** Registers file with cuFile once; returns why not when it cannot be. */
  #cufile(file: FileRegion): string | undefined {
    if (file.cufile === undefined) {
      file.cufile = this.#d.native.fileUseCufile(file.handle) === 0 ? true : this.#d.native.lastError();
    }
    return file.cufile === true ? undefined : file.cufile;
  }

  // ---- VRAM ----------------------------------------------------------------

  /** Allocates device memory on CUDA device devId; freed when deregistered. */
  allocateVram(bytes: number, devId = 0): MemoryRegion {
    this.#d.agent();
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocateVram needs a positive byte count');
    if (!Number.isInteger(devId) || devId < 0) throw new InvalidParamError('devId is a CUDA device ordinal');
    const out: (number | bigint)[] = [0];
    check(this.#d.native.cudaAlloc(devId, bytes, out), `allocating ${bytes} bytes on CUDA device ${devId}`);
    const region = this.#addVram(Number(out[0]), bytes, devId);
    this.#ownedVram.add(region);
    return region;
  }

  /** Registers device memory other code allocated; its device is looked up. */
  registerVram(source: VramSource): MemoryRegion {
    this.#d.agent();
    const { addr, len } = parse(VramSourceSchema, source, 'VRAM');
    const dev = [-1];
    check(this.#d.native.cudaPointerDevice(addr, dev), 'looking up the device of a pointer');
    if (dev[0]! < 0) throw new InvalidParamError(`0x${addr.toString(16)} is host memory: use registerMemory()`);
    return this.#addVram(addr, len, dev[0]!);
  }

  #addVram(addr: number, len: number, devId: number): MemoryRegion {
    const clash = this.#vram.overlapping(addr, len);
    if (clash) throw new InvalidParamError(`[0x${addr.toString(16)}, +${len}) overlaps registered device memory`);
    const region = new MemoryRegion({ owner: this, addr, len, key: 0n, handle: 0n as MrHandle, kind: 'VRAM', devId });
    this.#vram.insert(region);
    return region;
  }

  /** @internal RegionOwner of VRAM regions. */
  deregister(region: MemoryRegion): void {
    if (!region.registered) return;
    if (region.inUse > 0) throw new NotAllowedError(`region is used by ${region.inUse} transfer(s) in flight; wait for them first`);
    if (!this.#vram.remove(region)) throw new NotFoundError('region is not registered with this agent');
    region.markDeregistered();
    this.#releaseVram(region);
  }

  #releaseVram(region: MemoryRegion): void {
    if (this.#cufileBufs.delete(region)) this.#d.native.cufileBufDeregister(region.addr);
    if (this.#ownedVram.delete(region)) check(this.#d.native.cudaFree(region.addr), 'freeing device memory');
  }

  /** cuFileBufRegister, once per region; cuFile also works (through its own bounce buffers) without it. */
  #registerBuf(region: MemoryRegion): void {
    if (this.#cufileBufs.has(region)) return;
    if (this.#d.native.cufileBufRegister(region.addr, region.len) === 0) this.#cufileBufs.add(region);
  }

  // ---- transfers -------------------------------------------------------------

  /**
   * A transfer between memory descriptors (DRAM or VRAM) and file
   * descriptors, paired one to one with equal lengths.
   */
  createTransfer(request: FileTransferRequest): FileTransfer {
    this.#d.agent();
    const req = parse(FileTransferRequestSchema, request, 'file transfer');
    const local = parseDescriptors(req.local, 'file transfer.local');
    const descs = parseFileDescriptors(req.files, 'file transfer.files');
    if (local.length !== descs.length) {
      throw new MismatchError(`${local.length} memory descriptors but ${descs.length} file descriptors`);
    }
    const regions = local.map((d, i) => this.#memRegion(d, i));
    const files = descs.map((f, i) => this.#checkFile(req.op, f, i));
    local.forEach((d, i) => {
      const f = descs[i]!;
      if (d.len !== f.len) throw new MismatchError(`descriptor ${i}: memory length ${d.len}, file length ${f.len}`);
      checkAlignment(files[i]!, d, f, i);
    });
    const { engine, reason } = this.#choose(req.engine, regions, files);
    if (engine !== 'posix') for (const r of regions) if (r.kind === 'VRAM') this.#registerBuf(r);

    const buf = Buffer.alloc(local.length * FILE_PAIR_BYTES);
    let bytes = 0;
    local.forEach((d, i) => {
      const o = i * FILE_PAIR_BYTES;
      const r = regions[i]!;
      const f = descs[i]!;
      buf.writeBigUInt64LE(BigInt(d.addr), o);
      buf.writeBigUInt64LE(BigInt(d.len), o + 8);
      buf.writeBigUInt64LE(BigInt(r.addr), o + 16);
      buf.writeBigUInt64LE(files[i]!.handle, o + 24);
      buf.writeBigUInt64LE(BigInt(f.offset), o + 32);
      buf.writeInt32LE(r.kind === 'VRAM' ? r.devId : -1, o + 40);
      bytes += d.len;
    });
    const fileSet = [...new Set(files)];
    const name = fileSet.length === 1 ? fileSet[0]!.path : `${fileSet.length} files`;
    return new FileTransfer(
      this.#host(engine, fileSet, descs),
      {
        op: req.op,
        peer: { name, valid: true, generation: 1 },
        generation: 1,
        localRegions: [...new Set(regions)],
        remoteRegions: fileSet,
        pairs: new Uint8Array(buf.buffer, buf.byteOffset, buf.length),
        count: local.length,
        bytes,
        notification: undefined,
      },
      engine,
      reason,
    );
  }

  #memRegion(d: ParsedDescriptor, i: number): MemoryRegion {
    const r = this.#d.findDram(d.addr, d.len) ?? this.#vram.find(d.addr, d.len);
    if (!r) throw new NotFoundError(`local[${i}] [0x${d.addr.toString(16)}, +${d.len}) is not in registered memory`);
    return r;
  }

  #checkFile(op: Op, f: FileDescriptor, i: number): FileRegion {
    const file = f.file;
    if (!(file instanceof FileRegion) || !this.#files.has(file)) {
      throw new NotFoundError(`files[${i}] is not a file registered with this agent`);
    }
    if (op === 'WRITE' && !file.writable) throw new NotAllowedError(`files[${i}]: ${file.path} is not open for writing`);
    if (op === 'READ' && !file.readable) throw new NotAllowedError(`files[${i}]: ${file.path} is not open for reading`);
    return file;
  }

  /** The engine of a transfer: what was asked, or what 'auto' can use. */
  #choose(asked: string | undefined, regions: MemoryRegion[], files: FileRegion[]): { engine: FileEngineKind; reason: string } {
    const requested = asked ?? (process.env.IXFER_FILE_ENGINE || this.#d.options.engine);
    if (!['auto', 'posix', 'gds', 'gds_mt'].includes(requested)) {
      throw new InvalidParamError(`IXFER_FILE_ENGINE must be auto, gds, gds_mt or posix, not '${requested}'`);
    }
    const vram = regions.some((r) => r.kind === 'VRAM');
    if (requested === 'posix') return { engine: 'posix', reason: vram ? 'posix asked for; VRAM staged through host memory' : 'posix asked for' };
    if (requested !== 'auto' && !vram) {
      return { engine: 'posix', reason: `${requested} asked for, but host memory always moves with pread/pwrite` };
    }
    if (!vram) return { engine: 'posix', reason: 'auto: host memory moves with pread/pwrite' };
    const refusal = [...new Set(files)].map((f) => this.#cufile(f)).find((why) => why !== undefined);
    if (requested !== 'auto') {
      if (refusal) throw new NotAllowedError(`engine '${requested}' cannot be used: ${refusal}`);
      return { engine: requested as FileEngineKind, reason: `${requested} asked for` };
    }
    if (!refusal) return { engine: 'gds', reason: 'auto: VRAM with cuFile' };
    const reason = `auto: cuFile unavailable (${refusal}); VRAM staged through host memory with pread/pwrite`;
    warnOnce(`ixfer file transfers: ${reason}`);
    return { engine: 'posix', reason };
  }

  /** The TransferHost of one file transfer: posts to the engine, and describes its failures. */
  #host(engine: FileEngineKind, files: FileRegion[], descs: { file: FileRegion; offset: number; len: number }[]): TransferHost {
    const native = this.#d.native;
    return {
      defaultTimeoutMs: this.#d.defaultTimeoutMs,
      postNative: (transfer, op, _peer, pairs, count, notification) => {
        if (notification) throw new InvalidParamError('file transfers carry no notification');
        const handle = this.#engine();
        for (const f of files) f.acquire();
        const release = () => files.forEach((f) => f.releaseUse());
        try {
          return this.#d.track(
            {
              complete: (status, errno, detail) => {
                release();
                transfer.complete(status, errno, detail);
              },
              abandon: () => {
                release();
                transfer.abandon();
              },
            },
            (id) =>
              check(
                native.fileXferPost(handle, op === 'WRITE' ? OP_WRITE : OP_READ, FILE_ENGINE_KINDS[engine], pairs, count, id),
                `posting a file ${op}`,
              ),
          );
        } catch (err) {
          release();
          throw err;
        }
      },
      cancelNative: (id: number, code: GiveUpCode) => {
        if (this.#handle) native.fileXferCancel(this.#handle, id, statusOf(code));
      },
      describeError: (status, errno, detail) => describeFileError(status, errno, descs[detail]),
    };
  }

  /** Stops the engine (I/O under way finishes first) and frees files and VRAM. Before the agent goes. */
  close(): void {
    if (this.#handle) this.#d.native.fileEngineDestroy(this.#handle);
    this.#handle = undefined;
    for (const f of this.#files) {
      f.markClosed();
      this.#d.native.fileClose(f.handle);
    }
    this.#files.clear();
    for (const r of [...this.#vram.values()]) {
      r.markDeregistered();
      this.#releaseVram(r);
    }
    this.#vram.clear();
  }
}

function checkAlignment(file: FileRegion, mem: ParsedDescriptor, f: FileDescriptor, i: number): void {
  if (!file.direct) return;
  const bad = [
    f.offset % file.offsetAlign ? `file offset ${f.offset}` : '',
    f.len % file.offsetAlign ? `length ${f.len}` : '',
  ].filter(Boolean);
  if (mem.addr % file.memAlign) bad.push(`memory address 0x${mem.addr.toString(16)}`);
  if (bad.length) {
    throw new InvalidParamError(
      `descriptor ${i}: ${file.path} is open with O_DIRECT, which needs file offsets and lengths in multiples of ` +
        `${file.offsetAlign} bytes and memory aligned to ${file.memAlign} bytes; ${bad.join(', ')} ` +
        `${bad.length === 1 ? 'is' : 'are'} not (use agent.allocate() for aligned memory, or open without direct)`,
    );
  }
}

/** Words for a failed file transfer; desc is the descriptor that failed. */
function describeFileError(status: number, errno: number, desc: { file: FileRegion; offset: number; len: number } | undefined): string {
  const code = codeOfStatus(status);
  if (code === 'ERR_TIMEOUT' && !errno) return 'timed out';
  if (code === 'ERR_CANCELED') return 'canceled';
  const where = desc ? `${desc.file.path} [${desc.offset}, +${desc.len})` : 'a descriptor';
  const os = errno > 0 && errno < 4096 ? `${util.getSystemErrorName(-errno)}, errno ${errno}` : '';
  switch (code) {
    case 'ERR_END_OF_FILE':
      return `${where} reaches past the end of the file${desc?.file.registered ? ` (${desc.file.size} bytes)` : ''}`;
    case 'ERR_NO_SPACE':
      return `no space left for ${where} (${os || 'disk full'})`;
    case 'ERR_NOT_ALLOWED':
      return `${where}: permission denied (${os})`;
    case 'ERR_INVALID_PARAM':
      return desc?.file.direct
        ? `${where}: O_DIRECT refused the I/O (${os}): offsets and lengths must be multiples of ${desc.file.offsetAlign} and memory aligned to ${desc.file.memAlign}`
        : `${where}: invalid I/O (${os})`;
    default:
      return `${where}: ${os || (errno >= 5000 ? `cuFile error ${errno}` : 'I/O or CUDA copy failed')}`;
  }
}
