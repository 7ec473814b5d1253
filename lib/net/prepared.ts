/**
 * Network postings: descriptor lists resolved to registered regions (here,
 * and at the peer) and packed for the shim, straight from a request or from
 * prepared lists (like NIXL's prepXferDlist and makeXferReq).
 *
 * Lists of 100,000 descriptors are common (vLLM's KV blocks), so nothing here
 * makes an object per descriptor: a side is resolved once into typed arrays
 * (its half of each ixfer_iov_pair, as u32 words). A prepared list keeps its
 * halves and makeTransfer gathers them into a pair array; createTransfer
 * resolves both sides straight into the pair array (a transient copy of
 * megabytes costs more than the rest on a machine short of memory bandwidth).
 */
import type { Posting, TransferPath } from '../core/engine.js';
import type { MemoryRegion } from '../core/memory.js';
import { InvalidParamError, MismatchError } from '../errors.js';
import { PAIR_LEN_WORD, PAIR_REMOTE_STAGED, PAIR_REMOTE_WORD, PAIR_WORDS } from '../native/layout.js';
import type { DescriptorColumns, Op, ParsedDescriptor } from '../schemas.js';
import { parseNotificationBody } from './inbox.js';
import { REGION_DRAM, REGION_VRAM_STAGED } from './metadata.js';
import type { Peer, RemoteRegion } from './peers.js';

/** u32 words kept per descriptor of a side: its half of the pair (local: addr, len, mr; remote: addr, key, flags). */
const HALF = PAIR_REMOTE_WORD;
const U32 = 0x1_0000_0000;

/** Where a side's halves of the pairs go: `stride` words apart, from word `at`. */
export interface Halves {
  words: Uint32Array;
  stride: number;
  at: number;
}

/** Both sides of a one-off transfer of n pairs, laid straight into one pair array. */
export function pairHalves(n: number): { local: Halves; remote: Halves } {
  const words = new Uint32Array(n * PAIR_WORDS);
  return { local: { words, stride: PAIR_WORDS, at: 0 }, remote: { words, stride: PAIR_WORDS, at: PAIR_REMOTE_WORD } };
}

/** One side of a transfer, resolved: per descriptor its region and its half of the pair. */
export class Side<R> {
  /** @internal */
  constructor(
    readonly cols: DescriptorColumns,
    /** Its halves of the pairs: HALF words per descriptor (prepared lists), or in a pair array. */
    readonly words: Uint32Array,
    /** Index into regions, per descriptor. */
    readonly region: Uint32Array,
    /** Each region once, in order of first use. */
    readonly regions: readonly R[],
  ) {}
}

interface SideSpec<R extends { addr: number; len: number }> {
  /** Names entries in messages: 'transfer.local', 'remote descriptors'. */
  what: string;
  find(addr: number, len: number): R | undefined;
  missing(i: number, addr: number, len: number): Error;
  /** The region's 64-bit word in the pair: the local mr handle or the remote key. */
  word(r: R): bigint;
  /** Remote sides: whether the provider takes virtual addresses, and the pair flags of a region. */
  remote?: { virtAddr: boolean; staged(r: R): boolean };
}

/**
 * Resolves every descriptor to the region holding it; ERR_NOT_FOUND names the
 * first that none holds. Descriptors come in runs of one region, so the last
 * region found is tried first and the index search runs once per run.
 */
export function resolveSide<R extends { addr: number; len: number }>(
  cols: DescriptorColumns,
  spec: SideSpec<R>,
  halves: Halves = { words: new Uint32Array(cols.addrs.length * HALF), stride: HALF, at: 0 },
): Side<R> {
  const { addrs, lens } = cols;
  const n = addrs.length;
  const { words, stride, at } = halves;
  const region = new Uint32Array(n);
  const regions: R[] = [];
  const index = new Map<R, number>();
  const remote = spec.remote;
  let start = 0;
  let end = -1; // the last region found, [start, end): none yet
  let idx = 0;
  let lo = 0;
  let hi = 0;
  let base = 0;
  let flags = 0;
  for (let i = 0; i < n; i++) {
    const a = addrs[i]!;
    const l = lens[i]!;
    // Packed lists come unchecked: a NaN, a fraction or an end past 2^53 fails here.
    if (!(a >= 0 && l >= 0 && Math.floor(a) === a && Math.floor(l) === l && a + l <= Number.MAX_SAFE_INTEGER)) {
      throw new InvalidParamError(`invalid ${spec.what}[${i}]: [${a}, +${l}) is not a range of addresses below 2^53`);
    }
    if (a < start || a + l > end) {
      const r = spec.find(a, l);
      if (!r) throw spec.missing(i, a, l);
      start = r.addr;
      end = r.addr + r.len;
      let k = index.get(r);
      if (k === undefined) {
        k = regions.length;
        index.set(r, k);
        regions.push(r);
      }
      idx = k;
      const v = BigInt.asUintN(64, spec.word(r));
      lo = Number(v & 0xffffffffn);
      hi = Number(v >> 32n);
      // Providers without FI_MR_VIRT_ADDR take offsets into the remote region;
      // the peer's progress thread finds a staged region by its virtual address.
      const staged = remote !== undefined && remote.staged(r);
      flags = staged ? PAIR_REMOTE_STAGED : 0;
      base = remote && !remote.virtAddr && !staged ? r.addr : 0;
    }
    const w = i * stride + at;
    if (remote) {
      const x = a - base;
      words[w] = x >>> 0;
      words[w + 1] = Math.floor(x / U32);
      words[w + 2] = lo;
      words[w + 3] = hi;
      words[w + 4] = flags;
    } else {
      words[w] = a >>> 0;
      words[w + 1] = Math.floor(a / U32);
      words[w + 2] = l >>> 0;
      words[w + 3] = Math.floor(l / U32);
      words[w + 4] = lo;
      words[w + 5] = hi;
    }
    region[i] = idx;
  }
  return new Side(cols, words, region, regions);
}

