/**
 * An agent's metadata exchange: the TCP side channel (listener and requests)
 * and, when configured, the etcd directory. The Agent delegates to this; it
 * owns the counters and reports loads and drops as the agent's 'peer' events.
 */
import { InvalidParamError, makeError, NotAllowedError, type IxferError } from '../errors.js';
import {
  InvalidateOptionsSchema,
  ListenOptionsSchema,
  parse,
  PeerAddressSchema,
  WaitOptionsSchema,
  type ExchangeOptionsParsed,
  type InvalidateOptions,
  type ListenOptions,
  type PeerAddress,
  type WaitOptions,
} from '../schemas.js';
import type { ExchangeContext, ExchangeHost, ExchangeStats, ExchangeVia, PeerEvent } from './context.js';
import { withDeadline, type Wait } from '../core/deadline.js';
// Type only: etcd3 (with grpc and protobufjs) is loaded by start() when metadata.etcd asks for it.
import type { EtcdDirectory } from './etcd-directory.js';
import { FrameType } from './frame.js';
import { formatAddress, isLoopback, request, TcpListener, type SocketAddress } from './tcp-channel.js';

/** The warning about a listener open to the network without a secret is given once per process. */
let warnedUnauthenticated = false;

/** Listeners remembered for invalidateLocalMetadata() (the most recent pushes). */
const MAX_SENT_TO = 1024;

export class MetadataExchange implements ExchangeContext {
  readonly host: ExchangeHost;
  readonly options: ExchangeOptionsParsed;
  readonly secret: Buffer | undefined;
  readonly stats: ExchangeStats = {
    served: 0,
    malformed: 0,
    oversized: 0,
    unauthenticated: 0,
    timedOut: 0,
    dropped: 0,
    loadFailures: 0,
    published: 0,
    publishFailures: 0,
  };
  #listener: TcpListener | undefined;
  #directory: EtcdDirectory | undefined;
  /** Listeners we pushed our metadata to, by address, oldest first: invalidateLocalMetadata() tells them. */
  #sentTo = new Map<string, SocketAddress>();

  constructor(host: ExchangeHost, options: ExchangeOptionsParsed) {
    this.host = host;
    this.options = options;
    this.secret = options.secret === undefined ? undefined : Buffer.from(options.secret);
  }

  /** Joins etcd when configured: the agent is published once this resolves. */
  async start(): Promise<void> {
    if (!this.options.etcd) return;
    const { EtcdDirectory } = await import('./etcd-directory.js');
    this.#directory = await EtcdDirectory.open(this, this.options.etcd);
  }

  // ---- ExchangeContext -------------------------------------------------------

  load(blob: Uint8Array, via: ExchangeVia): string {
    const name = this.host.loadRemoteMetadata(blob);
    this.#report({ name, action: 'loaded', via });
    return name;
  }

  drop(name: string, via: ExchangeVia): void {
    if (!this.host.peers.includes(name)) return;
    this.host.invalidateRemote(name);
    this.#report({ name, action: 'dropped', via });
  }

