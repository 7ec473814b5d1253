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
    const i = this.#items.indexOf(r);
    if (i < 0) return false;
    this.#items.splice(i, 1);
    return true;
  }

  clear(): void {
    this.#items = [];
  }
}
