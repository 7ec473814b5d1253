/**
 * Memory regions of one kind registered with an agent, by address: the
 * bookkeeping that host memory (net/) and VRAM (gpu/) registrations share.
 * The owner does the native work around add() and remove().
 */
import { InvalidParamError, NotAllowedError, NotFoundError } from '../errors.js';
import type { MemoryRegion } from './memory.js';
import { RangeIndex } from './ranges.js';

export class MemoryRegistry {
  readonly #index = new RangeIndex<MemoryRegion>();
  /** Words for a clash: "the registered region [...]", "registered device memory". */
  readonly #describe: (clash: MemoryRegion) => string;

  constructor(describe: (clash: MemoryRegion) => string) {
    this.#describe = describe;
  }

  /** Throws ERR_INVALID_PARAM when [addr, +len) overlaps a registered region. */
  checkFree(addr: number, len: number): void {
    const clash = this.#index.overlapping(addr, len);
    if (clash) throw new InvalidParamError(`[0x${addr.toString(16)}, +${len}) overlaps ${this.#describe(clash)}`);
  }

  add(region: MemoryRegion): void {
    this.#index.insert(region);
  }

  /**
   * Takes a region out, refused while transfers use it; false when it was
   * already deregistered (the owner then has nothing to release).
   */
  remove(region: MemoryRegion): boolean {
    if (!region.registered) return false;
    if (region.inUse > 0) {
      throw new NotAllowedError(`region is used by ${region.inUse} transfer(s) in flight; wait for them first`);
    }
    if (!this.#index.remove(region)) throw new NotFoundError('region is not registered with this agent');
    region.markDeregistered();
    return true;
  }

  /** The region holding [addr, +len), or undefined. */
  find(addr: number, len: number): MemoryRegion | undefined {
    return this.#index.find(addr, len);
  }

  /** In address order. */
  values(): readonly MemoryRegion[] {
    return this.#index.values();
  }

  /** The agent closed: every region ends, returned for the owner to release. */
  clear(): MemoryRegion[] {
    const all = [...this.#index.values()];
    for (const r of all) r.markDeregistered();
    this.#index.clear();
    return all;
  }
}
