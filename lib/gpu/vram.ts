/**
 * CUDA device memory registered with an agent: allocated here, or allocated
 * elsewhere and looked up. Each region is registered with the agent's
 * endpoint (ixfer_vram_register), which says how it crosses the network:
 * through the provider (FI_HMEM, 'gpudirect') or staged through the agent's
 * host bounce buffers ('staged'). File transfers move it too.
 */
import { z } from 'zod';

import type { RegionOwner } from '../core/memory.js';
import { MemoryRegion } from '../core/memory.js';
import { MemoryRegistry } from '../core/registry.js';
import { InvalidParamError } from '../errors.js';
import { PATH_GPUDIRECT, VRAM_REG_STAGED } from '../native/layout.js';
import { check, shim, toBigInt, type AgentHandle, type MrHandle } from '../native/shim.js';
import { parse } from '../schemas.js';

export const VramSourceSchema = z
  .object({
    addr: z.union([z.number().int().positive().max(Number.MAX_SAFE_INTEGER), z.bigint().positive().transform(Number)]),
    len: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  })
  .strict();
export type VramSource = z.input<typeof VramSourceSchema>;

/** The agent's endpoint, as VRAM regions use it (gpu/ does not import net/: the front door passes it in). */
export interface VramEndpoint {
  /** The handle; throws once the agent is closed. */
  handle(): AgentHandle;
  /** The handle, or undefined once destroyed (which closed every registration). */
  readonly live: AgentHandle | undefined;
}

/** Where device memory is registered alongside host memory: the network engine, which sends both in metadata. */
export interface VramHost {
  /** Registered device memory, by address. */
  readonly vram: MemoryRegistry;
  /** Throws when `name` is taken (host and device regions share one namespace). */
  checkName(name: string | undefined): void;
  /** A region came or went: our metadata changes with it. */
  registrationsChanged(): void;
}

export class VramRegions implements RegionOwner {
  readonly memory: MemoryRegistry;
  /** allocate()d here: freed with their region. */
  readonly #owned = new Set<MemoryRegion>();
  readonly #endpoint: VramEndpoint;
  readonly #host: VramHost;
  /** Called before a region's memory goes (an engine drops what it registered of it, e.g. with cuFile). */
  readonly #releasing: (region: MemoryRegion) => void;

  constructor(endpoint: VramEndpoint, host: VramHost, releasing: (region: MemoryRegion) => void) {
    this.#endpoint = endpoint;
    this.#host = host;
    this.#releasing = releasing;
    this.memory = host.vram;
  }

  /** Allocates device memory on CUDA device devId; freed when deregistered. */
  allocate(bytes: number, o: { devId: number; name?: string | undefined; staged: boolean }): MemoryRegion {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocateVram needs a positive byte count');
    this.#endpoint.handle();
    this.#host.checkName(o.name);
    const out: (number | bigint)[] = [0];
    check(shim().cudaAlloc(o.devId, bytes, out), `allocating ${bytes} bytes on CUDA device ${o.devId}`);
    const addr = Number(out[0]);
    try {
      const region = this.#add(addr, bytes, o.devId, o.name, o.staged);
      this.#owned.add(region);
      return region;
    } catch (err) {
      shim().cudaFree(addr);
      throw err;
    }
  }

  /** Registers device memory other code allocated; its device is looked up. */
  register(source: VramSource, o: { name?: string | undefined; staged: boolean }): MemoryRegion {
    const { addr, len } = parse(VramSourceSchema, source, 'VRAM');
    this.#endpoint.handle();
    this.#host.checkName(o.name);
    const dev = [-1];
    check(shim().cudaPointerDevice(addr, dev), 'looking up the device of a pointer');
    if (dev[0]! < 0) throw new InvalidParamError(`0x${addr.toString(16)} is host memory: use registerMemory()`);
    return this.#add(addr, len, dev[0]!, o.name, o.staged);
  }

  #add(addr: number, len: number, devId: number, name: string | undefined, staged: boolean): MemoryRegion {
    this.memory.checkFree(addr, len);
    const key: (number | bigint)[] = [0];
    const path = [0];
    const out: (bigint | null)[] = [null];
    check(
      shim().vramRegister(this.#endpoint.handle(), addr, len, devId, staged ? VRAM_REG_STAGED : 0, key, path, out),
      `registering ${len} bytes of CUDA device ${devId}`,
    );
    const region = new MemoryRegion({
      owner: this,
      addr,
      len,
      key: toBigInt(key[0]!),
      handle: out[0] as MrHandle,
      kind: 'VRAM',
      devId,
      path: path[0] === PATH_GPUDIRECT ? 'gpudirect' : 'staged',
      name,
    });
    this.memory.add(region);
    this.#host.registrationsChanged();
    return region;
  }

  /** RegionOwner: region.deregister() lands here (ERR_NOT_ALLOWED while a transfer uses it). */
  deregister(region: MemoryRegion): void {
    if (!this.memory.remove(region)) return;
    this.#host.registrationsChanged();
    try {
      // Waits for a device copy of the region that the progress thread has under way.
      if (this.#endpoint.live) check(shim().mrDeregister(region.handle), 'deregistering device memory');
    } finally {
      this.#release(region);
    }
  }

  #release(region: MemoryRegion): void {
    this.#releasing(region);
    if (this.#owned.delete(region)) check(shim().cudaFree(region.addr), 'freeing device memory');
  }

  /** The agent closed (after its endpoint, which closed every registration): allocated memory is freed. */
  close(): void {
    for (const region of this.memory.clear()) this.#release(region);
  }
}
