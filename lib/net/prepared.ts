/**
 * Network postings: descriptor lists resolved to registered regions (here,
 * and at the peer) and packed for the shim, straight from a request or from
 * prepared lists (like NIXL's prepXferDlist and makeXferReq).
 */
import type { Posting, TransferPath } from '../core/engine.js';
import type { MemoryRegion } from '../core/memory.js';
import { InvalidParamError, MismatchError } from '../errors.js';
import { IovPairs, PAIR_REMOTE_STAGED } from '../native/layout.js';
import type { Op, ParsedDescriptor } from '../schemas.js';
import { parseNotificationBody } from './inbox.js';
import { REGION_DRAM, REGION_VRAM_STAGED } from './metadata.js';
import type { Peer, RemoteRegion } from './peers.js';

/** Local descriptors validated once, for transfers made by index. */
export class PreparedLocal {
  /** @internal */
  constructor(
    readonly descs: readonly ParsedDescriptor[],
    /** @internal */ readonly regions: readonly MemoryRegion[],
  ) {}
  get length(): number {
    return this.descs.length;
  }
}

/** Remote descriptors of one peer validated once, for transfers made by index. */
export class PreparedRemote {
  /** @internal */
  constructor(
    readonly peer: string,
    readonly descs: readonly ParsedDescriptor[],
    /** @internal */ readonly regions: readonly RemoteRegion[],
    /** @internal */ readonly peerRef: Peer,
    /** @internal */ readonly generation: number,
  ) {}
  get length(): number {
    return this.descs.length;
  }
}

export interface NetPosting extends Posting {
  readonly peer: Peer;
  /** The peer's generation when the transfer was made: a reloaded peer fails it. */
  readonly generation: number;
  readonly remote: readonly RemoteRegion[];
  /** ixfer_iov_pair[] */
  readonly pairs: Uint8Array;
  /** Delivered once the data is in place, unless post() is given another. */
  readonly notification: Uint8Array | undefined;
  /** Network rails although the peer is reached over shm: device memory is in it (shm carries host memory). */
  readonly network: boolean;
}

/** Local and remote sides of one transfer, each descriptor with the region that holds it. */
export interface Sides {
  local: readonly ParsedDescriptor[];
  localRegions: readonly MemoryRegion[];
  remote: readonly ParsedDescriptor[];
  remoteRegions: readonly RemoteRegion[];
}

/** Which entries of Sides a posting takes: the i-th pair is local[local[i]] with remote[remote[i]]. */
export interface Picks {
  local: readonly number[];
  remote: readonly number[];
}

/**
 * Pairs local and remote descriptors one to one (the callers checked that the
 * lists, or the picks, are as long) and packs them; picks (makeTransfer)
 * choose entries of prepared lists by index.
 */
export function buildPosting(op: Op, peer: Peer, generation: number, s: Sides, notification: unknown, picks?: Picks): NetPosting {
  const posting = pack(op, peer, generation, s, notification, picks, peer.shm !== undefined);
  // A peer on this host takes the shm rail for host memory only: the rare
  // transfer with device memory is packed again for the network rails.
  return posting.network ? pack(op, peer, generation, s, notification, picks, false) : posting;
}

function pack(op: Op, peer: Peer, generation: number, s: Sides, notification: unknown, picks: Picks | undefined, viaShm: boolean): NetPosting {
  const virtAddr = viaShm ? peer.shm!.virtAddr : peer.virtAddr;
  const n = picks ? picks.local.length : s.local.length;
  const pairs = new IovPairs(n);
  // Descriptors of one region come in runs: the sets see each run once.
  const memory = new Set<MemoryRegion>();
  const remote = new Set<RemoteRegion>();
  let lastLocal: MemoryRegion | undefined;
  let lastRemote: RemoteRegion | undefined;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const li = picks ? picks.local[i]! : i;
    const ri = picks ? picks.remote[i]! : i;
    if (li >= s.local.length) throw new InvalidParamError(`local index ${li} is outside the prepared list of ${s.local.length}`);
    if (ri >= s.remote.length) throw new InvalidParamError(`remote index ${ri} is outside the prepared list of ${s.remote.length}`);
    const l = s.local[li]!;
    const r = s.remote[ri]!;
    if (l.len !== r.len) throw new MismatchError(`descriptor ${i}: local length ${l.len}, remote length ${r.len}`);
    bytes += l.len;
    const lr = s.localRegions[li]!;
    const rr = s.remoteRegions[ri]!;
    if (lr !== lastLocal) memory.add((lastLocal = lr));
    if (rr !== lastRemote) remote.add((lastRemote = rr));
    // Providers without FI_MR_VIRT_ADDR take offsets into the remote region;
    // the peer's progress thread finds a staged region by its virtual address.
    const remoteStaged = rr.kind === REGION_VRAM_STAGED;
    const raddr = virtAddr || remoteStaged ? r.addr : r.addr - rr.addr;
    pairs.set(i, l.addr, l.len, lr.handle as bigint, raddr, rr.key, remoteStaged ? PAIR_REMOTE_STAGED : 0);
  }
  const path = pathOf(memory, remote);
  return {
    op,
    target: peer.name,
    count: n,
    bytes,
    memory: [...memory],
    peer,
    generation,
    remote: [...remote],
    path,
    pairs: pairs.bytes,
    network: peer.shm !== undefined && path !== 'host',
    notification: notification === undefined ? undefined : parseNotificationBody(notification),
  };
}

/** Staged if any region on either side is staged VRAM; gpudirect if any is VRAM and none staged. */
function pathOf(local: Set<MemoryRegion>, remote: Set<RemoteRegion>): TransferPath {
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
