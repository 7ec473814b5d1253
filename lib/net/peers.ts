/** Peers whose metadata an agent has loaded, and their regions. */
import { isWhole } from '../core/memory.js';
import { RangeIndex } from '../core/ranges.js';
import { InvalidParamError, NotFoundError } from '../errors.js';
import { FI_MR_VIRT_ADDR } from '../native/layout.js';
import { check, shim } from '../native/shim.js';
import { descriptorColumns, type DescriptorColumns, type DescriptorList } from '../schemas.js';
import { addressProblem, addrFormatName } from './address.js';
import type { Endpoint } from './endpoint.js';
import { reachableOverShm } from './host.js';
import { decodeMetadata, REGION_DRAM, REGION_VRAM_GPUDIRECT, REGION_VRAM_STAGED, type RegionInfo } from './metadata.js';
import { resolveSide, type Halves, type Side } from './prepared.js';

export interface RemoteRegion extends RegionInfo {
  /** False once the peer's newer metadata dropped it or the peer was invalidated. */
  valid: boolean;
}

/** A region of a peer, as its metadata describes it. */
export interface RemoteRegionInfo {
  /** The name the peer gave it (registerMemory's or registerVram's `name`), if any. */
  name: string | undefined;
  addr: number;
  len: number;
  kind: 'DRAM' | 'VRAM';
  /** CUDA device of a VRAM region (0 for host memory). */
  devId: number;
  /** VRAM: 'gpudirect' (the provider reaches it) or 'staged' (its agent copies through host memory); undefined for DRAM. */
  path: 'gpudirect' | 'staged' | undefined;
}

function describeRegion(r: RemoteRegion): RemoteRegionInfo {
  const vram = r.kind !== REGION_DRAM;
  const path = vram ? (r.kind === REGION_VRAM_GPUDIRECT ? 'gpudirect' : 'staged') : undefined;
  return { name: r.name, addr: r.addr, len: r.len, kind: vram ? 'VRAM' : 'DRAM', devId: r.devId, path };
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
  /** Reached over the shm rail (on this host): whether shm takes virtual addresses; undefined: network rails only. */
  shm: { virtAddr: boolean } | undefined;
  readonly regions = new RangeIndex<RemoteRegion>();
  /** Bumped when the peer is reloaded with a new instance or address. */
  generation = 1;
  valid = true;
  /** When it was last loaded or used (PeerTable's clock): the least recently used goes first past maxPeers. */
  used = 0;

  constructor(init: {
    name: string;
    instance: string;
    sequence: bigint;
    fiAddr: number | bigint;
    address: Uint8Array;
    virtAddr: boolean;
    shm?: { virtAddr: boolean } | undefined;
  }) {
    this.name = init.name;
    this.instance = init.instance;
    this.sequence = init.sequence;
    this.fiAddr = init.fiAddr;
    this.address = init.address;
    this.virtAddr = init.virtAddr;
    this.shm = init.shm;
  }

  /**
   * Replaces (complete metadata) or adds to (partial metadata) the regions: a
   * region listed again replaces what overlaps it, and one listed exactly as
   * before stays as it is (transfers made on it stay valid). Refused,
   * changing nothing, when the peer would have more than `max` regions.
   */
  setRegions(regions: RegionInfo[], complete: boolean, max = Infinity): void {
    const gone = this.regions.mergeSorted(
      regions,
      (info, same) =>
        same && same.key === info.key && same.devId === info.devId && same.kind === info.kind ? same : { ...info, valid: true },
      { replaceAll: complete, max },
    );
    if (!gone) {
      throw new InvalidParamError(`peer '${this.name}' would have more than ${max} regions (metadata.maxRegionsPerPeer)`);
    }
    for (const r of gone) r.valid = false;
  }

  invalidate(): void {
    this.valid = false;
    for (const r of this.regions.values()) r.valid = false;
    this.regions.clear();
  }
}

export interface PeerTableEvents {
  /** A peer instance is gone (replaced by a new one, or invalidated). */
  instanceGone(instance: string): void;
  /** A peer was dropped to stay within maxPeers. */
  evicted(name: string): void;
}

