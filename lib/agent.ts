/**
 * An agent: one libfabric endpoint with its progress thread, the memory
 * registered on it, and the peers whose metadata it loaded.
 *
 * Completion is event-driven: the shim's progress thread writes a byte to a
 * pipe when transfers finish; the pipe is read by a net.Socket on the event
 * loop, which drains all finished transfers with one synchronous call. No
 * polling, no timers, no thread-pool work per transfer.
 */
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';

import {
  InvalidParamError,
  makeError,
  MismatchError,
  NotAllowedError,
  NotFoundError,
  NotSupportedError,
  codeOfStatus,
  statusOf,
  type IxferError,
} from './errors.js';
import type { ExchangeStats } from './exchange/context.js';
import type { GiveUpCode } from './deadline-wait.js';
import { MetadataExchange } from './exchange/exchange.js';
import type { SocketAddress } from './exchange/tcp-channel.js';
import { describeSource, MemoryRegion, type MemorySource, type RegionOwner } from './memory.js';
import { decodeMetadata, encodeMetadata, type Metadata } from './metadata.js';
import {
  check,
  EVENT_BYTES,
  EVENT_NOTIF,
  EVENT_XFER_DONE,
  OP_READ,
  OP_WRITE,
  POST_NOTIFY,
  takeNotification,
  providerInfoBuffer,
  decodeProviderInfo,
  shim,
  toBigInt,
  viewNative,
  type AgentHandle,
  type MrHandle,
  type Shim,
} from './native.js';
import { Notification, NotificationInbox, parseNotificationBody } from './notifications.js';
import { NotifySend } from './notify-send.js';
import type { FileOpenOptions, FileTransferRequest, VramSource } from './file-schemas.js';
import { FileEngine, type FileRegion, type FileTransfer } from './files.js';
import { Peer, type RemoteRegion } from './peers.js';
import { AUTO_ORDER, coreName, listProviders, summarizeProvider, type ProviderSummary } from './providers.js';
import { RangeIndex } from './regions.js';
import {
  AgentOptionsSchema,
  MetadataOptionsSchema,
  OpSchema,
  parse,
  TransferRequestSchema,
  parseDescriptors,
  parseIndices,
  type AgentOptions,
  type FileEngineOptions,
  type Descriptor,
  type ExchangeOptionsParsed,
  type InvalidateOptions,
  type ListenOptions,
  type MetadataOptions,
  type NotificationBody,
  type Op,
  type ParsedDescriptor,
  type PeerAddress,
  type TransferRequest,
  type WaitForNotificationOptions,
  type WaitOptions,
  IterateOptionsSchema,
  WaitOptionsSchema,
} from './schemas.js';
import { packPairs, Transfer, type Completion, type TransferHost } from './transfer.js';

const FI_MR_VIRT_ADDR = 1 << 4;
const DRAIN_BATCH = 1024;
/** Status codes of the shim for cancellation (ixfer.h). */

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

function pickProvider(requested: string, iface: string | undefined): ProviderSummary {
  const all = listProviders().filter((p) => !iface || p.domain === iface);
  const offered = [...new Set(all.map((p) => coreName(p.name)))];
  const want = requested === 'auto' ? AUTO_ORDER.find((name) => offered.includes(name)) : requested;
  const found = want && all.find((p) => coreName(p.name) === want || p.name === want);
  if (!found) {
    throw new NotSupportedError(
      `provider '${requested}' does not offer RDM endpoints with RMA on this host` +
        `${iface ? ` (interface ${iface})` : ''}; available: ${offered.join(', ') || 'none'}`,
    );
  }
  return found;
}

/** IPv4 (else IPv6) address of a network interface, for IP providers. */
function ifaceAddress(iface: string): string | undefined {
  const addrs = os.networkInterfaces()[iface];
  return (addrs?.find((a) => a.family === 'IPv4') ?? addrs?.[0])?.address;
}

const IP_PROVIDERS = new Set(['tcp', 'sockets', 'udp', 'verbs', 'net']);

