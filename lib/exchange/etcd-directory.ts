/**
 * etcd as a directory of agents. Each agent keeps its metadata at
 * `${namespace}/${name}` under a lease (kept alive by the client: a crashed
 * agent's entry expires after the TTL), rewrites it when its registrations
 * change, and watches the namespace: peers it follows are reloaded when their
 * entry changes and dropped when it goes away.
 *
 * Nothing here is a barrier: fetching a peer that never publishes fails that
 * fetch with ERR_TIMEOUT and nothing else.
 */
import { Etcd3, GRPCDeadlineExceededError, type Lease, type Watcher } from 'etcd3';

import { BackendError, CanceledError, InvalidParamError, IxferError, TimeoutError } from '../errors.js';
import { withDeadline, type Wait } from '../core/deadline.js';
import { decodeMetadata } from '../net/metadata.js';
import type { ExchangeOptionsParsed } from '../schemas.js';
import type { ExchangeContext } from './context.js';

type Waiter = (blob: Buffer) => void;
type EtcdSettings = NonNullable<ExchangeOptionsParsed['etcd']>;

/** Names followed (reloaded when their entry reappears) beyond those loaded now. */
const MAX_FOLLOWED = 4096;

/**
 * Watch reconnect delays, doubling up to `max`. etcd3's default grows to 30 s,
 * and its last retry timer outlives close(): bounded, a closed agent does not
 * hold its process for long when etcd went away.
 */
interface Backoff {
  readonly duration: number;
  next(): Backoff;
}
function backoff(duration: number, max: number): Backoff {
  return { duration, next: () => backoff(Math.min(duration * 2, max), max) };
}

export class EtcdDirectory {
  readonly #ctx: ExchangeContext;
  readonly #client: Etcd3;
  readonly #ttl: number;
  readonly #prefix: string;
  readonly #key: string;
  readonly #where: string;
  #watcher: Watcher | undefined;
  #lease: Lease | undefined;
  /** Puts run one after another so that a newer blob is never overwritten by an older one. */
  #chain: Promise<void> = Promise.resolve();
  #queued = false;
  /** Set by withdraw(): registration changes are not published until publish(). */
  #withdrawn = false;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  /** Ends the fetches still waiting when the directory closes. */
  #closing = new AbortController();
  #waiters = new Map<string, Set<Waiter>>();
  /**
   * Peers fetched from etcd, oldest first: reloaded from any new entry, even
   * after they were dropped (restarts); the oldest not loaded are forgotten
   * past MAX_FOLLOWED.
   */
  #followed = new Set<string>();