/** The peer table of one endpoint: loading metadata (versioned), and the address vector entries that go with it. */
export class PeerTable {
  readonly #ep: Endpoint;
  readonly #peers = new Map<string, Peer>();
  readonly #on: PeerTableEvents;
  /** Regions one peer may have (metadata.maxRegionsPerPeer): bounds what one blob can make us hold. */
  readonly #maxRegions: number;
  /** Peers held at once (metadata.maxPeers): peers that died without telling us go, least recently used first. */
  readonly #maxPeers: number;
  #clock = 0;

  constructor(ep: Endpoint, on: PeerTableEvents, limits: { maxRegionsPerPeer?: number; maxPeers?: number } = {}) {
    this.#ep = ep;
    this.#on = on;
    this.#maxRegions = limits.maxRegionsPerPeer ?? Infinity;
    this.#maxPeers = limits.maxPeers ?? Infinity;
  }

  /** Marks a peer used now (a transfer made or posted, a notification sent). */
  touch(peer: Peer): void {
    peer.used = ++this.#clock;
  }

  /** The name of the peer whose handle is fiAddr, if any. */
  nameOf(fiAddr: number): string | undefined {
    for (const p of this.#peers.values()) if (Number(p.fiAddr) === fiAddr) return p.name;
    return undefined;
  }

  /** Names of loaded peers. */
  get names(): string[] {
    return [...this.#peers.keys()];
  }

  /** A loaded peer; ERR_NOT_FOUND otherwise. */
  get(name: string): Peer {
    const p = this.#peers.get(name);
    if (!p) throw new NotFoundError(`unknown peer '${name}': load its metadata first`);
    this.touch(p);
    return p;
  }

  /**
   * Loads a peer's metadata (untrusted: malformed blobs are ERR_INVALID_PARAM)
   * and returns its name. Newer metadata of a known peer replaces the old; a
   * new instance or address starts a new generation. Partial metadata adds
   * regions to a known peer.
   */
  load(blob: Uint8Array): string {
    const ep = this.#ep;
    const handle = ep.handle();
    const md = decodeMetadata(blob, this.#maxRegions);
    // Full names: native tcp and tcp;ofi_rxm do not talk to each other.
    if (md.provider !== ep.info.name) {
      throw new InvalidParamError(`peer '${md.name}' uses provider '${md.provider}', this agent '${ep.info.name}'`);
    }
    if (md.name === ep.name && md.instance !== ep.instance) {
      throw new InvalidParamError(`peer name '${md.name}' is this agent's own name`);
    }
    const existing = this.#peers.get(md.name);
    if (existing && existing.instance === md.instance && md.sequence < existing.sequence) {
      throw new InvalidParamError(`metadata of '${md.name}' is older than what is loaded`);
    }
    const sameEndpoint =
      existing && existing.instance === md.instance && (!md.address || Buffer.from(md.address).equals(existing.address));
    if (sameEndpoint) {
      existing.setRegions(md.regions, md.complete, this.#maxRegions);
      existing.sequence = md.sequence;
      this.touch(existing);
      return md.name;
    }
    if (!md.address) throw new NotFoundError(`metadata of unknown peer '${md.name}' has no connection information`);
    const addresses = [md.address, ...(md.rails ?? [])];
    for (const a of addresses) this.#checkAddress(a, md.addrFormat, md.name);
    const fiAddr: (number | bigint)[] = [0];
    if (addresses.length === 1) {
      check(shim().peerInsert(handle, md.address, md.address.length, fiAddr), `adding peer '${md.name}'`);
    } else {
      // Rails both ends have are used: the shim inserts min(ours, theirs).
      const lens = BigUint64Array.from(addresses, (a) => BigInt(a.length));
      const all = Buffer.concat(addresses);
      check(shim().peerInsertRails(handle, all, lens, addresses.length, fiAddr), `adding peer '${md.name}' (${addresses.length} rails)`);
    }
    // An shm address our shm refuses leaves the peer on the network rails.
    const shm =
      reachableOverShm(ep, md.sameHost) && shim().peerInsertShm(handle, fiAddr[0]!, md.sameHost.address, md.sameHost.address.length) === 0
        ? md.sameHost
        : undefined;
    if (existing) {
      this.#drop(existing);
      if (existing.instance !== md.instance) this.#on.instanceGone(existing.instance);
    }
    const peer = new Peer({
      name: md.name,
      instance: md.instance,
      sequence: md.sequence,
      fiAddr: fiAddr[0]!,
      address: md.address,
      virtAddr: (md.mrModeBits & FI_MR_VIRT_ADDR) !== 0,
      shm: shm ? { virtAddr: (shm.mrModeBits & FI_MR_VIRT_ADDR) !== 0 } : undefined,
    });
    if (existing) peer.generation = existing.generation + 1;
    peer.setRegions(md.regions, true);
    this.#peers.set(md.name, peer);
    this.touch(peer);
    if (this.#peers.size > this.#maxPeers) this.#evictLeastUsed();
    return md.name;
  }

  /** Past maxPeers the least recently used peer goes: one that died without telling us is never used again. */
  #evictLeastUsed(): void {
    let victim: Peer | undefined;
    for (const p of this.#peers.values()) if (!victim || p.used < victim.used) victim = p;
    if (!victim) return;
    this.invalidate(victim.name);
    this.#on.evicted(victim.name);
  }

  /** A peer address must be of our endpoint's format and have the shape that format defines. */
  #checkAddress(addr: Uint8Array, format: number, name: string): void {
    const own = this.#ep.info.addrFormatValue;
    if (format !== own) {
      throw new InvalidParamError(
        `invalid metadata: '${name}' has ${addrFormatName(format)} addresses, this agent ${addrFormatName(own)}`,
      );
    }
    const problem = addressProblem(format, this.#ep.address, addr);
    if (problem) throw new InvalidParamError(`invalid metadata: address of '${name}' is ${problem}, not a ${this.#ep.info.name} address`);
  }

  #drop(peer: Peer): void {
    peer.invalidate();
    const handle = this.#ep.live;
    if (handle && peer.name !== this.#ep.name) check(shim().peerRemove(handle, peer.fiAddr), `removing peer '${peer.name}'`);
  }

  /** Forgets a peer: its transfers not yet posted fail, new ones get ERR_NOT_FOUND. */
  invalidate(name: string): void {
    const handle = this.#ep.handle();
    const p = this.#peers.get(name);
    if (!p) throw new NotFoundError(`unknown peer '${name}'`);
    this.#peers.delete(name);
    this.#drop(p);
    this.#on.instanceGone(p.instance);
    check(shim().notifForget(handle, name), `forgetting notifications of '${name}'`);
  }

  /** Descriptors resolved to the peer's regions holding them; ERR_NOT_FOUND names the first that none holds. */
  resolve(
    peer: Peer,
    cols: DescriptorColumns,
    what: string,
    halves?: Halves,
    find = (addr: number, len: number) => peer.regions.find(addr, len),
    viaShm = peer.shm !== undefined,
  ): Side<RemoteRegion> {
    const spec = {
      what,
      find,
      missing: (i: number, addr: number, len: number) =>
        new NotFoundError(`${what}[${i}] [0x${addr.toString(16)}, +${len}) is not in memory '${peer.name}' registered`),
      word: (r: RemoteRegion) => r.key,
      remote: { virtAddr: viaShm ? peer.shm!.virtAddr : peer.virtAddr, staged: (r: RemoteRegion) => r.kind === REGION_VRAM_STAGED },
    };
    return resolveSide(cols, spec, halves);
  }

  /** A loaded peer's regions, in address order (ERR_NOT_FOUND for an unknown peer). */
  describe(name: string): RemoteRegionInfo[] {
    return this.get(name).regions.values().map(describeRegion);
  }

  /** Whether every descriptor lies in a region of the peer's loaded metadata. */
  holds(name: string, descriptors: DescriptorList): boolean {
    const { addrs, lens } = descriptorColumns(descriptors, 'descriptors');
    for (let i = 0; i < addrs.length; i++) {
      if (!isWhole(addrs[i]) || !isWhole(lens[i])) throw new InvalidParamError(`descriptors[${i}] has an address or length that is not a whole number`);
    }
    const p = this.#peers.get(name);
    if (!p) return false;
    for (let i = 0; i < addrs.length; i++) if (p.regions.find(addrs[i]!, lens[i]!) === undefined) return false;
    return true;
  }

  /** The agent closed (the endpoint is gone with its address vector). */
  close(): void {
    for (const p of this.#peers.values()) p.invalidate();
    this.#peers.clear();
  }
}
