/**
 * The metadata blob an agent publishes so that peers can reach its memory:
 * name, instance, fabric address and registered regions. A remote blob is
 * untrusted input: every length, count and range is checked before use.
 *
 * Layout (little-endian), version 2:
 *   "IXMD" u16 version u16 flags
 *   u8[16] instance id, u64 sequence
 *   u16 nameLen, name (UTF-8)
 *   u16 providerLen, provider (libfabric's full name: "tcp;ofi_rxm", "tcp", "shm")
 *   u32 mrModeBits
 *   u32 addrFormat                  (fi_info's addr_format: how addr is read)
 *   u16 addrLen, addr               (addrLen 0 unless FLAG_CONNECTION)
 *   with FLAG_RAILS (and FLAG_CONNECTION): u8 railCount (2..32), then
 *     railCount - 1 x { u16 len, addr }: the addresses of rails 1, 2, ...
 *     (rail 0's is addr). A one-rail agent never sets the flag, so its blob
 *     is what version 2 always was; an older reader refuses the flag.
 *   with FLAG_SAME_HOST (and FLAG_CONNECTION): the agent's shm rail, for peers
 *     on its host: u16 hostLen, host (UTF-8, host.ts), u32 pid,
 *     u32 shm mrModeBits, u16 len, shm address (NUL-terminated). A blob
 *     without it has no shm rail.
 *   u32 regionCount, regionCount x { u64 addr, u64 len, u64 key, u16 devId, u16 kind, u32 reserved }
 *     (kind: REGION_DRAM, REGION_VRAM_GPUDIRECT, REGION_VRAM_STAGED)
 *   with FLAG_NAMES: regionCount x { u8 nameLen, name (UTF-8; 0: unnamed) }
 */
import { InvalidParamError, type IxferError } from '../errors.js';

const MAGIC = 0x444d5849; // "IXMD" read as little-endian u32
export const METADATA_VERSION = 2;
export const FLAG_CONNECTION = 1;
export const FLAG_COMPLETE = 2; // lists every region of the agent
export const FLAG_NAMES = 4; // region names follow the regions
export const FLAG_RAILS = 8; // addresses of rails after the first follow the address
export const FLAG_SAME_HOST = 16; // the shm rail (host identity, pid, address) follows the rails
const MAX_HOST = 255;
const MAX_RAILS = 32;
const REGION_BYTES = 32;
/** Region kinds: host memory; VRAM the provider reaches (FI_HMEM); VRAM its agent stages through host memory. */
export const REGION_DRAM = 0;
export const REGION_VRAM_GPUDIRECT = 1;
export const REGION_VRAM_STAGED = 2;
const MAX_BLOB = 64 * 1024 * 1024;
const MAX_ADDR = 4096;

export interface RegionInfo {
  addr: number;
  len: number;
  key: bigint;
  devId: number;
  kind: number; // REGION_*
  name?: string;
}

export interface Metadata {
  name: string;
  instance: string; // hex
  sequence: bigint;
  provider: string;
  mrModeBits: number;
  /** enum fi_addr_format of the endpoint. */
  addrFormat: number;
  address?: Uint8Array;
  /** Addresses of rails 1, 2, ... (rail 0's is `address`); absent for one rail. */
  rails?: Uint8Array[];
  /** The agent's shm rail, reachable from another process of the same host. */
  sameHost?: SameHostInfo;
  complete: boolean;
  regions: RegionInfo[];
}

export interface SameHostInfo {
  /** What makes its shm reachable (host.ts): equal on both sides, or no shm. */
  host: string;
  pid: number;
  /** mr_mode of the shm rail (FI_MR_VIRT_ADDR: descriptors carry virtual addresses). */
  mrModeBits: number;
  address: Uint8Array;
}

