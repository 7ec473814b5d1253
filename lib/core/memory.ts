/** Memory registered with an agent, and the descriptors that point into it. */
import { constants } from 'node:buffer';
import { markAsUntransferable } from 'node:worker_threads';

import { InvalidParamError, NotAllowedError, NotSupportedError, type IxferError } from '../errors.js';
import type { MrHandle } from '../native/shim.js';
import type { PackedDescriptors, ParsedDescriptor } from '../schemas.js';

/** Host memory, or CUDA device memory (devId is then the CUDA device). */
export type MemoryKind = 'DRAM' | 'VRAM';
/** How device memory crosses the network: the provider reaches it (FI_HMEM), or its agent stages it through host memory. */
export type VramPath = 'gpudirect' | 'staged';

/** What registerMemory accepts: JavaScript memory, or native memory by address. */
export type MemorySource = ArrayBuffer | SharedArrayBuffer | ArrayBufferView | { addr: number | bigint; len: number };

/** Where a region was registered (the network engine for host memory, gpu/ for VRAM): it deregisters it. */
export interface RegionOwner {
  deregister(region: MemoryRegion): void;
}

export class MemoryRegion implements Disposable {
  readonly addr: number;
  readonly len: number;
  readonly kind: MemoryKind;
  readonly devId: number;
  /** VRAM: how it crosses the network; undefined for host memory. */
  readonly path: VramPath | undefined;
  /** The name given at registration: peers find the region by it in our metadata. */
  readonly name: string | undefined;
  /** Remote key peers use to reach this region. */
  readonly key: bigint;
  /** @internal */ readonly handle: MrHandle;
  /** Transfers in flight that use this region. */
  #inUse = 0;
  #registered = true;
  readonly #owner: RegionOwner;
  /** Keeps JavaScript memory alive (and unmoved) while registered. */
  readonly #keepAlive: unknown;
  /** For memory the agent allocated: a view of it, dropped once the memory is retired. */
  #view: Uint8Array | undefined;
  #retired = false;

  /** @internal */
  constructor(init: {
    owner: RegionOwner;
    addr: number;
    len: number;
    key: bigint;
    handle: MrHandle;
    keepAlive?: unknown;
    view?: Uint8Array;
    kind?: MemoryKind;
    devId?: number;
    path?: VramPath;
    name?: string | undefined;
  }) {
    this.#owner = init.owner;
    this.kind = init.kind ?? 'DRAM';
    this.devId = init.devId ?? 0;
    this.path = init.path;
    this.name = init.name;
    this.addr = init.addr;
    this.len = init.len;
    this.key = init.key;
    this.handle = init.handle;
    this.#keepAlive = init.keepAlive;
    this.#view = init.view;
  }

  get registered(): boolean {
    return this.#registered;
  }

