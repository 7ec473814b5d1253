/** Peers whose metadata an agent has loaded, and their regions. */
import type { RegionInfo } from './metadata.js';
import { RangeIndex } from './regions.js';

export interface RemoteRegion extends RegionInfo {
  /** False once the peer's newer metadata dropped it or the peer was invalidated. */
  valid: boolean;
}

export class Peer {
  readonly name: string;
  instance: string;
  sequence: bigint;
  /** Handle in the agent's address vector. */
  fiAddr: number | bigint;
  address: Uint8Array;
  /** Remote addresses are virtual addresses (FI_MR_VIRT_ADDR) rather than offsets. */
  virtAddr: boolean;
  readonly regions = new RangeIndex<RemoteRegion>();
  /** Bumped when the peer is reloaded with a new instance or address. */
  generation = 1;
  valid = true;

  constructor(init: {
    name: string;
    instance: string;
    sequence: bigint;
    fiAddr: number | bigint;
    address: Uint8Array;
    virtAddr: boolean;
  }) {
    this.name = init.name;
    this.instance = init.instance;
    this.sequence = init.sequence;
    this.fiAddr = init.fiAddr;
    this.address = init.address;
    this.virtAddr = init.virtAddr;
  }

  /** Replaces (complete metadata) or adds to (partial metadata) the regions. */
  setRegions(regions: RegionInfo[], complete: boolean): void {
    if (complete) {
      for (const r of this.regions.values()) r.valid = false;
      this.regions.clear();
    }
    for (const info of regions) {
      // A region listed again replaces what overlaps it.
      for (let old = this.regions.overlapping(info.addr, info.len); old; old = this.regions.overlapping(info.addr, info.len)) {
        old.valid = false;
        this.regions.remove(old);
      }
      this.regions.insert({ ...info, valid: true });
    }
  }

  invalidate(): void {
    this.valid = false;
    for (const r of this.regions.values()) r.valid = false;
    this.regions.clear();
  }
}
