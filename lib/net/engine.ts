/**
 * The network engine: one-sided READ and WRITE over the agent's libfabric
 * endpoint, the host memory registered on it, the peers it reaches, and the
 * notifications that travel with transfers or alone.
 */
import type { Completions } from '../core/completions.js';
import type { GiveUpCode, Wait } from '../core/deadline.js';
import type { Completion, Engine } from '../core/engine.js';
import { ALLOCATED, describeSource, isDetached, MAX_VIEW_BYTES, MemoryRegion, type MemorySource, type RegionOwner } from '../core/memory.js';
import { MemoryRegistry } from '../core/registry.js';
import type { Telemetry } from '../core/telemetry.js';
import { Transfer } from '../core/transfer.js';
import { codeOfStatus, InvalidParamError, makeError, MismatchError, NotFoundError, statusOf, type IxferError } from '../errors.js';
import { EVENT_RAIL, OP_READ, OP_WRITE, POST_NETWORK, POST_NOTIFY } from '../native/layout.js';
import { check, shim, toBigInt, viewNative, type MrHandle, type StagingStatsRaw } from '../native/shim.js';
import type { DescriptorColumns, Op } from '../schemas.js';
import type { Endpoint } from './endpoint.js';
import { sameHost } from './host.js';
import { parseNotificationBody, type InboxLimits } from './inbox.js';
import { encodeMetadata, REGION_DRAM, REGION_VRAM_GPUDIRECT, REGION_VRAM_STAGED } from './metadata.js';
import { Notifications, type NotificationDroppedError } from './notifications.js';
import { PeerTable, type RemoteRegion } from './peers.js';
import { buildPosting, overNetwork, pairHalves, PreparedLocal, PreparedRemote, resolveSide, type Halves, type NetPosting, type Side } from './prepared.js';

/** The staging pool of an agent (VRAM staged through host bounce buffers). */
export interface StagingStats {
  /** Bounce memory allocated (0 until a staged transfer first needs it). */
  poolBytes: number;
  chunkBytes: number;
  /** Bounce chunks held now, and the most held at once. */
  chunksBusy: number;
  chunksPeak: number;
  /** Chunks of this agent's own transfers staged. */
  pieces: number;
  /** Peers' staged requests served, and those refused or failed. */
  served: number;
  serveFailed: number;
  /** Bytes copied between host and device memory. */
  copiedBytes: number;
}

const PROBE_BYTES = 64;
/** Unmaps retired allocations once no JavaScript view can reach them. */
const unmapWhenCollected = new FinalizationRegistry<{ addr: number; len: number }>(({ addr, len }) => shim().memUnmap(addr, len));

/** Agent event 'rail': a rail went out of use after a connection error (`error` says which), or came back, towards one peer. */
export interface RailEvent {
  rail: number;
  /** Its interface (libfabric domain). */
  domain: string;
  /** The peer it changed for ('' when no longer loaded); absent: every peer (the local network went down). */
  peer?: string;
  up: boolean;
  error?: IxferError;
}

export class NetEngine implements Engine<NetPosting>, RegionOwner {
  readonly defaultTimeoutMs: number | undefined;
  readonly telemetry: Telemetry;
  readonly endpoint: Endpoint;
  readonly peers: PeerTable;
  readonly notifications: Notifications;
  /** Host memory registered on the endpoint. */
  readonly memory = new MemoryRegistry((r) => `the registered region [0x${r.addr.toString(16)}, +${r.len})`);
  /** Device memory registered on the endpoint (by gpu/): transfers and metadata take both kinds. */
  readonly vram = new MemoryRegistry(() => 'registered device memory');
  readonly #completions: Completions;
  /** allocate()d memory, freed with its region. */
  readonly #owned = new Map<MemoryRegion, number>();
  /** Our metadata's version: bumped by every registration change. */
  #sequence = 0n;
  readonly #changed: () => void;
  /** connect()'s landing place, made on first use. */
  #probe: MemoryRegion | undefined;