  private constructor(ctx: ExchangeContext, options: EtcdSettings) {
    this.#ctx = ctx;
    const timeoutMs = ctx.options.timeoutMs;
    this.#client = new Etcd3({
      hosts: options.endpoints,
      dialTimeout: timeoutMs,
      faultHandling: { watchBackoff: backoff(100, Math.min(timeoutMs, 2000)) },
      // Unary calls get the exchange deadline; streams (watch, keepalive) live on.
      defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    });
    this.#ttl = options.leaseTtlSec;
    this.#prefix = `${options.namespace.replace(/\/+$/, '')}/`;
    this.#key = this.#prefix + ctx.host.name;
    this.#where = `etcd at ${options.endpoints.join(', ')}`;
  }

  /** Watches the namespace, then publishes: peers can find the agent once this resolves. */
  static async open(ctx: ExchangeContext, options: EtcdSettings): Promise<EtcdDirectory> {
    const dir = new EtcdDirectory(ctx, options);
    try {
      await dir.#watch();
      await dir.publish();
      return dir;
    } catch (err) {
      await dir.close();
      throw err;
    }
  }

  async #watch(): Promise<void> {
    // Not create(): on a timeout the watcher must be at hand to cancel, or the client keeps retrying it.
    const watcher = (this.#watcher = this.#client.watch().prefix(this.#prefix).watcher());
    const nameOf = (key: Buffer) => key.toString('utf8').slice(this.#prefix.length);
    watcher.on('put', (kv) => this.#onPut(nameOf(kv.key), kv.value));
    watcher.on('delete', (kv) => this.#onDelete(nameOf(kv.key)));
    // The client reconnects the watch from its last revision by itself: one warning per outage.
    let connected = false;
    watcher.on('connected', () => (connected = true));
    watcher.on('disconnected', (err: Error) => {
      if (connected) this.#ctx.warn(`watch of ${this.#where} disconnected, reconnecting: ${err.message}`);
      connected = false;
    });
    watcher.on('error', (err: Error) => this.#ctx.warn(`watch of ${this.#where} failed: ${err.message}`));
    const what = `watching ${this.#prefix} in ${this.#where}`;
    await withDeadline<void>({ what, timeoutMs: this.#ctx.options.timeoutMs }, ({ resolve, reject }) => {
      const connected = () => resolve();
      const failed = (err: Error) => reject(this.#error(err, `watching ${this.#prefix}`));
      watcher.once('connected', connected);
      watcher.once('error', failed);
      return () => {
        watcher.off('connected', connected);
        watcher.off('error', failed);
      };
    });
  }

  #onPut(name: string, blob: Buffer): void {
    if (name === this.#ctx.host.name) return;
    const waiters = this.#waiters.get(name);
    if (waiters) {
      for (const w of waiters) w(blob);
      return;
    }
    if (!this.#followed.has(name) && !this.#ctx.host.peers.includes(name)) return;
    try {
      this.#load(name, blob);
    } catch (err) {
      this.#ctx.stats.loadFailures++;
      this.#ctx.warn(`entry ${this.#prefix}${name} in ${this.#where} not loaded: ${(err as Error).message}`);
    }
  }

  #onDelete(name: string): void {
    if (name === this.#ctx.host.name) this.republish(); // expired or deleted by someone else: not by withdraw() or close()
    else this.#ctx.drop(name, 'etcd');
  }

  /** Loads an entry, after checking that it holds the metadata of the agent its key names. */
  #load(name: string, blob: Buffer): string {
    const inBlob = decodeMetadata(blob).name;
    if (inBlob !== name) throw new InvalidParamError(`entry ${this.#prefix}${name} holds the metadata of '${inBlob}'`);
    this.#ctx.load(blob, 'etcd');
    this.#follow(name);
    return name;
  }

  #follow(name: string): void {
    this.#followed.delete(name);
    this.#followed.add(name);
    if (this.#followed.size <= MAX_FOLLOWED) return;
    const peers = new Set(this.#ctx.host.peers);
    for (const old of this.#followed) {
      if (peers.has(old)) continue;
      this.#followed.delete(old);
      return;
    }
  }

  /** Schedules a rewrite of our entry (registrations changed); many changes make one write. */
  republish(): void {
    if (this.#withdrawn || this.#closed || this.#queued) return;
    this.#queued = true;
    this.#put().catch((err: Error) => {
      this.#ctx.stats.publishFailures++;
      this.#ctx.warn(`publishing ${this.#key} to ${this.#where} failed (retrying in ${this.#ttl} s): ${err.message}`);
      this.#retry ??= setTimeout(() => {
        this.#retry = undefined;
        this.republish();
      }, this.#ttl * 1000).unref();
    });
  }

  /** Writes our entry now (and resumes publishing changes after withdraw()). */
  publish(): Promise<void> {
    this.#withdrawn = false;
    this.#queued = true;
    return this.#put();
  }

  #put(): Promise<void> {
    const run = this.#chain.then(async () => {
      this.#queued = false; // changes from here on need another write
      if (this.#closed) return;
      const blob = Buffer.from(this.#ctx.host.getLocalMetadata());
      const lease = (this.#lease ??= this.#grant());
      await lease.put(this.#key).value(blob).exec().catch((err: unknown) => {
        if (this.#lease === lease) this.#lease = undefined; // a new lease next time
        lease.release();
        throw this.#error(err, `publishing ${this.#key}`);
      });
      this.#ctx.stats.published++;
    });
    this.#chain = run.catch(() => {});
    return run;
  }

  #grant(): Lease {
    const lease = this.#client.lease(this.#ttl);
    // Keepalives failed for a whole TTL (etcd unreachable): our entry is gone; write it again.
    lease.on('lost', (err: Error) => {
      if (this.#lease !== lease || this.#closed) return;
      this.#lease = undefined;
      this.#ctx.warn(`lease of ${this.#key} in ${this.#where} lost: ${err.message}`);
      this.republish();
    });
    return lease;
  }

  /** Deletes our entry: watchers drop us. Changes are not published until publish(). */
  async withdraw(): Promise<void> {
    this.#withdrawn = true;
    await this.#chain;
    await this.#client
      .delete()
      .key(this.#key)
      .exec()
      .catch((err: unknown) => {
        throw this.#error(err, `deleting ${this.#key}`);
      });
  }

  /** Loads a peer's entry, waiting until it appears; returns its name. */
  async fetch(name: string, wait: Wait): Promise<string> {
    if (this.#closed) throw new CanceledError('the etcd directory is closed');
    const key = this.#prefix + name;
    const signal = wait.signal ? AbortSignal.any([wait.signal, this.#closing.signal]) : this.#closing.signal;
    const what = `waiting for agent '${name}' at ${key} in ${this.#where}`;
    const blob = await withDeadline<Buffer>({ what, timeoutMs: wait.timeoutMs, signal }, ({ resolve, reject }) => {
      // Waiting starts before the read, so an entry written in between is seen by the watch.
      const waiters = this.#waiters.get(name) ?? new Set<Waiter>();
      this.#waiters.set(name, waiters);
      waiters.add(resolve);
      this.#client
        .get(key)
        .buffer()
        .then(
          (current) => current && resolve(current),
          (err: unknown) => reject(this.#error(err, `reading ${key}`)),
        );
      return () => {
        waiters.delete(resolve);
        if (!waiters.size) this.#waiters.delete(name);
      };
    });
    return this.#load(name, blob);
  }

  /** etcd3's errors as ixfer's, naming the etcd endpoints. */
  #error(err: unknown, what: string): IxferError {
    if (err instanceof IxferError) return err;
    const message = (err as Error).message;
    if (err instanceof GRPCDeadlineExceededError) {
      return new TimeoutError(`${what} in ${this.#where}: no answer within ${this.#ctx.options.timeoutMs} ms`, { cause: err });
    }
    return new BackendError(`${what} in ${this.#where}: ${message}`, { cause: err, nativeMessage: message });
  }

  /** Stops watching and deletes our entry (by revoking its lease). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort();
    clearTimeout(this.#retry);
    await this.#chain;
    await this.#watcher?.cancel().catch(() => {});
    // Without an answer from etcd the lease simply expires.
    await this.#lease?.revoke().catch(() => {});
    this.#client.close();
  }
}
