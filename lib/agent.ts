/**
 * An agent: the front door. It validates what callers pass, then routes
 * each call by memory kind and target kind (as NIXL's agent routes memory
 * segments to backends): host memory and peers to the network engine
 * (net/), device memory to gpu/, files to the file engine (file/), metadata
 * exchange to exchange/. Every engine reports to one event pump
 * (core/completions), so completion is awaited, never polled.
 */
import { EventEmitter } from 'node:events';

import { Completions } from './core/completions.js';
import type { MemoryRegion, MemorySource } from './core/memory.js';
import { debug, Telemetry } from './core/telemetry.js';
import type { Transfer } from './core/transfer.js';
import { NotAllowedError, NotFoundError } from './errors.js';
import type { ExchangeHost, ExchangeStats, PeerEvent } from './exchange/context.js';
import { MetadataExchange } from './exchange/exchange.js';
import type { SocketAddress } from './exchange/tcp-channel.js';
import { FileEngine, type FileTransfer } from './file/engine.js';
import type { FileRegion } from './file/region.js';
import type { FileOpenOptions, FileTransferRequest } from './file/schemas.js';
import { VramRegions, type VramSource } from './gpu/vram.js';
import { shim } from './native/shim.js';
import { Endpoint, type RailStatus } from './net/endpoint.js';
import { NetEngine, type RailEvent, type StagingStats } from './net/engine.js';
import type { Notification, WaitForNotificationOptions } from './net/inbox.js';
import type { NotificationDroppedError, NotificationStats } from './net/notifications.js';
import type { RemoteRegionInfo } from './net/peers.js';
import type { PreparedLocal, PreparedRemote } from './net/prepared.js';
import type { ProviderSummary } from './net/providers.js';
import {
  AgentOptionsSchema,
  AllocateVramOptionsSchema,
  IterateOptionsSchema,
  MakeTransferOptionsSchema,
  MetadataOptionsSchema,
  OpSchema,
  parse,
  descriptorColumns,
  parseIndices,
  RegionOptionsSchema,
  TransferRequestSchema,
  VramRegionOptionsSchema,
  WaitOptionsSchema,
  type AgentOptions,
  type AllocateVramOptions,
  type DescriptorList,
  type FileEngineOptions,
  type InvalidateOptions,
  type ListenOptions,
  type MetadataOptions,
  type NotificationBody,
  type Op,
  type PeerAddress,
  type RegionOptions,
  type TransferRequest,
  type VramRegionOptions,
  type WaitOptions,
} from './schemas.js';

type AgentOptionsParsed = ReturnType<typeof AgentOptionsSchema.parse>;

/**
 * The agent's events and their listeners' arguments: `agent.on('peer', (e) => ...)`.
 * - 'notification-dropped' (err: IxferError with `peer` and `bytes`): an
 *   incoming notification was dropped, ERR_NOT_ALLOWED when it exceeded
 *   maxPendingBytesPerPeer, ERR_TIMEOUT when it stalled for staleMs.
 * - 'peer' (PeerEvent): the metadata exchange loaded or dropped a peer, or
 *   one was dropped to stay within metadata.maxPeers (via 'limit').
 * - 'rail' (RailEvent): a rail went out of use after a connection error, or came back.
 */
export interface AgentEvents {
  'notification-dropped': [err: NotificationDroppedError];
  peer: [event: PeerEvent];
  rail: [event: RailEvent];
}

export class Agent extends EventEmitter<AgentEvents> implements ExchangeHost, AsyncDisposable {
  readonly name: string;
  /** Core provider name in use ('tcp', 'efa', ...). */
  readonly provider: string;
  /** What the opened endpoint offers. */
  readonly providerInfo: ProviderSummary;
  /** The endpoint's fabric address. */
  readonly address: Uint8Array;
  readonly defaultTimeoutMs: number | undefined;