/** What the agent waits on: a transfer, or a standalone notification being sent. */
/** Counters of incoming notifications. */
export interface NotificationStats {
  received: number;
  /** Dropped: over maxPendingBytesPerPeer, or stale (see the 'notification-dropped' event). */
  dropped: number;
  /** Fragments that were malformed (not ixfer's, or corrupted). */
  malformed: number;
  /** Bytes held now for incoming notifications not yet complete (or waiting for their data). */
  pendingBytes: number;
}

/**
 * Events:
 * - 'notification-dropped' (err: IxferError with `peer` and `bytes`): an
 *   incoming notification was dropped, ERR_NOT_ALLOWED when it exceeded
 *   maxPendingBytesPerPeer, ERR_TIMEOUT when it stalled for staleMs.
 * - 'peer' (PeerEvent): the metadata exchange loaded or dropped a peer.
 */
export class Agent extends EventEmitter implements RegionOwner, TransferHost, AsyncDisposable {
  readonly name: string;
  /** Core provider name in use ('tcp', 'efa', ...). */
  readonly provider: string;
  /** What the opened endpoint offers. */
  readonly providerInfo: ProviderSummary;
  /** The endpoint's fabric address. */
  readonly address: Uint8Array;
  readonly defaultTimeoutMs: number | undefined;

  #native: Shim;
  #handle: AgentHandle | undefined;
  #events: net.Socket;
  #eventBuf = Buffer.alloc(EVENT_BYTES * DRAIN_BATCH);
  #nextId = 1;
  #inflight = new Map<number, Completion>();
  #inbox = new NotificationInbox(() => this.#updateRef());
  #notifStats = { received: 0, dropped: 0 };
  /** Next standalone-notification sequence number per receiving agent instance. */
  #notifySeq = new Map<string, number>();
  #regions = new RangeIndex<MemoryRegion>();
  #owned = new Map<MemoryRegion, number>(); // allocate()d memory to free
  #peers = new Map<string, Peer>();
  #instance = crypto.randomBytes(16).toString('hex');
  #sequence = 0n;
  #closed = false;
  #closing: Promise<void> | undefined;
  #fileOptions: FileEngineOptions;
  #files: FileEngine | undefined;
  #exchange: MetadataExchange;

  private constructor(init: {
    name: string;
    provider: string;
    handle: AgentHandle;
    info: ProviderSummary;
    address: Uint8Array;
    eventFd: number;
    defaultTimeoutMs: number | undefined;
    metadata: ExchangeOptionsParsed;
    files: FileEngineOptions;
  }) {
    super();
    this.#native = shim();
    this.name = init.name;
    this.provider = init.provider;
    this.#handle = init.handle;
    this.providerInfo = init.info;
    this.address = init.address;
    this.defaultTimeoutMs = init.defaultTimeoutMs;
    this.#events = new net.Socket({ fd: init.eventFd, readable: true, writable: false });
    this.#events.on('data', () => this.#drain());
    this.#events.on('error', () => {}); // closed under us during close()
    this.#events.unref();
    this.#exchange = new MetadataExchange(this, init.metadata);
    this.#fileOptions = init.files;
  }