  constructor(init: {
    endpoint: Endpoint;
    completions: Completions;
    telemetry: Telemetry;
    defaultTimeoutMs: number | undefined;
    /** Registrations changed (our metadata with them). */
    changed: () => void;
    /** An incoming notification was dropped. */
    dropped: (err: NotificationDroppedError) => void;
    /** A rail went out of use or came back. */
    rail: (event: RailEvent) => void;
    /** metadata.maxRegionsPerPeer */
    maxRegionsPerPeer: number;
    /** metadata.maxPeers */
    maxPeers: number;
    /** A peer was dropped to stay within maxPeers. */
    evicted: (name: string) => void;
    /** Bounds of the delivered-notification queue. */
    inbox: InboxLimits;
  }) {
    this.endpoint = init.endpoint;
    this.#completions = init.completions;
    this.defaultTimeoutMs = init.defaultTimeoutMs;
    this.telemetry = init.telemetry;
    this.#changed = init.changed;
    this.notifications = new Notifications({
      endpoint: init.endpoint,
      completions: init.completions,
      telemetry: init.telemetry,
      describe: describeNetError,
      dropped: init.dropped,
      limits: init.inbox,
    });
    this.peers = new PeerTable(
      init.endpoint,
      { instanceGone: (instance) => this.notifications.forget(instance), evicted: init.evicted },
      { maxRegionsPerPeer: init.maxRegionsPerPeer, maxPeers: init.maxPeers },
    );
    init.completions.on(EVENT_RAIL, (fiAddr, status, fiErrno, rail) => {
      const domain = init.endpoint.rails[rail]?.domain ?? '';
      const peer = fiAddr < 2 ** 63 ? (this.peers.nameOf(fiAddr) ?? '') : undefined;
      const about = { rail, domain, ...(peer === undefined ? {} : { peer }) };
      if (status === 0) return init.rail({ ...about, up: true });
      const towards = peer === undefined ? '' : ` towards '${peer}'`;
      const error = makeError(codeOfStatus(status), `rail ${rail} (${domain}) out of use${towards}: ${describeNetError(status, fiErrno)}`);
      init.rail({ ...about, up: false, error });
    });
  }

  // ---- memory --------------------------------------------------------------

  registerMemory(source: MemorySource, name?: string): MemoryRegion {
    this.endpoint.handle();
    this.checkName(name);
    const { addr, len, keepAlive } = describeSource(source, (v) => Number(shim().memAddress(v)));
    return this.#register(addr, len, name, keepAlive);
  }

  allocate(bytes: number, name?: string): MemoryRegion {
    this.endpoint.handle();
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocate needs a positive byte count');
    this.checkName(name);
    const native = shim();
    const out: (number | bigint)[] = [0];
    check(native.memMap(bytes, out), `allocating ${bytes} bytes`);
    const addr = Number(out[0]);
    try {
      // Node.js 20 makes no Buffer over 4 GiB: a larger region moves its bytes by transfers only.
      const view = bytes <= MAX_VIEW_BYTES ? new Uint8Array(viewNative(addr, bytes)) : undefined;
      const region = this.#register(addr, bytes, name, ALLOCATED, view);
      this.#owned.set(region, addr);
      return region;
    } catch (err) {
      native.memUnmap(addr, bytes);
      throw err;
    }
  }

  /** Peers look regions up by name: one region per name, host and device memory alike. */
  checkName(name: string | undefined): void {
    const taken = (r: MemoryRegion) => r.name === name;
    if (name !== undefined && (this.memory.values().some(taken) || this.vram.values().some(taken))) {
      throw new InvalidParamError(`a registered region is already named '${name}'`);
    }
  }

