/**
 * The file engine: moves bytes between memory (DRAM or VRAM) and registered
 * files with cuFile batches, cuFile from a thread pool, or pread/pwrite from a
 * thread pool with VRAM staged through host memory. Its completions arrive on
 * the agent's event pipe like network ones.
 */
import util from 'node:util';

import type { z } from 'zod';

import type { Completions } from '../core/completions.js';
import type { GiveUpCode } from '../core/deadline.js';
import type { Completion, Engine, Posting } from '../core/engine.js';
import type { MemoryRegion } from '../core/memory.js';
import type { Telemetry } from '../core/telemetry.js';
import { Transfer } from '../core/transfer.js';
import { codeOfStatus, InvalidParamError, MismatchError, NotAllowedError, NotFoundError, statusOf } from '../errors.js';
import {
  FILE_CREATE,
  FILE_DIRECT,
  FILE_ENGINE_KINDS,
  FILE_MEMORY,
  FILE_READ,
  FILE_TRUNCATE,
  FILE_WRITE,
  OP_READ,
  OP_WRITE,
  packFilePairs,
} from '../native/layout.js';
import { check, shim, type AgentHandle, type FileEngineHandle, type FileHandle, type FileInfoRaw } from '../native/shim.js';
import { parse, parseDescriptors, type FileEngineKindSchema, type Op, type ParsedDescriptor } from '../schemas.js';
import { FileRegion, type FileDescriptor, type FileOwner } from './region.js';
import {
  FileOpenOptionsSchema,
  FileTransferRequestSchema,
  parseFileDescriptors,
  type FileOpenOptions,
  type FileTransferRequest,
} from './schemas.js';

export type FileEngineKind = Exclude<z.infer<typeof FileEngineKindSchema>, 'auto'>;

/** A file transfer: a Transfer that also says which engine moves it, and why. */
export class FileTransfer extends Transfer {
  readonly engine: FileEngineKind;
  /** Why this engine: the one asked for, or what 'auto' found (e.g. cuFile's refusal). */
  readonly engineReason: string;

  /** @internal */
  constructor(engine: FileEngine, posting: FilePosting) {
    super(engine, posting);
    this.engine = posting.kind;
    this.engineReason = posting.reason;
  }
}

export interface FilePosting extends Posting {
  readonly kind: FileEngineKind;
  readonly reason: string;
  /** The files, each once: held (not deregistrable) while a run is in flight. */
  readonly files: readonly FileRegion[];
  /** Per pair, for the error of the one that failed. */
  readonly descs: readonly FileDescriptor[];
  /** ixfer_file_pair[] */
  readonly pairs: Uint8Array;
}

/** What the engine needs of its agent. */
export interface FileEngineDeps {
  /** The shim's agent, whose event queue the engine reports to. */
  agent(): AgentHandle;
  completions: Completions;
  telemetry: Telemetry;
  defaultTimeoutMs: number | undefined;
  options: { engine: 'auto' | FileEngineKind; threads: number; chunkBytes: number; gdsBatch: number };
  /** The registered memory (host or device) holding [addr, +len). */
  findMemory(addr: number, len: number): MemoryRegion | undefined;
}

const warned = new Set<string>();
/** The fallback of 'auto' is logged once per reason. */
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  process.emitWarning(message, { code: 'IXFER_FILE_ENGINE' });
}

/** @internal One per agent, made on first use; its native engine and threads start with the first transfer. */
export class FileEngine implements Engine<FilePosting>, FileOwner {
  readonly defaultTimeoutMs: number | undefined;
  readonly telemetry: Telemetry;
  readonly #d: FileEngineDeps;
  #handle: FileEngineHandle | undefined;
  #closed = false;
  #files = new Set<FileRegion>();
  /** VRAM regions registered with cuFile (cuFileBufRegister). */
  #cufileBufs = new Set<MemoryRegion>();

  constructor(deps: FileEngineDeps) {
    this.#d = deps;
    this.defaultTimeoutMs = deps.defaultTimeoutMs;
    this.telemetry = deps.telemetry;
  }

