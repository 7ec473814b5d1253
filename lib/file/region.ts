/** A file registered with an agent for transfers. */
import { checkBlocks, isWhole } from '../core/memory.js';
import { InvalidParamError, NotAllowedError } from '../errors.js';
import { FILE_DIRECT, FILE_READ, FILE_WRITE } from '../native/layout.js';
import type { FileHandle, FileInfoRaw } from '../native/shim.js';

/** A range of a registered file. */
export interface FileDescriptor {
  file: FileRegion;
  offset: number;
  len: number;
}

/** What a file needs of the engine it is registered with. */
export interface FileOwner {
  fileSize(file: FileRegion): number;
  closeFile(file: FileRegion): void;
}

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
  readonly #owner: FileOwner;

  /** @internal */
  constructor(owner: FileOwner, path: string, handle: FileHandle, info: FileInfoRaw) {
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

  /** A descriptor of [offset, offset+len) of the file (it may grow: the transfer checks the range). */
  desc(offset: number, len: number): FileDescriptor {
    if (!isWhole(offset) || !isWhole(len)) throw new InvalidParamError(`file descriptor [${String(offset)}, +${String(len)}) takes whole numbers`);
    return { file: this, offset, len };
  }

  /** `count` descriptors of `blockSize` bytes from `offset`. */
  blocks(blockSize: number, count: number, offset = 0): FileDescriptor[] {
    checkBlocks(blockSize, count, offset);
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