  readonly #endpoint: Endpoint;
  readonly #completions: Completions;
  readonly #net: NetEngine;
  readonly #vram: VramRegions;
  #files: FileEngine | undefined;
  readonly #fileOptions: FileEngineOptions;
  readonly #exchange: MetadataExchange;
  readonly #telemetry: Telemetry;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(endpoint: Endpoint, opts: AgentOptionsParsed) {
    super();
    this.#endpoint = endpoint;
    this.name = endpoint.name;
    this.provider = endpoint.provider;
    this.providerInfo = endpoint.info;
    this.address = endpoint.address;
    this.defaultTimeoutMs = opts.transferTimeoutMs;
    const telemetry = (this.#telemetry = new Telemetry(this.name));
    const completions = new Completions(shim(), endpoint.handle(), endpoint.eventFd, () => net.notifications.inbox.waiting > 0);
    const net = new NetEngine({
      endpoint,
      completions,
      telemetry,
      defaultTimeoutMs: this.defaultTimeoutMs,
      changed: () => this.#exchange.localChanged(),
      dropped: (err) => this.emit('notification-dropped', err),
      rail: (e) => this.emit('rail', e),
      maxRegionsPerPeer: opts.metadata.maxRegionsPerPeer,
      maxPeers: opts.metadata.maxPeers,
      evicted: (name) => queueMicrotask(() => this.emit('peer', { name, action: 'dropped', via: 'limit' })),
      inbox: opts.notifications,
    });
    this.#completions = completions;
    this.#net = net;
    this.#vram = new VramRegions(endpoint, net, (region) => this.#files?.forgetBuffer(region));
    this.#fileOptions = opts.files;
    this.#exchange = new MetadataExchange(this, opts.metadata);
  }