  /**
   * Opens an endpoint. Binds to loopback unless `iface` or `address` says
   * otherwise. IXFER_PROVIDER overrides `provider`.
   */
  static async create(options: AgentOptions): Promise<Agent> {
    const opts = parse(AgentOptionsSchema, options, 'agent options');
    const native = shim();
    const requested = process.env.IXFER_PROVIDER || opts.provider;
    const chosen = pickProvider(requested, opts.iface);
    const provider = coreName(chosen.name);
    let node = opts.address ?? (opts.iface ? ifaceAddress(opts.iface) : undefined);
    if (!node && !opts.iface && IP_PROVIDERS.has(provider)) node = '127.0.0.1';

    const out: (bigint | null)[] = [null];
    check(
      native.agentCreate(
        {
          provider,
          node: node ?? null,
          domain: opts.iface ?? null,
          name: opts.name,
          notif_pending_cap: opts.notifications.maxPendingBytesPerPeer,
          notif_stale_ms: opts.notifications.staleMs,
        },
        out,
      ),
      `creating agent '${opts.name}' on ${provider}${node ? ` at ${node}` : ''}`,
    );
    const handle = out[0] as AgentHandle;
    let agent: Agent;
    try {
      const infoBuf = providerInfoBuffer(1);
      check(native.agentInfo(handle, infoBuf), 'reading endpoint attributes');
      const addrBuf = Buffer.alloc(4096);
      const len: (number | bigint)[] = [addrBuf.length];
      check(native.agentAddress(handle, addrBuf, len), 'reading endpoint address');
      const fd = [0];
      check(native.agentTakeEventFd(handle, fd), 'taking the event descriptor');
      agent = new Agent({
        name: opts.name,
        provider,
        handle,
        info: summarizeProvider(decodeProviderInfo(infoBuf)),
        address: new Uint8Array(addrBuf.subarray(0, Number(len[0]))),
        eventFd: fd[0]!,
        defaultTimeoutMs: opts.transferTimeoutMs,
        metadata: opts.metadata,
        files: opts.files,
      });
    } catch (err) {
      native.agentDestroy(handle);
      throw err;
    }
    // Joins etcd when configured: peers can find the agent once create() resolves.
    await agent.#exchange.start().catch(async (err: unknown) => {
      await agent.close();
      throw err;
    });
    return agent;
  }

  #h(): AgentHandle {
    if (!this.#handle || this.#closed) throw new NotAllowedError(`agent '${this.name}' is closed`);
    return this.#handle;
  }

  // ---- memory ------------------------------------------------------------

  /**
   * Registers memory for transfers: a Buffer, TypedArray or ArrayBuffer (kept
   * alive while registered), or native memory as {addr, len}.
   */
  registerMemory(source: MemorySource): MemoryRegion {
    const handle = this.#h();
    const { addr, len, keepAlive } = describeSource(source, (v) => Number(this.#native.memAddress(v)));
    return this.#register(handle, addr, len, keepAlive);
  }

  /** Allocates page-aligned, zeroed native memory, registered; freed when deregistered. */
  allocate(bytes: number): MemoryRegion {
    const handle = this.#h();
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidParamError('allocate needs a positive byte count');
    const out: (number | bigint)[] = [0];
    check(this.#native.memAlloc(bytes, out), `allocating ${bytes} bytes`);
    const addr = Number(out[0]);
    try {
      const region = this.#register(handle, addr, bytes, undefined, new Uint8Array(viewNative(addr, bytes)));
      this.#owned.set(region, addr);
      return region;
    } catch (err) {
      this.#native.memFree(addr);
      throw err;
    }
  }

  #register(handle: AgentHandle, addr: number, len: number, keepAlive?: unknown, view?: Uint8Array): MemoryRegion {
    const clash = this.#regions.overlapping(addr, len);
    if (clash) {
      throw new InvalidParamError(
        `[0x${addr.toString(16)}, +${len}) overlaps the registered region [0x${clash.addr.toString(16)}, +${clash.len})`,
      );
    }
    const key: (number | bigint)[] = [0];
    const out: (bigint | null)[] = [null];
    check(this.#native.mrRegister(handle, addr, len, key, out), `registering ${len} bytes`);
    const region = new MemoryRegion({
      owner: this,
      addr,
      len,
      key: toBigInt(key[0]!),
      handle: out[0] as MrHandle,
      keepAlive,
      view,
    });
    this.#regions.insert(region);
    this.#sequence++;
    this.#exchange.localChanged();
    return region;
  }

  /** @internal Use region.deregister(). */
  deregister(region: MemoryRegion): void {
    if (!region.registered) return;
    if (region.inUse > 0) {
      throw new NotAllowedError(`region is used by ${region.inUse} transfer(s) in flight; wait for them first`);
    }
    if (!this.#regions.remove(region)) throw new NotFoundError('region is not registered with this agent');
    region.markDeregistered();
    this.#sequence++;
    this.#exchange.localChanged();
    if (this.#handle) check(this.#native.mrDeregister(region.handle), 'deregistering memory');
    const owned = this.#owned.get(region);
    if (owned !== undefined) {
      this.#owned.delete(region);
      this.#native.memFree(owned);
    }
  }

  /** Registered regions, in address order. */
  get regions(): readonly MemoryRegion[] {
    return this.#regions.values();
  }

  // ---- metadata -----------------------------------------------------------

  /** This agent's metadata for peers: all regions, or `regions` only (partial). */
  getLocalMetadata(options: MetadataOptions = {}): Uint8Array {
    this.#h();
    const opts = parse(MetadataOptionsSchema, options, 'metadata options');
    const chosen = opts.regions ?? this.#regions.values();
    for (const r of chosen) {
      if (!(r instanceof MemoryRegion) || !this.#regions.values().includes(r)) {
        throw new NotFoundError('getLocalMetadata: a region is not registered with this agent');
      }
    }
    const regions = [...(chosen as MemoryRegion[])].sort((a, b) => a.addr - b.addr);
    const md: Metadata = {
      name: this.name,
      instance: this.#instance,
      sequence: this.#sequence,
      provider: this.provider,
      mrModeBits: this.providerInfo.mrModeBits,
      ...(opts.includeConnection ? { address: this.address } : {}),
      complete: opts.regions === undefined,
      regions: regions.map((r) => ({ addr: r.addr, len: r.len, key: r.key, devId: r.devId, kind: 0 })),
    };
    return encodeMetadata(md);
  }

  /**
   * Loads a peer's metadata (untrusted: malformed blobs are ERR_INVALID_PARAM)
   * and returns its name. Newer metadata of a known peer replaces the old; a
   * new instance or address makes transfers built on the old one fail with
   * ERR_NOT_FOUND. Partial metadata adds regions to a known peer.
   */
  loadRemoteMetadata(blob: Uint8Array): string {
    const handle = this.#h();
    const md = decodeMetadata(blob);
    if (md.provider !== this.provider) {
      throw new InvalidParamError(`peer '${md.name}' uses provider '${md.provider}', this agent '${this.provider}'`);
    }
    if (md.name === this.name && md.instance !== this.#instance) {
      throw new InvalidParamError(`peer name '${md.name}' is this agent's own name`);
    }
    const existing = this.#peers.get(md.name);
    if (existing && existing.instance === md.instance && md.sequence < existing.sequence) {
      throw new InvalidParamError(`metadata of '${md.name}' is older than what is loaded`);
    }
    const sameEndpoint =
      existing && existing.instance === md.instance && (!md.address || Buffer.from(md.address).equals(existing.address));
    if (sameEndpoint) {
      existing.sequence = md.sequence;
      existing.setRegions(md.regions, md.complete);
      return md.name;
    }
    if (!md.address) {
      throw new NotFoundError(`metadata of unknown peer '${md.name}' has no connection information`);
    }
    this.#checkAddress(md.address, md.name);
    const fiAddr: (number | bigint)[] = [0];
    check(this.#native.peerInsert(handle, md.address, md.address.length, fiAddr), `adding peer '${md.name}'`);
    if (existing) {
      this.#dropPeer(existing);
      // That instance is gone for good: its standalone-notification count with it.
      if (existing.instance !== md.instance) this.#notifySeq.delete(existing.instance);
    }
    const peer = new Peer({
      name: md.name,
      instance: md.instance,
      sequence: md.sequence,
      fiAddr: fiAddr[0]!,
      address: md.address,
      virtAddr: (md.mrModeBits & FI_MR_VIRT_ADDR) !== 0,
    });
    if (existing) peer.generation = existing.generation + 1;
    peer.setRegions(md.regions, true);
    this.#peers.set(md.name, peer);
    return md.name;
  }

  /** A peer address must have our own address's size and family (same provider). */
  #checkAddress(addr: Uint8Array, name: string): void {
    const own = this.address;
    const sockaddr = own.length >= 16 && (own[0] === 2 || own[0] === 10) && own[1] === 0;
    if (sockaddr ? addr.length < 16 || addr[1] !== 0 || (addr[0] !== 2 && addr[0] !== 10) : addr.length !== own.length) {
      throw new InvalidParamError(`invalid metadata: address of '${name}' is not a ${this.provider} address`);
    }
  }

  #dropPeer(peer: Peer): void {
    peer.invalidate();
    if (this.#handle && peer.name !== this.name) {
      check(this.#native.peerRemove(this.#handle, peer.fiAddr), `removing peer '${peer.name}'`);
    }
  }

  /** Forgets a peer: its transfers not yet posted fail, new ones get ERR_NOT_FOUND. */
  invalidateRemote(peer: string): void {
    this.#h();
    const p = this.#peers.get(peer);
    if (!p) throw new NotFoundError(`unknown peer '${peer}'`);
    this.#peers.delete(peer);
    this.#dropPeer(p);
    check(this.#native.notifForget(this.#h(), peer), `forgetting notifications of '${peer}'`);
  }

  /** Names of loaded peers. */
  get peers(): string[] {
    return [...this.#peers.keys()];
  }

  /** Whether every descriptor lies in a region of the peer's loaded metadata. */
  checkRemote(peer: string, descriptors: Descriptor[]): boolean {
    const p = this.#peers.get(peer);
    if (!p) return false;
    const descs = parseDescriptors(descriptors, 'descriptors');
    return descs.every((d) => p.regions.find(d.addr, d.len) !== undefined);
  }

  // ---- transfers -----------------------------------------------------------

  #peer(name: string): Peer {
    const p = this.#peers.get(name);
    if (!p) throw new NotFoundError(`unknown peer '${name}': load its metadata first`);
    return p;
  }

  #localRegions(descs: readonly ParsedDescriptor[], what: string): MemoryRegion[] {
    return descs.map((d, i) => {
      const r = this.#regions.find(d.addr, d.len);
      if (!r) throw new NotFoundError(`${what}[${i}] [0x${d.addr.toString(16)}, +${d.len}) is not in registered memory`);
      return r;
    });
  }

  #remoteRegions(peer: Peer, descs: readonly ParsedDescriptor[], what: string): RemoteRegion[] {
    return descs.map((d, i) => {
      const r = peer.regions.find(d.addr, d.len);
      if (!r) {
        throw new NotFoundError(
          `${what}[${i}] [0x${d.addr.toString(16)}, +${d.len}) is not in memory '${peer.name}' registered`,
        );
      }
      return r;
    });
  }

  #build(
    op: Op,
    peer: Peer,
    generation: number,
    local: readonly ParsedDescriptor[],
    localRegions: MemoryRegion[],
    remote: readonly ParsedDescriptor[],
    remoteRegions: RemoteRegion[],
    notification: NotificationBody | undefined,
  ): Transfer {
    if (local.length !== remote.length) {
      throw new MismatchError(`${local.length} local descriptors but ${remote.length} remote ones`);
    }
    let bytes = 0;
    const entries = local.map((l, i) => {
      const r = remote[i]!;
      if (l.len !== r.len) throw new MismatchError(`descriptor ${i}: local length ${l.len}, remote length ${r.len}`);
      bytes += l.len;
      const rr = remoteRegions[i]!;
      return {
        laddr: l.addr,
        len: l.len,
        mr: localRegions[i]!.handle as bigint,
        raddr: peer.virtAddr ? r.addr : r.addr - rr.addr,
        key: rr.key,
      };
    });
    return new Transfer(this, {
      op,
      peer,
      generation,
      localRegions: [...new Set(localRegions)],
      remoteRegions: [...new Set(remoteRegions)],
      pairs: packPairs(entries),
      count: entries.length,
      bytes,
      notification: notification === undefined ? undefined : parseNotificationBody(notification),
    });
  }

  /**
   * A transfer between local and remote descriptor lists, paired one to one
   * with equal lengths. Every descriptor must lie in registered memory on its
   * side. Call post() (or run()) to start it.
   */
  createTransfer(request: TransferRequest): Transfer {
    this.#h();
    const req = parse(TransferRequestSchema, request, 'transfer');
    const local = parseDescriptors(req.local, 'transfer.local');
    const remote = parseDescriptors(req.remote, 'transfer.remote');
    const peer = this.#peer(req.peer);
    if (local.length !== remote.length) {
      throw new MismatchError(`${local.length} local descriptors but ${remote.length} remote ones`);
    }
    return this.#build(
      req.op,
      peer,
      peer.generation,
      local,
      this.#localRegions(local, 'local'),
      remote,
      this.#remoteRegions(peer, remote, 'remote'),
      req.notification,
    );
  }

  /** Validates local descriptors once, for makeTransfer. */
  prepareLocal(descriptors: Descriptor[]): PreparedLocal {
    this.#h();
    const descs = parseDescriptors(descriptors, 'local descriptors');
    return new PreparedLocal(descs, this.#localRegions(descs, 'local'));
  }

  /** Validates a peer's descriptors once, for makeTransfer. */
  prepareRemote(peer: string, descriptors: Descriptor[]): PreparedRemote {
    this.#h();
    const p = this.#peer(peer);
    const descs = parseDescriptors(descriptors, 'remote descriptors');
    return new PreparedRemote(peer, descs, this.#remoteRegions(p, descs, 'remote'), p, p.generation);
  }

  /** A transfer of the chosen entries of prepared lists (like NIXL's makeXferReq). */
  makeTransfer(
    op: Op,
    local: PreparedLocal,
    localIndices: number[],
    remote: PreparedRemote,
    remoteIndices: number[],
    options: { notification?: NotificationBody } = {},
  ): Transfer {
    this.#h();
    parse(OpSchema, op, 'op');
    const li = parseIndices(localIndices, 'localIndices');
    const ri = parseIndices(remoteIndices, 'remoteIndices');
    if (li.length !== ri.length) throw new MismatchError(`${li.length} local indices but ${ri.length} remote ones`);
    const pick = <T>(list: readonly T[], idx: number[], what: string): T[] =>
      idx.map((i) => {
        if (i >= list.length) throw new InvalidParamError(`${what} index ${i} is outside the prepared list of ${list.length}`);
        return list[i]!;
      });
    return this.#build(
      op,
      remote.peerRef,
      remote.generation,
      pick(local.descs, li, 'local'),
      pick(local.regions, li, 'local'),
      pick(remote.descs, ri, 'remote'),
      pick(remote.regions, ri, 'remote'),
      options.notification,
    );
  }

  /** Number of transfers in flight. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /** @internal TransferHost */
  postNative(
    transfer: Transfer,
    op: Op,
    peer: Peer,
    pairs: Uint8Array,
    count: number,
    notification: Uint8Array | undefined,
  ): number {
    const handle = this.#h();
    const id = this.#nextId++;
    check(
      this.#native.xferPost(
        handle,
        op === 'WRITE' ? OP_WRITE : OP_READ,
        peer.fiAddr,
        pairs,
        count,
        id,
        notification ?? null,
        notification?.length ?? 0,
        notification ? POST_NOTIFY : 0,
      ),
      `posting ${op} to '${peer.name}'`,
    );
    this.#track(id, transfer);
    return id;
  }

  #track(id: number, c: Completion): void {
    this.#inflight.set(id, c);
    if (this.#inflight.size === 1) this.#updateRef();
  }

  /** Pending work and waiting consumers keep the process alive; an idle agent does not. */
  #updateRef(): void {
    if (this.#inflight.size > 0 || this.#inbox.waiting > 0) this.#events.ref();
    else this.#events.unref();
  }

  // ---- notifications -------------------------------------------------------

  /**
   * Sends a notification to a peer, of any size (fragmented and reassembled).
   * Standalone notifications to one peer are delivered in the order sent.
   * Resolves once it is sent; timeoutMs and signal stop what is not yet sent.
   */
  async notify(peer: string, message: NotificationBody, options: WaitOptions = {}): Promise<void> {
    const wait = parse(WaitOptionsSchema, options, 'notify options');
    const handle = this.#h();
    const p = this.#peer(peer);
    const bytes = parseNotificationBody(message);
    const seq = (this.#notifySeq.get(p.instance) ?? 0) + 1;
    const id = this.#nextId++;
    check(this.#native.notify(handle, p.fiAddr, bytes, bytes.length, seq, id), `notifying '${peer}'`);
    this.#notifySeq.set(p.instance, seq);
    const send = new NotifySend(peer, bytes.length, (code) => this.cancelNative(id, code), (s, e) => this.describeError(s, e));
    this.#track(id, send);
    return send.wait(wait, this.defaultTimeoutMs);
  }

  /**
   * Every incoming notification as it arrives (each goes to one consumer).
   * Ends when the agent closes or `signal` aborts.
   */
  notifications(options: { signal?: AbortSignal } = {}): AsyncGenerator<Notification, void, undefined> {
    this.#h();
    return this.#inbox.iterate(parse(IterateOptionsSchema, options, 'notifications options').signal);
  }

  /** Takes the notifications received and not yet consumed, grouped by sender. */
  getNotifications(): Map<string, Notification[]> {
    return this.#inbox.drain();
  }

  /**
   * The first notification (from `peer`, if given) whose bytes start with
   * `match` (text or bytes) or satisfy it (a predicate); waits for one if
   * none is queued. ERR_TIMEOUT after timeoutMs, ERR_CANCELED on abort.
   */
  async waitForNotification(options: WaitForNotificationOptions = {}): Promise<Notification> {
    this.#h();
    return this.#inbox.wait(options);
  }

  get notificationStats(): NotificationStats {
    const h = this.#handle;
    return {
      ...this.#notifStats,
      malformed: h ? Number(this.#native.notifMalformed(h)) : 0,
      pendingBytes: h ? Number(this.#native.notifPending(h)) : 0,
    };
  }

  #received(addr: number): void {
    const n = takeNotification(this.#native, addr);
    if (n.data) {
      this.#notifStats.received++;
      this.#inbox.push(new Notification(n.sender, n.data));
      return;
    }
    this.#notifStats.dropped++;
    const err: IxferError & { peer?: string; bytes?: number } = makeError(
      codeOfStatus(n.status),
      `a notification of ${n.len} bytes from '${n.sender}' was dropped: ` +
        (codeOfStatus(n.status) === 'ERR_NOT_ALLOWED'
          ? 'it exceeds the pending limit for one peer (notifications.maxPendingBytesPerPeer)'
          : 'its data or its remaining fragments did not arrive within notifications.staleMs'),
    );
    err.peer = n.sender;
    err.bytes = n.len;
    // Not from inside the drain: a throwing listener must not cost other events.
    queueMicrotask(() => this.emit('notification-dropped', err));
  }

  /** @internal TransferHost */
  cancelNative(id: number, code: GiveUpCode): void {
    if (this.#handle && this.#inflight.has(id)) this.#native.xferCancel(this.#handle, id, statusOf(code));
  }

  /** @internal TransferHost */
  describeError(status: number, fiErrno: number): string {
    if (fiErrno) return `${this.#native.fabricStrerror(fiErrno)} (provider error ${fiErrno})`;
    const code = codeOfStatus(status);
    if (code === 'ERR_TIMEOUT') return 'timed out';
    if (code === 'ERR_CANCELED') return 'canceled';
    if (code === 'ERR_REMOTE_DISCONNECT') return 'the peer was removed (invalidated or reloaded)';
    return code;
  }

  #drain(): void {
    if (!this.#handle) return;
    const buf = this.#eventBuf;
    for (;;) {
      const n = this.#native.agentDrain(this.#handle, buf, DRAIN_BATCH);
      for (let i = 0; i < n; i++) {
        const o = i * EVENT_BYTES;
        const id = buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * 2 ** 32;
        const type = buf.readUInt32LE(o + 8);
        if (type === EVENT_NOTIF) {
          this.#received(id);
          continue;
        }
        if (type !== EVENT_XFER_DONE) continue;
        const transfer = this.#inflight.get(id);
        if (!transfer) continue;
        this.#inflight.delete(id);
        transfer.complete(buf.readInt32LE(o + 12), buf.readInt32LE(o + 16), buf.readUInt32LE(o + 20));
      }
      if (n < DRAIN_BATCH) break;
    }
    if (this.#inflight.size === 0) this.#updateRef();
  }

  // ---- files and VRAM (lib/files.ts) ------------------------------------------

  #fileEngine(): FileEngine {
    this.#h();
    this.#files ??= new FileEngine({
      native: this.#native,
      agent: () => this.#h(),
      defaultTimeoutMs: this.defaultTimeoutMs,
      options: this.#fileOptions,
      findDram: (addr, len) => this.#regions.find(addr, len),
      track: (c, post) => {
        const id = this.#nextId++;
        post(id);
        this.#track(id, c);
        return id;
      },
    });
    return this.#files;
  }

  /**
   * Registers a file for file transfers: a path (opened for reading and
   * writing, created when missing, unless options say otherwise; O_DIRECT
   * with `direct`), or an open descriptor that stays the caller's.
   */
  registerFile(source: string | number, options?: FileOpenOptions): FileRegion {
    return this.#fileEngine().registerFile(source, options);
  }

  /** @internal An anonymous memory file (BlockStore's host memory pool). */
  memoryFile(name: string): FileRegion {
    return this.#fileEngine().memoryFile(name);
  }

  /** A transfer between memory (DRAM or VRAM) and files: WRITE = memory to file, READ = file to memory. */
  createFileTransfer(request: FileTransferRequest): FileTransfer {
    return this.#fileEngine().createTransfer(request);
  }

  /** Allocates CUDA device memory, registered for file transfers; freed when deregistered. */
  allocateVram(bytes: number, devId = 0): MemoryRegion {
    return this.#fileEngine().allocateVram(bytes, devId);
  }

  /** Registers CUDA device memory allocated elsewhere, for file transfers. */
  registerVram(source: VramSource): MemoryRegion {
    return this.#fileEngine().registerVram(source);
  }

  // Metadata exchange: thin delegations to lib/exchange/ (TCP side channel, etcd directory).

  /** Answers peers' fetches, pushes and invalidations on a TCP listener (loopback, a free port by default); returns the bound address. */
  async listen(options?: ListenOptions): Promise<SocketAddress> {
    this.#h();
    return this.#exchange.listen(options);
  }

  /** Pushes our metadata to a peer's listener, which loads it; without an address, (re)publishes it to etcd. */
  async sendLocalMetadata(to?: PeerAddress, options?: WaitOptions): Promise<void> {
    this.#h();
    return this.#exchange.send(to, options);
  }

  /** Loads a peer's metadata from its listener, or from etcd by name (waiting until it appears); returns the peer's name. */
  async fetchRemoteMetadata(from: string | PeerAddress, options?: WaitOptions): Promise<string> {
    this.#h();
    return this.#exchange.fetch(from, options);
  }

  /** Tells peers to drop our metadata: the listeners in `to` and those we sent it to; withdraws our etcd entry. */
  async invalidateLocalMetadata(options?: InvalidateOptions): Promise<void> {
    this.#h();
    return this.#exchange.invalidate(options);
  }

  /** Counters of the exchange: frames served and refused, etcd writes. */
  get exchangeStats(): ExchangeStats {
    return { ...this.#exchange.stats };
  }

  // ---- lifetime ------------------------------------------------------------

  /**
   * Closes the endpoint. Transfers in flight end with ERR_CANCELED; memory the
   * agent allocated is freed; registrations end.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true; // refuses new work from here on
    await this.#exchange.close(); // before the endpoint goes: our etcd entry is removed first
    const handle = this.#handle!;
    this.#handle = undefined;
    this.#files?.close(); // its threads push events to the agent: stop them first
    this.#native.agentDestroy(handle); // joins the progress thread; closes every registration
    this.#events.destroy();
    const inflight = [...this.#inflight.values()];
    this.#inflight.clear();
    for (const t of inflight) t.abandon();
    this.#inbox.close(new NotAllowedError(`agent '${this.name}' is closed`));
    for (const region of [...this.#regions.values()]) region.markDeregistered();
    this.#regions.clear();
    for (const addr of this.#owned.values()) this.#native.memFree(addr);
    this.#owned.clear();
    for (const p of this.#peers.values()) p.invalidate();
    this.#peers.clear();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
