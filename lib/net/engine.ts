/**
 * The network engine: one-sided READ and WRITE over the agent's libfabric
 * endpoint, the host memory registered on it, the peers it reaches, and the
 * notifications that travel with transfers or alone.
 */
import type { Completions } from '../core/completions.js';
import type { GiveUpCode, Wait } from '../core/deadline.js';
import type { Completion, Engine } from '../core/engine.js';
import { describeSource, MemoryRegion, type MemorySource, type RegionOwner } from '../core/memory.js';
import { MemoryRegistry } from '../core/registry.js';
import { Transfer } from '../core/transfer.js';
import { codeOfStatus, InvalidParamError, MismatchError, NotFoundError, statusOf, type IxferError } from '../errors.js';
import { OP_READ, OP_WRITE, POST_NOTIFY } from '../native/layout.js';
import { check, shim, toBigInt, viewNative, type MrHandle } from '../native/shim.js';
import { parseDescriptors, type Descriptor, type Op, type ParsedDescriptor } from '../schemas.js';
import type { Endpoint } from './endpoint.js';
import { parseNotificationBody } from './inbox.js';
import { encodeMetadata } from './metadata.js';
import { Notifications } from './notifications.js';
import { PeerTable } from './peers.js';
import { buildPosting, pickSides, PreparedLocal, PreparedRemote, type NetPosting } from './prepared.js';

export class NetEngine implements Engine<NetPosting>, RegionOwner {
  readonly defaultTimeoutMs: number | undefined;
  readonly endpoint: Endpoint;
  readonly peers: PeerTable;
  readonly notifications: Notifications;
  /** Host memory registered on the endpoint. */
  readonly memory = new MemoryRegistry((r) => `the registered region [0x${r.addr.toString(16)}, +${r.len})`);
  readonly #completions: Completions;
  /** allocate()d memory, freed with its region. */
  readonly #owned = new Map<MemoryRegion, number>();
  /** Our metadata's version: bumped by every registration change. */
  #sequence = 0n;
  readonly #changed: () => void;

  constructor(init: {
    endpoint: Endpoint;
    completions: Completions;
    defaultTimeoutMs: number | undefined;
    /** Registrations changed (our metadata with them). */
    changed: () => void;
    /** An incoming notification was dropped. */
    dropped: (err: IxferError) => void;
  }) {
    this.endpoint = init.endpoint;
    this.#completions = init.completions;
    this.defaultTimeoutMs = init.defaultTimeoutMs;
    this.#changed = init.changed;
    this.notifications = new Notifications({
      endpoint: init.endpoint,
      completions: init.completions,
      describe: describeNetError,
      dropped: init.dropped,
    });
    this.peers = new PeerTable(init.endpoint, (instance) => this.notifications.forget(instance));
  }

  // ---- memory --------------------------------------------------------------

  registerMemory(source: MemorySource): MemoryRegion {
    this.endpoint.handle();
    const { addr, len, keepAlive } = describeSource(source, (v) => Number(shim().memAddress(v)));
    return this.#register(addr, len, keepAlive);
  }

  allocate(bytes: number): MemoryRegion {
    this.endpoint.handle();
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocate needs a positive byte count');
    const native = shim();
    const out: (number | bigint)[] = [0];
    check(native.memAlloc(bytes, out), `allocating ${bytes} bytes`);
    const addr = Number(out[0]);
    try {
      const region = this.#register(addr, bytes, undefined, new Uint8Array(viewNative(addr, bytes)));
      this.#owned.set(region, addr);
      return region;
    } catch (err) {
      native.memFree(addr);
      throw err;
    }
  }