  checkOpen(): void {
    if (this.#closed) throw new NotAllowedError('the agent is closed');
  }

  #engine(): FileEngineHandle {
    if (this.#handle) return this.#handle;
    this.checkOpen();
    const o = this.#d.options;
    const out: (bigint | null)[] = [null];
    check(
      shim().fileEngineCreate(this.#d.agent(), { threads: o.threads, gds_batch: o.gdsBatch, chunk_bytes: o.chunkBytes }, out),
      'starting the file engine',
    );
    this.#handle = out[0] as FileEngineHandle;
    return this.#handle;
  }

  // ---- files ---------------------------------------------------------------

  /** Opens path (or adopts an open descriptor, which stays the caller's to close). */
  registerFile(source: string | number, options: FileOpenOptions = {}): FileRegion {
    const o = parse(FileOpenOptionsSchema, options, 'file options');
    const native = shim();
    const out: (bigint | null)[] = [null];
    let label: string;
    if (typeof source === 'number') {
      if (!Number.isInteger(source) || source < 0) throw new InvalidParamError('a file descriptor is a non-negative integer');
      label = `fd ${source}`;
      check(native.fileAdopt(source, out), `registering ${label}`);
    } else if (typeof source === 'string' && source.length > 0) {
      label = source;
      // The C call would stop at the NUL and open another file than the one named.
      if (source.includes('\0')) throw new InvalidParamError(`a path has no NUL characters: ${JSON.stringify(source)}`);
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
    if (name.includes('\0')) throw new InvalidParamError(`a memory file's name has no NUL characters: ${JSON.stringify(name)}`);
    const out: (bigint | null)[] = [null];
    check(shim().fileOpen(name, FILE_MEMORY | FILE_READ | FILE_WRITE, out), 'creating a memory file');
    return this.#adopt(`memory:${name}`, out[0] as FileHandle);
  }

  #adopt(label: string, handle: FileHandle): FileRegion {
    try {
      const file = new FileRegion(this, label, handle, this.#stat(handle));
      this.#files.add(file);
      return file;
    } catch (err) {
      shim().fileClose(handle);
      throw err;
    }
  }

  #stat(handle: FileHandle): FileInfoRaw {
    const info: Partial<FileInfoRaw> = {};
    check(shim().fileStat(handle, info), 'reading file attributes');
    return info as FileInfoRaw;
  }

  /** @internal FileOwner */
  fileSize(file: FileRegion): number {
    if (!file.registered) throw new NotAllowedError(`${file.path} is no longer registered`);
    return Number(this.#stat(file.handle).size);
  }

  /** @internal FileOwner */
  closeFile(file: FileRegion): void {
    this.#files.delete(file);
    shim().fileClose(file.handle);
  }

  /** Registers file with cuFile once; returns why not when it cannot be. */
  #cufile(file: FileRegion): string | undefined {
    if (file.cufile === undefined) {
      file.cufile = shim().fileUseCufile(file.handle) === 0 ? true : shim().lastError();
    }
    return file.cufile === true ? undefined : file.cufile;
  }

  /** cuFileBufRegister, once per region; cuFile also works (through its own bounce buffers) without it. */
  #registerBuf(region: MemoryRegion): void {
    if (this.#cufileBufs.has(region)) return;
    if (shim().cufileBufRegister(region.addr, region.len) === 0) this.#cufileBufs.add(region);
  }

  /** A VRAM region is going: deregisters it from cuFile first. */
  forgetBuffer(region: MemoryRegion): void {
    if (this.#cufileBufs.delete(region)) shim().cufileBufDeregister(region.addr);
  }

  // ---- transfers -------------------------------------------------------------

  /**
   * A transfer between memory descriptors (DRAM or VRAM) and file
   * descriptors, paired one to one with equal lengths.
   */
  createTransfer(request: FileTransferRequest): FileTransfer {
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
    let bytes = 0;
    const pairs = packFilePairs(
      local.map((d, i) => {
        const r = regions[i]!;
        bytes += d.len;
        const device = r.kind === 'VRAM' ? r.devId : -1;
        return { addr: d.addr, len: d.len, base: r.addr, file: files[i]!.handle, offset: descs[i]!.offset, device };
      }),
    );
    const fileSet = [...new Set(files)];
    return new FileTransfer(this, {
      op: req.op,
      target: fileSet.length === 1 ? fileSet[0]!.path : `${fileSet.length} files`,
      count: local.length,
      bytes,
      memory: [...new Set(regions)],
      kind: engine,
      reason,
      files: fileSet,
      descs,
      pairs,
    });
  }

  #memRegion(d: ParsedDescriptor, i: number): MemoryRegion {
    const r = this.#d.findMemory(d.addr, d.len);
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

  // ---- Engine ----------------------------------------------------------------

  post(p: FilePosting, done: Completion): number {
    for (const f of p.files) {
      if (!f.registered) throw new NotFoundError(`a file of this transfer (${f.path}) was deregistered`);
    }
    const handle = this.#engine();
    const id = this.#d.completions.track(done, (id) =>
      check(
        shim().fileXferPost(handle, p.op === 'WRITE' ? OP_WRITE : OP_READ, FILE_ENGINE_KINDS[p.kind], p.pairs, p.count, id),
        `posting a file ${p.op}`,
      ),
    );
    for (const f of p.files) f.acquire();
    return id;
  }

  cancel(id: number, code: GiveUpCode): void {
    if (this.#handle) shim().fileXferCancel(this.#handle, id, statusOf(code));
  }

  describeError(p: FilePosting, status: number, errno: number, detail: number): string {
    return describeFileError(status, errno, p.descs[detail]);
  }

  release(p: FilePosting): void {
    for (const f of p.files) f.releaseUse();
  }

  /**
   * Stops the engine and closes the files. Before the agent's endpoint goes.
   * I/O under way finishes first (a chunk can take seconds on a slow disk):
   * the threads are joined on libuv's pool, not on the event loop.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle) await new Promise<void>((resolve, reject) => shim().fileEngineDestroy.async(handle, (err) => (err ? reject(err as Error) : resolve())));
    for (const f of this.#files) {
      f.markClosed();
      shim().fileClose(f.handle);
    }
    this.#files.clear();
    for (const r of [...this.#cufileBufs]) this.forgetBuffer(r);
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
function describeFileError(status: number, errno: number, desc: FileDescriptor | undefined): string {
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