  /** Bytes of this region (for memory the agent allocated, or registered from JavaScript). */
  get bytes(): Uint8Array {
    if (this.kind === 'VRAM') throw new NotAllowedError('device memory has no host view: use cuda.read() and cuda.write()');
    if (this.#retired) throw new NotAllowedError('this region was deregistered: the memory the agent allocated for it is gone');
    if (this.#view) return this.#view;
    if (this.#keepAlive === ALLOCATED) {
      throw new NotSupportedError(`a region of ${this.len} bytes is larger than a Buffer can be here (${MAX_VIEW_BYTES}): move its bytes with transfers`);
    }
    const k = this.#keepAlive;
    if (k instanceof ArrayBuffer || (typeof SharedArrayBuffer === 'function' && k instanceof SharedArrayBuffer)) return new Uint8Array(k);
    if (ArrayBuffer.isView(k)) return new Uint8Array(k.buffer, k.byteOffset, k.byteLength);
    throw new NotAllowedError('this region was registered by address: its bytes belong to the code that owns it');
  }

  /** A descriptor of [offset, offset+len) of this region. */
  desc(offset = 0, len?: number): ParsedDescriptor {
    if (typeof offset !== 'number' || (len !== undefined && typeof len !== 'number')) throw new InvalidParamError('desc(offset, len) takes numbers');
    len ??= this.len - offset;
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > this.len) {
      throw new InvalidParamError(`descriptor [${offset}, ${offset}+${len}) is outside the region of ${this.len} bytes`);
    }
    return { addr: this.addr + offset, len, devId: this.devId };
  }

  /**
   * Packed descriptors (no object per descriptor) of [offsets[i], +lens) of
   * this region; `lens` is one length for all or one per offset.
   */
  descList(offsets: ArrayLike<number>, lens: number | ArrayLike<number>): PackedDescriptors {
    const n = arrayLength(offsets);
    const one = typeof lens === 'number';
    if (n === undefined || (!one && arrayLength(lens) === undefined)) {
      throw new InvalidParamError('descList(offsets, lens): offsets is an array of numbers, lens a number or such an array');
    }
    if (!one && lens.length !== n) throw new InvalidParamError(`descList: ${n} offsets but ${lens.length} lengths`);
    const addrs = new Float64Array(n);
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const o = offsets[i]!;
      const l = one ? lens : lens[i]!;
      if (!Number.isInteger(o) || !Number.isInteger(l) || o < 0 || l < 0 || o + l > this.len) {
        throw new InvalidParamError(`descList[${i}]: [${o}, ${o}+${l}) is outside the region of ${this.len} bytes`);
      }
      addrs[i] = this.addr + o;
      out[i] = l;
    }
    return { addrs, lens: out };
  }

  /** Splits the region into `count` descriptors of `blockSize` bytes from `offset`. */
  blocks(blockSize: number, count: number, offset = 0): ParsedDescriptor[] {
    checkBlocks(blockSize, count, offset);
    return Array.from({ length: count }, (_, i) => this.desc(offset + i * blockSize, blockSize));
  }

  /**
   * Whether the JavaScript memory of this region was detached (transferred
   * to a stream, a worker, or by ArrayBuffer.prototype.transfer): its bytes
   * may then be freed or reused while peers can still write them.
   */
  get detached(): boolean {
    const k = this.#keepAlive;
    const ab = k instanceof ArrayBuffer ? k : ArrayBuffer.isView(k) ? k.buffer : undefined;
    return ab instanceof ArrayBuffer && isDetached(ab);
  }