  /** Opens an endpoint (its rails). Binds to loopback unless `iface`, `address` or `rails` say otherwise; IXFER_PROVIDER stands in for `provider: 'auto'`. */
  static async create(options: AgentOptions): Promise<Agent> {
    const opts = parse(AgentOptionsSchema, options, 'agent options');
    const endpoint = Endpoint.open(opts);
    let agent: Agent;
    try {
      agent = new Agent(endpoint, opts);
    } catch (err) {
      await endpoint.destroy();
      throw err;
    }
    await agent.#start(opts.metrics).catch(async (err: unknown) => {
      await agent.close();
      throw err;
    });
    debug('agent %s: open on %s', agent.name, agent.provider);
    return agent;
  }

  async #start(metrics: AgentOptionsParsed['metrics']): Promise<void> {
    if (metrics) {
      const { createMetrics } = await import('./metrics.js'); // loads prom-client: only when asked
      const memoryBytes = () => this.regions.reduce((sum, r) => sum + r.len, 0);
      this.#telemetry.metrics = await createMetrics(metrics, this.name, { memoryBytes, staging: () => this.#net.stagingStats(), rails: () => this.rails });
    }
    // Joins etcd when configured: peers can find the agent once create() resolves.
    await this.#exchange.start();
  }

  /** Refuses new work once close() has begun. */
  #open(): void {
    if (this.#closed) throw new NotAllowedError(`agent '${this.name}' is closed`);
  }

  // ---- memory: host memory to the network engine, device memory to gpu/ ------

  /** Registers memory for transfers: a Buffer, TypedArray or ArrayBuffer (kept alive while registered), or native memory as {addr, len}. */
  registerMemory(source: MemorySource, options: RegionOptions = {}): MemoryRegion {
    this.#open();
    return this.#net.registerMemory(source, parse(RegionOptionsSchema, options, 'region options').name);
  }

  /** Allocates page-aligned, zeroed native memory, registered; freed when deregistered. */
  allocate(bytes: number, options: RegionOptions = {}): MemoryRegion {
    this.#open();
    return this.#net.allocate(bytes, parse(RegionOptionsSchema, options, 'region options').name);
  }

  /** Registered host memory regions, in address order. */
  get regions(): readonly MemoryRegion[] {
    return this.#net.memory.values();
  }

  /** Allocates CUDA device memory (device `devId`, default 0) for network and file transfers; freed when deregistered. */
  allocateVram(bytes: number, options: number | AllocateVramOptions = {}): MemoryRegion {
    this.#open();
    const opts = typeof options === 'number' ? { devId: options } : options;
    return this.#vram.allocate(bytes, parse(AllocateVramOptionsSchema, opts, 'allocateVram options'));
  }

  /** Registers CUDA device memory allocated elsewhere, for network and file transfers. */
  registerVram(source: VramSource, options: VramRegionOptions = {}): MemoryRegion {
    this.#open();
    return this.#vram.register(source, parse(VramRegionOptionsSchema, options, 'registerVram options'));
  }

  /** The staging pool of VRAM transfers that the provider cannot reach (all zero until first used). */
  get stagingStats(): StagingStats {
    return this.#net.stagingStats();
  }

  // ---- metadata and peers ----------------------------------------------------

  /** This agent's metadata for peers: all regions, or `regions` only (partial). */
  getLocalMetadata(options: MetadataOptions = {}): Uint8Array {
    this.#open();
    const opts = parse(MetadataOptionsSchema, options, 'metadata options');
    return this.#net.localMetadata(opts.regions, opts.includeConnection);
  }

  /**
   * Loads a peer's metadata (untrusted: malformed blobs are ERR_INVALID_PARAM)
   * and returns its name. Newer metadata of a known peer replaces the old; a
   * new instance or address makes transfers built on the old one fail with
   * ERR_NOT_FOUND. Partial metadata adds regions to a known peer.
   */
  loadRemoteMetadata(blob: Uint8Array): string {
    this.#open();
    const name = this.#net.peers.load(blob);
    this.#telemetry.peer(name, 'loaded');
    return name;
  }

  /** Forgets a peer: its transfers not yet posted fail, new ones get ERR_NOT_FOUND. */
  invalidateRemote(peer: string): void {
    this.#open();
    this.#net.peers.invalidate(peer);
    this.#telemetry.peer(peer, 'dropped');
  }

  /** Names of loaded peers. */
  get peers(): string[] {
    return this.#net.peers.names;
  }

  /** A loaded peer's regions, from its metadata, in address order (ERR_NOT_FOUND for an unknown peer). */
  remoteRegions(peer: string): RemoteRegionInfo[] {
    this.#open();
    return this.#net.peers.describe(peer);
  }

  /** A loaded peer's region named `name` at registration; ERR_NOT_FOUND when it has none of that name. */
  remoteRegion(peer: string, name: string): RemoteRegionInfo {
    const found = this.remoteRegions(peer).find((r) => r.name === name);
    if (!found) throw new NotFoundError(`peer '${peer}' has no region named '${name}' in its loaded metadata`);
    return found;
  }

  /**
   * Sets up the connection to a loaded peer now rather than on the first
   * transfer (NIXL's make_connection). Needs a region in the peer's metadata.
   * ERR_TIMEOUT after timeoutMs (default: the agent's transferTimeoutMs).
   */
  async connect(peer: string, options: WaitOptions = {}): Promise<void> {
    const wait = parse(WaitOptionsSchema, options, 'connect options');
    this.#open();
    await this.#net.connect(peer, wait);
    debug('agent %s: connected to %s', this.name, peer);
  }

  /** Whether every descriptor lies in a region of the peer's loaded metadata. */
  checkRemote(peer: string, descriptors: DescriptorList): boolean {
    this.#open();
    return this.#net.peers.holds(peer, descriptors);
  }

  // ---- network transfers -------------------------------------------------------

  /**
   * A transfer between local and remote descriptor lists, paired one to one
   * with equal lengths. Every descriptor must lie in registered memory on its
   * side. Call post() (or run()) to start it.
   */
  createTransfer(request: TransferRequest): Transfer {
    this.#open();
    const req = parse(TransferRequestSchema, request, 'transfer');
    const local = descriptorColumns(req.local, 'transfer.local');
    const remote = descriptorColumns(req.remote, 'transfer.remote');
    return this.#net.transfer(req.op, req.peer, local, remote, req.notification);
  }

  /** Validates local descriptors once, for makeTransfer. */
  prepareLocal(descriptors: DescriptorList): PreparedLocal {
    this.#open();
    return this.#net.prepareLocal(descriptorColumns(descriptors, 'local descriptors', true));
  }

  /** Validates a peer's descriptors once, for makeTransfer. */
  prepareRemote(peer: string, descriptors: DescriptorList): PreparedRemote {
    this.#open();
    return this.#net.prepareRemote(peer, descriptorColumns(descriptors, 'remote descriptors', true));
  }

  /** A transfer of the chosen entries of prepared lists (like NIXL's makeXferReq). */
  makeTransfer(
    op: Op,
    local: PreparedLocal,
    localIndices: number[] | Uint32Array,
    remote: PreparedRemote,
    remoteIndices: number[] | Uint32Array,
    options: { notification?: NotificationBody } = {},
  ): Transfer {
    this.#open();
    parse(OpSchema, op, 'op');
    const { notification } = parse(MakeTransferOptionsSchema, options, 'makeTransfer options');
    const li = parseIndices(localIndices, 'localIndices');
    const ri = parseIndices(remoteIndices, 'remoteIndices');
    return this.#net.makeTransfer(op, local, li, remote, ri, notification);
  }

  /** Number of transfers (network and file) and standalone notifications in flight. */
  get inflight(): number {
    return this.#completions.size;
  }

  // ---- notifications -------------------------------------------------------

  /**
   * Sends a notification to a peer, of any size (fragmented and reassembled).
   * Standalone notifications to one peer are delivered in the order sent.
   * Resolves once it is sent; timeoutMs and signal stop what is not yet sent.
   */
  async notify(peer: string, message: NotificationBody, options: WaitOptions = {}): Promise<void> {
    const wait = parse(WaitOptionsSchema, options, 'notify options');
    this.#open();
    return this.#net.notify(peer, message, wait);
  }

  /**
   * Every incoming notification as it arrives (each goes to one consumer).
   * Ends when the agent closes or `signal` aborts.
   */
  notifications(options: { signal?: AbortSignal } = {}): AsyncGenerator<Notification, void, undefined> {
    this.#open();
    return this.#net.notifications.inbox.iterate(parse(IterateOptionsSchema, options, 'notifications options').signal);
  }

  /** Takes the notifications received and not yet consumed, grouped by sender. */
  getNotifications(): Map<string, Notification[]> {
    return this.#net.notifications.inbox.drain();
  }

  /**
   * The first notification (from `peer`, if given) whose bytes start with
   * `match` (text or bytes) or satisfy it (a predicate); waits for one if
   * none is queued. ERR_TIMEOUT after timeoutMs, ERR_CANCELED on abort.
   */
  async waitForNotification(options: WaitForNotificationOptions = {}): Promise<Notification> {
    this.#open();
    return this.#net.notifications.inbox.wait(options);
  }

  /** Each rail (rail 0 first): its interface (libfabric domain), fabric, and the ops and bytes it carried. */
  get rails(): RailStatus[] {
    return this.#endpoint.railStatus();
  }

  get notificationStats(): NotificationStats {
    return this.#net.notifications.stats;
  }

  // ---- files (the file engine, started on first use) -------------------------

  #fileEngine(): FileEngine {
    this.#open();
    this.#files ??= new FileEngine({
      agent: () => this.#endpoint.handle(),
      completions: this.#completions,
      telemetry: this.#telemetry,
      defaultTimeoutMs: this.defaultTimeoutMs,
      options: this.#fileOptions,
      findMemory: (addr, len) => this.#net.memory.find(addr, len) ?? this.#vram.memory.find(addr, len),
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

  // ---- metadata exchange (exchange/: TCP side channel, etcd directory) -----------

  /** Answers peers' fetches, pushes and invalidations on a TCP listener (loopback, a free port by default); returns the bound address. */
  async listen(options?: ListenOptions): Promise<SocketAddress> {
    this.#open();
    return this.#exchange.listen(options);
  }

  /** Pushes our metadata to a peer's listener, which loads it; without an address, (re)publishes it to etcd. */
  async sendLocalMetadata(to?: PeerAddress, options?: WaitOptions): Promise<void> {
    this.#open();
    return this.#exchange.send(to, options);
  }

  /** Loads a peer's metadata from its listener, or from etcd by name (waiting until it appears); returns the peer's name. */
  async fetchRemoteMetadata(from: string | PeerAddress, options?: WaitOptions): Promise<string> {
    this.#open();
    return this.#exchange.fetch(from, options);
  }

  /** Tells peers to drop our metadata: the listeners in `to` and those we sent it to; withdraws our etcd entry. */
  async invalidateLocalMetadata(options?: InvalidateOptions): Promise<void> {
    this.#open();
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
    await this.#files?.close(); // its threads report to the endpoint's queue: stop them first
    this.#completions.detach(); // the shim writes events until it is gone: the descriptor stays open
    await this.#endpoint.destroy(); // joins the progress thread; closes every registration
    this.#completions.close(); // what was in flight ends as canceled
    this.#net.notifications.inbox.close(new NotAllowedError(`agent '${this.name}' is closed`));
    this.#net.close();
    this.#vram.close();
    this.#telemetry.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