  /**
   * Emits 'peer' once the caller (a listener answering, a watch handler) is
   * done: a throwing listener is then an uncaught error of its own and cannot
   * turn an answer into an ERROR, or kill the socket handler.
   */
  #report(event: PeerEvent): void {
    queueMicrotask(() => this.host.emit('peer', event));
  }

  warn(message: string): void {
    process.emitWarning(message, { type: 'IxferExchangeWarning', code: 'IXFER_EXCHANGE' });
  }

  // ---- the agent's calls ---------------------------------------------------

  /** Registrations changed: rewrite our etcd entry. */
  localChanged(): void {
    this.#directory?.republish();
  }

  async listen(options: ListenOptions = {}): Promise<SocketAddress> {
    const { host, port } = parse(ListenOptionsSchema, options, 'listen options');
    if (this.#listener) throw new NotAllowedError(`agent '${this.host.name}' already listens for metadata`);
    const { listener, address } = await TcpListener.open(this, host, port);
    this.#listener = listener;
    if (!this.secret && !isLoopback(address.host) && !warnedUnauthenticated) {
      warnedUnauthenticated = true;
      this.warn(
        `agent '${this.host.name}' listens for metadata on ${formatAddress(address)}, beyond loopback, without metadata.secret: ` +
          'anyone who reaches it can load metadata under any name and invalidate any peer',
      );
    }
    return address;
  }

  #wait(options: WaitOptions): Wait {
    const w = parse(WaitOptionsSchema, options, 'wait options');
    return { timeoutMs: w.timeoutMs ?? this.options.timeoutMs, signal: w.signal };
  }

  /** Waits for an etcd write under the caller's deadline and signal; giving up does not undo the write. */
  #etcdWait(what: string, wait: Wait, write: () => Promise<void>): Promise<void> {
    return withDeadline<void>({ what, ...wait }, (settle) => {
      write().then(settle.resolve, settle.reject);
    });
  }

  async send(to: PeerAddress | undefined, options: WaitOptions = {}): Promise<void> {
    const wait = this.#wait(options);
    if (to === undefined) {
      const directory = this.#etcd('sendLocalMetadata() without an address');
      return this.#etcdWait(`publishing '${this.host.name}' to etcd`, wait, () => directory.publish());
    }
    const address = parse(PeerAddressSchema, to, 'address');
    await request(this, address, FrameType.PUSH, this.host.getLocalMetadata(), wait);
    const key = formatAddress(address);
    this.#sentTo.delete(key);
    this.#sentTo.set(key, address);
    // The oldest pushes are forgotten past the bound (their listeners keep our metadata until they drop it).
    if (this.#sentTo.size > MAX_SENT_TO) this.#sentTo.delete(this.#sentTo.keys().next().value!);
  }

  async fetch(from: string | PeerAddress, options: WaitOptions = {}): Promise<string> {
    const wait = this.#wait(options);
    if (typeof from === 'string') {
      if (!from) throw new InvalidParamError('fetchRemoteMetadata: empty peer name');
      return this.#etcd(`fetchRemoteMetadata('${from}')`).fetch(from, wait);
    }
    const address = parse(PeerAddressSchema, from, 'address');
    return this.load(await request(this, address, FrameType.FETCH, Buffer.alloc(0), wait), 'tcp');
  }

  /**
   * Tells listeners (those given and those we sent to) to drop our metadata,
   * and withdraws our etcd entry. Every one is tried; the error names those
   * that could not be told.
   */
  async invalidate(options: InvalidateOptions = {}): Promise<void> {
    const opts = parse(InvalidateOptionsSchema, options, 'invalidate options');
    const wait = this.#wait({ timeoutMs: opts.timeoutMs, signal: opts.signal });
    const targets = new Map(this.#sentTo);
    for (const a of opts.to) targets.set(formatAddress(a), a);
    const name = Buffer.from(this.host.name);
    const directory = this.#directory;
    const results = await Promise.allSettled([
      ...[...targets].map(async ([key, address]) => {
        // A refused connection: nobody listens there any more, so nothing holds our metadata to drop.
        await request(this, address, FrameType.INVALIDATE, name, wait).catch((err: IxferError) => {
          if ((err.cause as NodeJS.ErrnoException | undefined)?.code !== 'ECONNREFUSED') throw err;
        });
        this.#sentTo.delete(key);
      }),
      ...(directory ? [this.#etcdWait(`withdrawing '${this.host.name}' from etcd`, wait, () => directory.withdraw())] : []),
    ]);
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as IxferError] : []));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) {
      throw makeError(errors[0]!.code, `${errors.length} invalidations failed: ${errors.map((e) => e.message).join('; ')}`, {
        cause: errors,
      });
    }
  }

  #etcd(what: string): EtcdDirectory {
    if (!this.#directory) throw new InvalidParamError(`${what} needs the agent option metadata.etcd`);
    return this.#directory;
  }

  async close(): Promise<void> {
    await Promise.all([this.#listener?.close(), this.#directory?.close()]);
    this.#listener = undefined;
    this.#directory = undefined;
  }
}