  /**
   * Deregisters the region; refused with ERR_NOT_ALLOWED while a transfer
   * uses it. Also ERR_NOT_ALLOWED, after deregistering, when its memory was
   * found detached: whatever peers wrote meanwhile went to memory that was no
   * longer the caller's.
   */
  deregister(): void {
    if (!this.#registered) return;
    const lost = this.detached;
    this.#owner.deregister(this);
    if (lost) throw detachedError();
  }

  [Symbol.dispose](): void {
    this.deregister();
  }

  /** @internal */ get inUse(): number {
    return this.#inUse;
  }
  /** @internal */ acquire(): void {
    this.#inUse++;
  }
  /** @internal */ releaseUse(): void {
    this.#inUse--;
  }
  /** @internal Forgets the agent-allocated view (the memory is retired); returns its buffer. */
  retireView(): ArrayBufferLike | undefined {
    const ab = this.#view?.buffer;
    this.#view = undefined;
    this.#retired = true;
    return ab;
  }
  /** @internal */ markDeregistered(): void {
    this.#registered = false;
  }
}

/** The length of an array (or typed array) of descriptors' numbers; undefined for anything else or a length no list can have. */
function arrayLength(v: unknown): number | undefined {
  const n = Array.isArray(v) || ArrayBuffer.isView(v) ? (v as ArrayLike<number>).length : undefined;
  return n !== undefined && n <= MAX_LIST ? n : undefined;
}

/** Descriptors one list (of objects or packed) may hold. */
const MAX_LIST = 2 ** 27;

/** A number a byte address, offset or length can be: an integer from 0 to 2^53 - 1. */
export function isWhole(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** blocks(blockSize, count, offset): whole numbers, and a count an array can hold. */
export function checkBlocks(blockSize: unknown, count: unknown, offset: unknown): void {
  if (!isWhole(blockSize) || !isWhole(count) || !isWhole(offset) || count > MAX_LIST) {
    throw new InvalidParamError(`blocks(blockSize, count, offset) takes whole numbers, count at most ${MAX_LIST} (use descList for more)`);
  }
}

/** The largest JavaScript view of memory this Node.js makes (buffer.constants.MAX_LENGTH). */
export const MAX_VIEW_BYTES = constants.MAX_LENGTH;

/** keepAlive of memory the agent allocated (its view, if it can have one, is `view`). */
export const ALLOCATED = Symbol('allocated');

/** Memory that was detached under its registration. */
export function detachedError(): IxferError {
  return new NotAllowedError(
    'the ArrayBuffer of a registered region was detached (transferred) while registered, so its memory may have been freed: ' +
      'register agent.allocate() memory or a SharedArrayBuffer for memory that outlives such use',
  );
}

/** Node 20 has no ArrayBuffer.prototype.detached; viewing a detached buffer throws. */
export function isDetached(ab: ArrayBufferLike): boolean {
  try {
    new Uint8Array(ab, 0, 0);
    return false;
  } catch {
    return true;
  }
}

/**
 * Address and length of JavaScript memory, refusing detached, growable or
 * empty buffers. A plain ArrayBuffer is marked untransferable, so that
 * postMessage and structuredClone copy it instead of detaching it (which would
 * free the memory under the registration); a SharedArrayBuffer cannot be
 * detached at all.
 */
export function describeSource(
  source: MemorySource,
  addressOf: (v: ArrayBufferView) => number,
): { addr: number; len: number; keepAlive?: unknown } {
  const isShared = typeof SharedArrayBuffer === 'function' && source instanceof SharedArrayBuffer;
  if (source instanceof ArrayBuffer || isShared || ArrayBuffer.isView(source)) {
    const ab = ArrayBuffer.isView(source) ? source.buffer : (source as ArrayBufferLike);
    if (ab instanceof ArrayBuffer) {
      if (isDetached(ab)) throw new InvalidParamError('cannot register a detached ArrayBuffer');
      if ((ab as ArrayBuffer & { resizable?: boolean }).resizable) {
        throw new InvalidParamError('a resizable ArrayBuffer can move: register a fixed-length one');
      }
    } else if ((ab as SharedArrayBuffer & { growable?: boolean }).growable) {
      throw new InvalidParamError('a growable SharedArrayBuffer can move: register a fixed-length one');
    }
    const view = ArrayBuffer.isView(source) ? source : new Uint8Array(ab);
    const len = view.byteLength;
    if (len === 0) throw new InvalidParamError('cannot register zero bytes');
    if (ab instanceof ArrayBuffer) markAsUntransferable(ab);
    return { addr: addressOf(view), len, keepAlive: source };
  }
  if (source && typeof source === 'object' && 'addr' in source && 'len' in source) {
    const addr = typeof source.addr === 'bigint' ? Number(source.addr) : source.addr;
    const len = source.len;
    if (!Number.isSafeInteger(addr) || addr <= 0) throw new InvalidParamError('memory address must be a positive integer');
    if (!Number.isSafeInteger(len) || len <= 0) throw new InvalidParamError('memory length must be a positive integer');
    if (addr + len > Number.MAX_SAFE_INTEGER) throw new InvalidParamError('memory range overflows');
    return { addr, len };
  }
  throw new InvalidParamError('registerMemory takes a Buffer, TypedArray, ArrayBuffer or {addr, len}');
}