/** The descriptors of a side as objects (for PreparedLocal.descs and friends). */
function descsOf<R extends { devId: number }>(s: Side<R>): ParsedDescriptor[] {
  return Array.from(s.cols.addrs, (addr, i) => ({ addr, len: s.cols.lens[i]!, devId: s.regions[s.region[i]!]!.devId }));
}

/** Local descriptors validated once, for transfers made by index. */
export class PreparedLocal {
  /** @internal */
  constructor(
    /** @internal */ readonly side: Side<MemoryRegion>,
    /** @internal The engine that prepared it: another agent's lists are refused. */ readonly owner: object,
  ) {}
  get length(): number {
    return this.side.region.length;
  }
  /** The descriptors, as objects (made on each call). */
  get descs(): ParsedDescriptor[] {
    return descsOf(this.side);
  }
}

/** Remote descriptors of one peer validated once, for transfers made by index. */
export class PreparedRemote {
  /** @internal */
  constructor(
    readonly peer: string,
    /** @internal */ readonly side: Side<RemoteRegion>,
    /** @internal */ readonly peerRef: Peer,
    /** @internal */ readonly generation: number,
    /** @internal The engine that prepared it: another agent's peer handles mean nothing here. */ readonly owner: object,
  ) {}
  /** @internal The side in the network provider's address form, for transfers with device memory to a peer on this host (made once). */
  networkSide: Side<RemoteRegion> | undefined;
  get length(): number {
    return this.side.region.length;
  }
  /** The descriptors, as objects (made on each call). */
  get descs(): ParsedDescriptor[] {
    return descsOf(this.side);
  }
}

export interface NetPosting extends Posting {
  readonly peer: Peer;
  /** The peer's generation when the transfer was made: a reloaded peer fails it. */
  readonly generation: number;
  readonly remote: readonly RemoteRegion[];
  /** ixfer_iov_pair[], runs contiguous on both sides already merged (so fewer than count, often). */
  readonly pairs: Uint8Array;
  readonly pairCount: number;
  /** Delivered once the data is in place, unless post() is given another. */
  readonly notification: Uint8Array | undefined;
  /** Network rails although the peer is reached over shm: device memory is in it (shm carries host memory). */
  readonly network: boolean;
}

/**
 * Whether a transfer between these sides to a peer on this host takes the
 * network rails (device memory on either side): its remote side must then be
 * resolved in the network provider's address form (PeerTable.resolve).
 */
export function overNetwork(peer: Peer, L: Side<MemoryRegion>, R: Side<RemoteRegion>): boolean {
  return peer.shm !== undefined && pathOf(L.regions, R.regions) !== 'host';
}

/**
 * Pairs local and remote descriptors one to one and packs them; indices
 * (makeTransfer) choose entries of prepared lists, else the lists are paired
 * in order (the caller checked that they are as long and resolved them into
 * one pair array with pairHalves). A run of pairs
 * contiguous on both sides in one region each becomes one pair here, so that
 * a repost hands the shim a few pairs rather than megabytes.
 */