  #register(addr: number, len: number, keepAlive?: unknown, view?: Uint8Array): MemoryRegion {
    this.memory.checkFree(addr, len);
    const key: (number | bigint)[] = [0];
    const out: (bigint | null)[] = [null];
    check(shim().mrRegister(this.endpoint.handle(), addr, len, key, out), `registering ${len} bytes`);
    const handle = out[0] as MrHandle;
    const region = new MemoryRegion({ owner: this, addr, len, key: toBigInt(key[0]!), handle, keepAlive, view });
    this.memory.add(region);
    this.#bump();
    return region;
  }

  /** RegionOwner: region.deregister() lands here. */
  deregister(region: MemoryRegion): void {
    if (!this.memory.remove(region)) return;
    this.#bump();
    if (this.endpoint.live) check(shim().mrDeregister(region.handle), 'deregistering memory');
    this.#free(region);
  }

  #free(region: MemoryRegion): void {
    const addr = this.#owned.get(region);
    if (addr === undefined) return;
    this.#owned.delete(region);
    shim().memFree(addr);
  }

  #bump(): void {
    this.#sequence++;
    this.#changed();
  }

  /** The regions holding each descriptor; ERR_NOT_FOUND naming the first that none holds. */
  localRegions(descs: readonly ParsedDescriptor[], what: string): MemoryRegion[] {
    return descs.map((d, i) => {
      const r = this.memory.find(d.addr, d.len);
      if (!r) throw new NotFoundError(`${what}[${i}] [0x${d.addr.toString(16)}, +${d.len}) is not in registered memory`);
      return r;
    });
  }

  // ---- metadata ------------------------------------------------------------

  /** Our metadata: every region, or `regions` only (partial). */
  localMetadata(regions: unknown[] | undefined, includeConnection: boolean): Uint8Array {
    const all = this.memory.values();
    const chosen = regions ?? all;
    for (const r of chosen) {
      if (!(r instanceof MemoryRegion) || !all.includes(r)) {
        throw new NotFoundError('getLocalMetadata: a region is not registered with this agent');
      }
    }
    const ep = this.endpoint;
    return encodeMetadata({
      name: ep.name,
      instance: ep.instance,
      sequence: this.#sequence,
      provider: ep.info.name,
      mrModeBits: ep.info.mrModeBits,
      addrFormat: ep.info.addrFormatValue,
      ...(includeConnection ? { address: ep.address } : {}),
      complete: regions === undefined,
      regions: [...(chosen as MemoryRegion[])]
        .sort((a, b) => a.addr - b.addr)
        .map((r) => ({ addr: r.addr, len: r.len, key: r.key, devId: r.devId, kind: 0 })),
    });
  }

  // ---- transfers -----------------------------------------------------------

  /** A transfer between local and remote descriptors of peer, paired one to one. */
  transfer(op: Op, peerName: string, local: ParsedDescriptor[], remote: ParsedDescriptor[], notification: unknown): Transfer {
    const peer = this.peers.get(peerName);
    if (local.length !== remote.length) {
      throw new MismatchError(`${local.length} local descriptors but ${remote.length} remote ones`);
    }
    const sides = {
      local,
      localRegions: this.localRegions(local, 'local'),
      remote,
      remoteRegions: this.peers.regions(peer, remote, 'remote'),
    };
    return new Transfer(this, buildPosting(op, peer, peer.generation, sides, notification));
  }

  prepareLocal(descs: ParsedDescriptor[]): PreparedLocal {
    return new PreparedLocal(descs, this.localRegions(descs, 'local'));
  }

  prepareRemote(peerName: string, descriptors: Descriptor[]): PreparedRemote {
    const p = this.peers.get(peerName);
    const descs = parseDescriptors(descriptors, 'remote descriptors');
    return new PreparedRemote(peerName, descs, this.peers.regions(p, descs, 'remote'), p, p.generation);
  }

  makeTransfer(op: Op, local: PreparedLocal, li: number[], remote: PreparedRemote, ri: number[], notification: unknown): Transfer {
    const posting = buildPosting(op, remote.peerRef, remote.generation, pickSides(local, li, remote, ri), notification);
    return new Transfer(this, posting);
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
    return this.#completions.track(done, (id) =>
      check(
        shim().xferPost(
          handle,
          p.op === 'WRITE' ? OP_WRITE : OP_READ,
          p.peer.fiAddr,
          p.pairs,
          p.count,
          id,
          notif ?? null,
          notif?.length ?? 0,
          notif ? POST_NOTIFY : 0,
        ),
        `posting ${p.op} to '${p.target}'`,
      ),
    );
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
    this.peers.close();
  }
}

function describeNetError(status: number, fiErrno: number): string {
  if (fiErrno) return `${shim().fabricStrerror(fiErrno)} (provider error ${fiErrno})`;
  const code = codeOfStatus(status);
  if (code === 'ERR_TIMEOUT') return 'timed out';
  if (code === 'ERR_CANCELED') return 'canceled';
  if (code === 'ERR_REMOTE_DISCONNECT') return 'the peer was removed (invalidated or reloaded)';
  return code;
}