export function encodeMetadata(md: Metadata): Uint8Array {
  const name = Buffer.from(md.name);
  const provider = Buffer.from(md.provider);
  const addr = md.address ?? new Uint8Array(0);
  const rails = md.address && md.rails?.length ? md.rails : undefined;
  const railBytes = rails ? 1 + rails.reduce((n, a) => n + 2 + a.length, 0) : 0;
  const same = md.address ? md.sameHost : undefined;
  const host = same ? Buffer.from(same.host) : undefined;
  const sameBytes = same && host ? 2 + host.length + 4 + 4 + 2 + same.address.length : 0;
  const names = md.regions.some((r) => r.name) ? md.regions.map((r) => Buffer.from(r.name ?? '')) : undefined;
  const namesBytes = names ? names.reduce((n, b) => n + 1 + b.length, 0) : 0;
  const size =
    4 + 4 + 16 + 8 + 2 + name.length + 2 + provider.length + 4 + 4 + 2 + addr.length + railBytes + sameBytes + 4 + md.regions.length * REGION_BYTES + namesBytes;
  const out = Buffer.alloc(size);
  let o = 0;
  o = out.writeUInt32LE(MAGIC, o);
  o = out.writeUInt16LE(METADATA_VERSION, o);
  o = out.writeUInt16LE(
    (md.address ? FLAG_CONNECTION : 0) | (md.complete ? FLAG_COMPLETE : 0) | (names ? FLAG_NAMES : 0) | (rails ? FLAG_RAILS : 0) | (same ? FLAG_SAME_HOST : 0),
    o,
  );
  o += Buffer.from(md.instance, 'hex').copy(out, o);
  o = out.writeBigUInt64LE(md.sequence, o);
  o = out.writeUInt16LE(name.length, o);
  o += name.copy(out, o);
  o = out.writeUInt16LE(provider.length, o);
  o += provider.copy(out, o);
  o = out.writeUInt32LE(md.mrModeBits >>> 0, o);
  o = out.writeUInt32LE(md.addrFormat >>> 0, o);
  o = out.writeUInt16LE(addr.length, o);
  out.set(addr, o);
  o += addr.length;
  if (rails) {
    o = out.writeUInt8(rails.length + 1, o);
    for (const a of rails) {
      o = out.writeUInt16LE(a.length, o);
      out.set(a, o);
      o += a.length;
    }
  }
  if (same && host) {
    o = out.writeUInt16LE(host.length, o);
    o += host.copy(out, o);
    o = out.writeUInt32LE(same.pid >>> 0, o);
    o = out.writeUInt32LE(same.mrModeBits >>> 0, o);
    o = out.writeUInt16LE(same.address.length, o);
    out.set(same.address, o);
    o += same.address.length;
  }
  o = out.writeUInt32LE(md.regions.length, o);
  for (const r of md.regions) {
    o = out.writeBigUInt64LE(BigInt(r.addr), o);
    o = out.writeBigUInt64LE(BigInt(r.len), o);
    o = out.writeBigUInt64LE(r.key, o);
    o = out.writeUInt16LE(r.devId, o);
    o = out.writeUInt16LE(r.kind, o);
    o = out.writeUInt32LE(0, o);
  }
  for (const n of names ?? []) {
    o = out.writeUInt8(n.length, o);
    o += n.copy(out, o);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

class Reader {
  #o = 0;
  readonly #b: Buffer;
  constructor(b: Buffer) {
    this.#b = b;
  }
  need(n: number, what: string): void {
    if (this.#o + n > this.#b.length) throw bad(`truncated at ${what}`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.#b[this.#o++]!;
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.#b.readUInt16LE(this.#o);
    this.#o += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.#b.readUInt32LE(this.#o);
    this.#o += 4;
    return v;
  }
  /** A u64 as a number; undefined when it is 2^53 or more. */
  u53(what: string): number | undefined {
    this.need(8, what);
    const lo = this.#b.readUInt32LE(this.#o);
    const hi = this.#b.readUInt32LE(this.#o + 4);
    this.#o += 8;
    return hi < 0x200000 ? hi * 0x100000000 + lo : undefined;
  }
  u64(what: string): bigint {
    this.need(8, what);
    const v = this.#b.readBigUInt64LE(this.#o);
    this.#o += 8;
    return v;
  }
  bytes(n: number, what: string): Buffer {
    this.need(n, what);
    const v = this.#b.subarray(this.#o, this.#o + n);
    this.#o += n;
    return v;
  }
  get remaining(): number {
    return this.#b.length - this.#o;
  }
}

function bad(why: string): IxferError {
  return new InvalidParamError(`invalid metadata: ${why}`);
}

function utf8(b: Buffer, what: string): string {
  const s = new TextDecoder('utf-8', { fatal: false }).decode(b);
  if (s.includes('\ufffd') || /[\u0000-\u001f]/.test(s)) throw bad(`${what} is not clean UTF-8 text`);
  return s;
}

/** Decodes a blob; more than `maxRegions` regions is refused before any is read. */
export function decodeMetadata(blob: Uint8Array, maxRegions = Infinity): Metadata {
  if (!(blob instanceof Uint8Array)) throw bad('expected a Uint8Array');
  if (blob.length > MAX_BLOB) throw bad(`blob of ${blob.length} bytes exceeds ${MAX_BLOB}`);
  const r = new Reader(Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength));
  if (r.u32('magic') !== MAGIC) throw bad('not ixfer metadata (wrong magic)');
  const version = r.u16('version');
  if (version !== METADATA_VERSION) throw bad(`version ${version}, this ixfer reads version ${METADATA_VERSION}`);
  const flags = r.u16('flags');
  if (flags & ~(FLAG_CONNECTION | FLAG_COMPLETE | FLAG_NAMES | FLAG_RAILS | FLAG_SAME_HOST)) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const instance = r.bytes(16, 'instance').toString('hex');
  const sequence = r.u64('sequence');
  const nameLen = r.u16('name length');
  if (nameLen === 0 || nameLen > 255) throw bad(`name length ${nameLen}`);
  const name = utf8(r.bytes(nameLen, 'name'), 'name');
  const provLen = r.u16('provider length');
  if (provLen === 0 || provLen > 64) throw bad(`provider name length ${provLen}`);
  const provider = utf8(r.bytes(provLen, 'provider'), 'provider');
  const mrModeBits = r.u32('mr_mode');
  const addrFormat = r.u32('address format');
  const addrLen = r.u16('address length');
  if (addrLen > MAX_ADDR) throw bad(`address of ${addrLen} bytes`);
  if (Boolean(flags & FLAG_CONNECTION) !== addrLen > 0) throw bad('connection flag and address length disagree');
  const address = addrLen ? new Uint8Array(r.bytes(addrLen, 'address')) : undefined;
  let rails: Uint8Array[] | undefined;
  if (flags & FLAG_RAILS) {
    if (!address) throw bad('rails without a connection address');
    const n = r.u8('rail count');
    if (n < 2 || n > MAX_RAILS) throw bad(`${n} rails (2 to ${MAX_RAILS} with the rails flag)`);
    rails = [];
    for (let i = 1; i < n; i++) {
      const len = r.u16(`rail ${i} address length`);
      if (len === 0 || len > MAX_ADDR) throw bad(`address of rail ${i} has ${len} bytes`);
      rails.push(new Uint8Array(r.bytes(len, `rail ${i} address`)));
    }
  }
  let sameHost: SameHostInfo | undefined;
  if (flags & FLAG_SAME_HOST) {
    if (!address) throw bad('an shm rail without a connection address');
    const hostLen = r.u16('host length');
    if (hostLen === 0 || hostLen > MAX_HOST) throw bad(`host identity of ${hostLen} bytes`);
    const host = utf8(r.bytes(hostLen, 'host'), 'host identity');
    const pid = r.u32('pid');
    const mrModeBits = r.u32('shm mr_mode');
    const len = r.u16('shm address length');
    if (len === 0 || len > MAX_ADDR) throw bad(`shm address of ${len} bytes`);
    const shmAddress = new Uint8Array(r.bytes(len, 'shm address'));
    if (shmAddress.indexOf(0) !== len - 1) throw bad('the shm address is not NUL-terminated text');
    sameHost = { host, pid, mrModeBits, address: shmAddress };
  }
  const count = r.u32('region count');
  if (count > maxRegions) throw bad(`${count} regions, more than the ${maxRegions} allowed per peer (metadata.maxRegionsPerPeer)`);
  const named = Boolean(flags & FLAG_NAMES);
  // Names take at least a byte per region.
  if (named ? count * (REGION_BYTES + 1) > r.remaining : count * REGION_BYTES !== r.remaining) {
    throw bad(`${count} regions need ${count * REGION_BYTES} bytes, ${r.remaining} remain`);
  }
  const regions: RegionInfo[] = [];
  let end = 0;
  for (let i = 0; i < count; i++) {
    const addr = r.u53('region address');
    const len = r.u53('region length');
    const key = r.u64('region key');
    const devId = r.u16('device id');
    const kind = r.u16('region kind');
    r.u32('reserved');
    if (len === 0) throw bad(`region ${i} is empty`);
    if (addr === undefined || len === undefined || addr + len > Number.MAX_SAFE_INTEGER) throw bad(`region ${i} ends beyond 2^53`);
    if (kind > REGION_VRAM_STAGED) throw bad(`region ${i} has unknown kind ${kind}`);
    if (addr < end) throw bad(`region ${i} is out of order or overlaps the previous one`);
    end = addr + len;
    regions.push({ addr, len, key, devId, kind });
  }
  if (named) {
    const seen = new Set<string>();
    for (const [i, region] of regions.entries()) {
      const n = r.u8('region name length');
      if (n === 0) continue;
      const name = utf8(r.bytes(n, 'region name'), `region ${i}'s name`);
      if (seen.has(name)) throw bad(`region name '${name}' appears twice`);
      seen.add(name);
      region.name = name;
    }
    if (r.remaining !== 0) throw bad(`${r.remaining} bytes after the region names`);
  }
  return {
    name,
    instance,
    sequence,
    provider,
    mrModeBits,
    addrFormat,
    ...(address ? { address } : {}),
    ...(rails ? { rails } : {}),
    ...(sameHost ? { sameHost } : {}),
    complete: Boolean(flags & FLAG_COMPLETE),
    regions,
  };
}
