/**
 * Sorted, non-overlapping address ranges with lookup of the range that holds a
 * span: the agent's registrations, and each peer's regions.
 */
export interface Range {
  readonly addr: number;
  readonly len: number;
}

export class RangeIndex<R extends Range> {
  #items: R[] = [];

  get size(): number {
    return this.#items.length;
  }

  values(): readonly R[] {
    return this.#items;
  }

  /** Index of the last range starting at or below addr, or -1. */
  #floor(addr: number): number {
    let lo = 0;
    let hi = this.#items.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#items[mid]!.addr <= addr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  /** The range that contains [addr, addr+len), or undefined. */
  find(addr: number, len: number): R | undefined {
    const i = this.#floor(addr);
    if (i < 0) return undefined;
    const r = this.#items[i]!;
    return addr + len <= r.addr + r.len ? r : undefined;
  }

  /** A range that overlaps [addr, addr+len), or undefined. */
  overlapping(addr: number, len: number): R | undefined {
    const i = this.#floor(addr + len - 1);
    if (i < 0) return undefined;
    const r = this.#items[i]!;
    return r.addr + r.len > addr ? r : undefined;
  }

  insert(r: R): void {
    const i = this.#floor(r.addr);
    this.#items.splice(i + 1, 0, r);
  }

  remove(r: R): boolean {
    const i = this.#floor(r.addr); // ranges do not overlap: only one can start at r.addr
    if (i < 0 || this.#items[i] !== r) return false;
    this.#items.splice(i, 1);
    return true;
  }

  /**
   * Merges ranges sorted by address and not overlapping each other (as decoded
   * metadata is) in one pass, O(n + m): each replaces the ranges it overlaps,
   * and with `replaceAll` the ranges it does not overlap go too. `make` builds
   * the range to keep from an incoming one and the one range it exactly
   * overlaps, if any (which it may return to keep it). Returns the ranges
   * that went, or undefined, changing nothing, when more than `max` would remain.
   */
  mergeSorted<I extends Range>(
    incoming: readonly I[],
    make: (info: I, same: R | undefined) => R,
    options: { replaceAll: boolean; max: number },
  ): R[] | undefined {
    const old = this.#items;
    const out: R[] = [];
    const gone: R[] = [];
    const skip = (r: R) => (options.replaceAll ? gone.push(r) : out.push(r));
    let i = 0;
    for (const info of incoming) {
      while (i < old.length && old[i]!.addr + old[i]!.len <= info.addr) skip(old[i++]!);
      const first = i;
      while (i < old.length && old[i]!.addr < info.addr + info.len) i++;
      const same = i - first === 1 && old[first]!.addr === info.addr && old[first]!.len === info.len ? old[first] : undefined;
      const r = make(info, same);
      for (let j = first; j < i; j++) if (old[j] !== r) gone.push(old[j]!);
      out.push(r);
    }
    while (i < old.length) skip(old[i++]!);
    if (out.length > options.max) return undefined;
    this.#items = out;
    return gone;
  }

  clear(): void {
    this.#items = [];
  }
}