export function buildPosting(
  op: Op,
  peer: Peer,
  generation: number,
  L: Side<MemoryRegion>,
  R: Side<RemoteRegion>,
  notification: unknown,
  indices?: { local: ArrayLike<number>; remote: ArrayLike<number> },
): NetPosting {
  const n = indices ? indices.local.length : L.region.length;
  const lused = new Uint8Array(L.regions.length);
  const rused = new Uint8Array(R.regions.length);
  // Without indices the sides were resolved into one pair array (pairHalves).
  const out = indices ? new Uint32Array(n * PAIR_WORDS) : L.words;
  const [m, bytes] = gather(out, L, R, indices?.local, indices?.remote, n, lused, rused);
  const memory = L.regions.filter((_, x) => lused[x]);
  const remote = R.regions.filter((_, x) => rused[x]);
  // Merged lists keep only what they use.
  const pairs = m * 2 < n ? out.slice(0, m * PAIR_WORDS) : out.subarray(0, m * PAIR_WORDS);
  return {
    op,
    target: peer.name,
    count: n,
    bytes,
    memory,
    peer,
    generation,
    remote,
    path: pathOf(memory, remote),
    pairs: new Uint8Array(pairs.buffer, pairs.byteOffset, pairs.byteLength),
    pairCount: m,
    network: overNetwork(peer, L, R),
    notification: notification === undefined ? undefined : parseNotificationBody(notification),
  };
}

/**
 * The pairs of buildPosting into out, with the regions they use marked;
 * returns how many pairs and bytes. Without indices, out already holds the
 * pairs in order and merging compacts it in place. Only the loop: V8
 * compiles a hot loop while it runs, and code after it that has never run
 * would throw the compiled code away on every call of 100,000.
 */
function gather(
  out: Uint32Array,
  L: Side<MemoryRegion>,
  R: Side<RemoteRegion>,
  lidx: ArrayLike<number> | undefined,
  ridx: ArrayLike<number> | undefined,
  n: number,
  lused: Uint8Array,
  rused: Uint8Array,
): [number, number] {
  const nl = L.region.length;
  const nr = R.region.length;
  const lw = L.words;
  const rw = R.words;
  const lAddrs = L.cols.addrs;
  const lLens = L.cols.lens;
  const rAddrs = R.cols.addrs;
  const rLens = R.cols.lens;
  let m = 0; // pairs written
  let bytes = 0;
  // The pair being extended: its regions, where both sides end, its length.
  let lreg = -1;
  let rreg = -1;
  let lend = -1;
  let rend = -1;
  let runLen = 0;
  for (let k = 0; k < n; k++) {
    const i = lidx ? lidx[k]! : k;
    const j = ridx ? ridx[k]! : k;
    if (i >= nl) throw new InvalidParamError(`local index ${i} is outside the prepared list of ${nl}`);
    if (j >= nr) throw new InvalidParamError(`remote index ${j} is outside the prepared list of ${nr}`);
    const len = lLens[i]!;
    if (len !== rLens[j]) throw new MismatchError(`descriptor ${k}: local length ${len}, remote length ${rLens[j]}`);
    bytes += len;
    const li = L.region[i]!;
    const ri = R.region[j]!;
    const la = lAddrs[i]!;
    const ra = rAddrs[j]!;
    if (li === lreg && ri === rreg && la === lend && ra === rend && len > 0) {
      runLen += len;
      const w = (m - 1) * PAIR_WORDS + PAIR_LEN_WORD;
      out[w] = runLen >>> 0;
      out[w + 1] = Math.floor(runLen / U32);
    } else {
      lused[li] = 1;
      rused[ri] = 1;
      const w = m * PAIR_WORDS;
      if (!lidx) {
        // In place: pair k moves down to m once merging has freed room.
        if (m !== k) for (let x = 0, from = k * PAIR_WORDS; x < PAIR_WORDS; x++) out[w + x] = out[from + x]!;
      } else {
        const a = i * HALF;
        const b = j * HALF;
        out[w] = lw[a]!;
        out[w + 1] = lw[a + 1]!;
        out[w + 2] = lw[a + 2]!;
        out[w + 3] = lw[a + 3]!;
        out[w + 4] = lw[a + 4]!;
        out[w + 5] = lw[a + 5]!;
        const r = w + PAIR_REMOTE_WORD;
        out[r] = rw[b]!;
        out[r + 1] = rw[b + 1]!;
        out[r + 2] = rw[b + 2]!;
        out[r + 3] = rw[b + 3]!;
        out[r + 4] = rw[b + 4]!;
      }
      m++;
      lreg = li;
      rreg = ri;
      runLen = len;
    }
    lend = la + len;
    rend = ra + len;
  }
  return [m, bytes];
}

/** Staged if any region on either side is staged VRAM; gpudirect if any is VRAM and none staged. */
function pathOf(local: readonly MemoryRegion[], remote: readonly RemoteRegion[]): TransferPath {
  let vram = false;
  for (const r of local) {
    if (r.path === 'staged') return 'staged';
    vram ||= r.path !== undefined;
  }
  for (const r of remote) {
    if (r.kind === REGION_VRAM_STAGED) return 'staged';
    vram ||= r.kind !== REGION_DRAM;
  }
  return vram ? 'gpudirect' : 'host';
}