  #register(addr: number, len: number, name: string | undefined, keepAlive?: unknown, view?: Uint8Array): MemoryRegion {
    this.memory.checkFree(addr, len);
    const key: (number | bigint)[] = [0];
    const out: (bigint | null)[] = [null];
    check(shim().mrRegister(this.endpoint.handle(), addr, len, key, out), `registering ${len} bytes`);
    const handle = out[0] as MrHandle;
    const region = new MemoryRegion({ owner: this, addr, len, key: toBigInt(key[0]!), handle, keepAlive, view, name });
    this.memory.add(region);
    this.registrationsChanged();
    return region;
  }

  /** RegionOwner: region.deregister() lands here. */
  deregister(region: MemoryRegion): void {
    if (!this.memory.remove(region)) return;
    this.registrationsChanged();
    if (this.endpoint.live) check(shim().mrDeregister(region.handle), 'deregistering memory');
    this.#free(region);
  }

  #free(region: MemoryRegion): void {
    const addr = this.#owned.get(region);
    if (addr === undefined) return;
    this.#owned.delete(region);
    // The pages go back (on libuv's pool: about 0.1 s per GiB touched); the
    // range stays mapped (reading zeros) while a view the user kept can still
    // reach it, and is unmapped when it cannot.
    const { len } = region;
    const ab = region.retireView();
    if (!ab) return shim().memUnmap.async(addr, len, () => {}); // no view ever reached it
    shim().memRetire.async(addr, len, () => {
      // Only now: unmapped earlier, the range could be mapped again for someone else before madvise ran.
      if (!isDetached(ab)) unmapWhenCollected.register(ab, { addr, len });
    });
  }

  /** A region came or went (here or in gpu/): our metadata's version moves on. */
  registrationsChanged(): void {
    this.#sequence++;
    this.#changed();
  }

  /** Local descriptors resolved to the regions (host or VRAM) holding them; ERR_NOT_FOUND names the first that none holds. */
  #local(cols: DescriptorColumns, what: string, halves?: Halves): Side<MemoryRegion> {
    return resolveSide(
      cols,
      {
      what,
      find: (addr, len) => this.memory.find(addr, len) ?? this.vram.find(addr, len),
      missing: (i, addr, len) => new NotFoundError(`${what}[${i}] [0x${addr.toString(16)}, +${len}) is not in registered memory`),
      word: (r) => r.handle,
      },
      halves,
    );
  }

  // ---- metadata ------------------------------------------------------------

  /** Our metadata: every region, or `regions` only (partial). */
  localMetadata(regions: unknown[] | undefined, includeConnection: boolean): Uint8Array {
    // All regions come sorted (host and VRAM merged); a chosen few are checked by lookup (O(log n) each) and sorted.
    let chosen: readonly MemoryRegion[] = mergeByAddress(this.memory.values(), this.vram.values());
    if (regions) {
      for (const r of regions) {
        const registry = r instanceof MemoryRegion && r.kind === 'VRAM' ? this.vram : this.memory;
        if (!(r instanceof MemoryRegion) || !r.registered || registry.find(r.addr, r.len) !== r) {
          throw new NotFoundError('getLocalMetadata: a region is not registered with this agent');
        }
      }
      // A region named twice is listed once: peers refuse overlapping regions.
      chosen = [...new Set(regions as MemoryRegion[])].sort((a, b) => a.addr - b.addr);
    }
    const ep = this.endpoint;
    return encodeMetadata({
      name: ep.name,
      instance: ep.instance,
      sequence: this.#sequence,
      provider: ep.info.name,
      mrModeBits: ep.info.mrModeBits,
      addrFormat: ep.info.addrFormatValue,
      ...(includeConnection ? { address: ep.address, rails: ep.netRails.slice(1).map((r) => r.address), ...sameHost(ep) } : {}),
      complete: regions === undefined,
      regions: chosen.map((r) => ({ addr: r.addr, len: r.len, key: r.key, devId: r.devId, kind: kindOf(r), ...(r.name ? { name: r.name } : {}) })),
    });
  }

  // ---- transfers -----------------------------------------------------------

  /** A transfer between local and remote descriptors of peer, paired one to one. */
  transfer(op: Op, peerName: string, local: DescriptorColumns, remote: DescriptorColumns, notification: unknown): Transfer {
    const peer = this.peers.get(peerName);
    if (local.addrs.length !== remote.addrs.length) {
      throw new MismatchError(`${local.addrs.length} local descriptors but ${remote.addrs.length} remote ones`);
    }
    const halves = pairHalves(local.addrs.length);
    const L = this.#local(local, 'local', halves.local);
    let R = this.peers.resolve(peer, remote, 'remote', halves.remote);
    if (overNetwork(peer, L, R)) R = this.peers.resolve(peer, remote, 'remote', halves.remote, undefined, false);
    return new Transfer(this, buildPosting(op, peer, peer.generation, L, R, notification));
  }

  prepareLocal(cols: DescriptorColumns): PreparedLocal {
    return new PreparedLocal(this.#local(cols, 'local'), this);
  }

  prepareRemote(peerName: string, cols: DescriptorColumns): PreparedRemote {
    const p = this.peers.get(peerName);
    return new PreparedRemote(peerName, this.peers.resolve(p, cols, 'remote'), p, p.generation, this);
  }

  makeTransfer(
    op: Op,
    local: PreparedLocal,
    li: ArrayLike<number>,
    remote: PreparedRemote,
    ri: ArrayLike<number>,
    notification: unknown,
  ): Transfer {
    if (!(local instanceof PreparedLocal) || local.owner !== this) throw new InvalidParamError('local is not a list this agent prepared (prepareLocal)');
    if (!(remote instanceof PreparedRemote) || remote.owner !== this) throw new InvalidParamError('remote is not a list this agent prepared (prepareRemote)');
    if (li.length !== ri.length) throw new MismatchError(`${li.length} local indices but ${ri.length} remote ones`);
    const peer = remote.peerRef;
    const R = overNetwork(peer, local.side, remote.side)
      ? (remote.networkSide ??= this.peers.resolve(peer, remote.side.cols, 'remote', undefined, undefined, false))
      : remote.side;
    const posting = buildPosting(op, peer, remote.generation, local.side, R, notification, { local: li, remote: ri });
    return new Transfer(this, posting);
  }

  /**
   * Sets up everything a first transfer to a loaded peer would: a one-byte
   * READ of a region it reaches directly (tcp;ofi_rxm connects on the first
   * operation; a READ changes nothing on the peer) and, where the peer stages
   * VRAM, one of a staged region too, which makes both staging pools and the
   * peer's connection back to us (about half a second on first use here).
   */
  async connect(peerName: string, wait: Wait): Promise<void> {
    const peer = this.peers.get(peerName);
    const regions = peer.regions.values();
    const direct = regions.find((r) => r.kind !== REGION_VRAM_STAGED);
    const staged = regions.find((r) => r.kind === REGION_VRAM_STAGED);
    if (!direct && !staged) throw new NotFoundError(`peer '${peerName}' has no registered region: connect needs its metadata to list one`);
    const probe = this.#probeRegion();
    const read = (region: RemoteRegion) => {
      const one = (addr: number) => ({ addrs: Float64Array.of(addr), lens: Float64Array.of(1) });
      const halves = pairHalves(1);
      const local = resolveSide(
        one(probe.addr),
        { what: 'probe', find: () => probe, missing: () => new Error('unreachable'), word: (r) => r.handle },
        halves.local,
      );
      const remote = this.peers.resolve(peer, one(region.addr), 'remote', halves.remote, () => region, peer.shm !== undefined && region.kind === REGION_DRAM);
      const t = new Transfer(this, buildPosting('READ', peer, peer.generation, local, remote, undefined));
      return t.run({ signal: wait.signal, timeoutMs: wait.timeoutMs ?? this.defaultTimeoutMs });
    };
    if (direct) await read(direct); // first: the connection the staged READ's request then uses
    if (staged) await read(staged);
  }

  /** A few bytes of our own for connect()'s READ: registered, but not in our metadata. */
  #probeRegion(): MemoryRegion {
    if (this.#probe) return this.#probe;
    const native = shim();
    const out: (number | bigint)[] = [0];
    check(native.memMap(PROBE_BYTES, out), 'allocating the connect probe');
    const addr = Number(out[0]);
    const key: (number | bigint)[] = [0];
    const mr: (bigint | null)[] = [null];
    const status = native.mrRegister(this.endpoint.handle(), addr, PROBE_BYTES, key, mr);
    if (status !== 0) native.memUnmap(addr, PROBE_BYTES);
    check(status, 'registering the connect probe');
    const owner = { deregister: () => {} }; // lives as long as the endpoint
    this.#probe = new MemoryRegion({ owner, addr, len: PROBE_BYTES, key: toBigInt(key[0]!), handle: mr[0] as MrHandle });
    return this.#probe;
  }

  /** The staging pool of VRAM transfers (all zero until first used). */
  stagingStats(): StagingStats {
    const raw: Partial<StagingStatsRaw> = {};
    check(shim().stagingStatsGet(this.endpoint.handle(), raw), 'reading the staging pool');
    const n = (v: number | bigint | undefined) => Number(v ?? 0);
    return {
      poolBytes: n(raw.pool_bytes),
      chunkBytes: n(raw.chunk_bytes),
      chunksBusy: n(raw.chunks_busy),
      chunksPeak: n(raw.chunks_peak),
      pieces: n(raw.pieces),
      served: n(raw.served),
      serveFailed: n(raw.serve_failed),
      copiedBytes: n(raw.copied_bytes),
    };
  }

  /** A standalone notification to a loaded peer. */
  notify(peerName: string, message: unknown, wait: Wait): Promise<void> {
    const peer = this.peers.get(peerName);
    return this.notifications.send(peer, message, { ...wait, timeoutMs: wait.timeoutMs ?? this.defaultTimeoutMs });
  }

  // ---- Engine --------------------------------------------------------------

  post(p: NetPosting, done: Completion): number {
    const handle = this.endpoint.handle();
    if (!p.peer.valid || p.peer.generation !== p.generation) {
      throw new NotFoundError(`peer '${p.target}' was invalidated or reloaded since this transfer was made`);
    }
    for (const region of p.remote) {
      if (!region.valid) throw new NotFoundError(`a remote region of '${p.target}' is no longer registered`);
    }
    const notif = p.notification;
    this.peers.touch(p.peer);
    return this.#completions.track(done, (id) =>
      check(
        shim().xferPost(
          handle,
          p.op === 'WRITE' ? OP_WRITE : OP_READ,
          p.peer.fiAddr,
          p.pairs,
          p.pairCount,
          id,
          notif ?? null,
          notif?.length ?? 0,
          (notif ? POST_NOTIFY : 0) | (p.network ? POST_NETWORK : 0),
        ),
        `posting ${p.op} to '${p.target}'`,
      ),
    );
  }

  checkOpen(): void {
    this.endpoint.handle();
  }

  notifying(p: NetPosting, body: unknown): NetPosting {
    return { ...p, notification: parseNotificationBody(body) };
  }

  cancel(id: number, code: GiveUpCode): void {
    const handle = this.endpoint.live;
    if (handle && this.#completions.has(id)) shim().xferCancel(handle, id, statusOf(code));
  }

  describeError(_p: NetPosting, status: number, fiErrno: number): string {
    return describeNetError(status, fiErrno);
  }

  release(): void {
    // Nothing beyond the posting's memory, which the Transfer holds.
  }

  /** After the endpoint is destroyed: regions and peers end with it, allocated memory is freed. */
  close(): void {
    for (const region of this.memory.clear()) this.#free(region);
    // No JavaScript view of the probe exists, so it can be unmapped at once.
    if (this.#probe) shim().memUnmap(this.#probe.addr, PROBE_BYTES);
    this.#probe = undefined;
    this.peers.close();
  }
}

function kindOf(r: MemoryRegion): number {
  if (!r.path) return REGION_DRAM;
  return r.path === 'gpudirect' ? REGION_VRAM_GPUDIRECT : REGION_VRAM_STAGED;
}

/** Two address-ordered lists as one (host and device memory never overlap). */
function mergeByAddress(a: readonly MemoryRegion[], b: readonly MemoryRegion[]): readonly MemoryRegion[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out: MemoryRegion[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) out.push(j >= b.length || (i < a.length && a[i]!.addr < b[j]!.addr) ? a[i++]! : b[j++]!);
  return out;
}

function describeNetError(status: number, fiErrno: number): string {
  if (fiErrno) return `${shim().fabricStrerror(fiErrno)} (provider error ${fiErrno})`;
  const code = codeOfStatus(status);
  if (code === 'ERR_TIMEOUT') return 'timed out';
  if (code === 'ERR_CANCELED') return 'canceled';
  if (code === 'ERR_REMOTE_DISCONNECT') return 'the peer is gone (its endpoint refuses connections) or was removed (invalidated or reloaded)';
  return code;
}
