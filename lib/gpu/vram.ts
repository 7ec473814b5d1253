/**
 * CUDA device memory registered with an agent: allocated here, or allocated
 * elsewhere and looked up. File transfers move it today; the network engine
 * will (FI_HMEM, or staged through host memory).
 */
import { z } from 'zod';

import type { RegionOwner } from '../core/memory.js';
import { MemoryRegion } from '../core/memory.js';
import { MemoryRegistry } from '../core/registry.js';
import { InvalidParamError } from '../errors.js';
import { check, shim, type MrHandle } from '../native/shim.js';
import { parse } from '../schemas.js';

export const VramSourceSchema = z
  .object({
    addr: z.union([z.number().int().positive().max(Number.MAX_SAFE_INTEGER), z.bigint().positive().transform(Number)]),
    len: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  })
  .strict();
export type VramSource = z.input<typeof VramSourceSchema>;

export class VramRegions implements RegionOwner {
  readonly memory = new MemoryRegistry(() => 'registered device memory');
  /** allocate()d here: freed with their region. */
  readonly #owned = new Set<MemoryRegion>();
  /** Called before a region's memory goes (an engine drops what it registered of it, e.g. with cuFile). */
  readonly #releasing: (region: MemoryRegion) => void;

  constructor(releasing: (region: MemoryRegion) => void) {
    this.#releasing = releasing;
  }

  /** Allocates device memory on CUDA device devId; freed when deregistered. */
  allocate(bytes: number, devId: number): MemoryRegion {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocateVram needs a positive byte count');
    if (!Number.isInteger(devId) || devId < 0) throw new InvalidParamError('devId is a CUDA device ordinal');
    const out: (number | bigint)[] = [0];
    check(shim().cudaAlloc(devId, bytes, out), `allocating ${bytes} bytes on CUDA device ${devId}`);
    const region = this.#add(Number(out[0]), bytes, devId);
    this.#owned.add(region);
    return region;
  }

  /** Registers device memory other code allocated; its device is looked up. */
  register(source: VramSource): MemoryRegion {
    const { addr, len } = parse(VramSourceSchema, source, 'VRAM');
    const dev = [-1];
    check(shim().cudaPointerDevice(addr, dev), 'looking up the device of a pointer');
    if (dev[0]! < 0) throw new InvalidParamError(`0x${addr.toString(16)} is host memory: use registerMemory()`);
    return this.#add(addr, len, dev[0]!);
  }

  #add(addr: number, len: number, devId: number): MemoryRegion {
    this.memory.checkFree(addr, len);
    // No fabric registration (yet): no key, no handle.
    const region = new MemoryRegion({ owner: this, addr, len, key: 0n, handle: 0n as MrHandle, kind: 'VRAM', devId });
    this.memory.add(region);
    return region;
  }

  /** RegionOwner: region.deregister() lands here. */
  deregister(region: MemoryRegion): void {
    if (this.memory.remove(region)) this.#release(region);
  }

  #release(region: MemoryRegion): void {
    this.#releasing(region);
    if (this.#owned.delete(region)) check(shim().cudaFree(region.addr), 'freeing device memory');
  }

  /** The agent closed (after its engines): every region ends, allocated memory is freed. */
  close(): void {
    for (const region of this.memory.clear()) this.#release(region);
  }
}
