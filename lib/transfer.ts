/** A READ or WRITE between local and remote descriptors, posted and awaited. */
import { deadlineWait, type GiveUpCode, type Settle } from './deadline-wait.js';
import {
  codeOfStatus,
  makeError,
  NotAllowedError,
  NotFoundError,
  RepostActiveError,
  statusOf,
  type IxferError,
} from './errors.js';
import type { MemoryRegion } from './memory.js';
import { IOV_PAIR_BYTES } from './native.js';
import type { Peer } from './peers.js';
import { parseNotificationBody } from './notifications.js';
import { parse, WaitOptionsSchema, type NotificationBody, type Op, type WaitOptions } from './schemas.js';

export type TransferStatus = 'idle' | 'pending' | 'done' | 'error';

/** The far side of a transfer: a peer, or for file transfers the files. */
export type TransferPeer = Pick<Peer, 'name' | 'valid' | 'generation'>;

/** What a transfer needs from its agent; implemented by Agent. */
/** What an agent waits on: a transfer, or a standalone notification being sent. */
export interface Completion {
  complete(status: number, fiErrno: number, detail?: number): void;
  abandon(): void;
}

export interface TransferHost {
  readonly defaultTimeoutMs: number | undefined;
  postNative(
    transfer: Transfer,
    op: Op,
    peer: TransferPeer,
    pairs: Uint8Array,
    count: number,
    notification: Uint8Array | undefined,
  ): number;
  cancelNative(id: number, code: GiveUpCode): void;
  /** detail: for file transfers, the index of the descriptor that failed. */
  describeError(status: number, fiErrno: number, detail: number): string;
}

/** Local and remote sides resolved to regions, and the pairs in the shim's layout. */
export interface ResolvedTransfer {
  op: Op;
  peer: TransferPeer;
  generation: number;
  localRegions: MemoryRegion[];
  remoteRegions: { readonly valid: boolean }[];
  pairs: Uint8Array;
  count: number;
  bytes: number;
  /** Sent with every post unless post() is given another. */
  notification: Uint8Array | undefined;
}


export class Transfer implements Disposable {
  readonly op: Op;
  readonly peer: string;
  /** Descriptor pairs in this transfer. */
  readonly count: number;
  /** Total bytes moved by one post. */
  readonly bytes: number;
  #status: TransferStatus = 'idle';
  #error: IxferError | undefined;
  #released = false;
  #id = 0;
  #waiters: Settle<void>[] = [];
  readonly #host: TransferHost;
  readonly #r: ResolvedTransfer;

  /** @internal */
  constructor(host: TransferHost, resolved: ResolvedTransfer) {
    this.#host = host;
    this.#r = resolved;
    this.op = resolved.op;
    this.peer = resolved.peer.name;
    this.count = resolved.count;
    this.bytes = resolved.bytes;
  }

  get status(): TransferStatus {
    return this.#status;
  }

  /** The failure of the last post, when status is 'error'. */
  get error(): IxferError | undefined {
    return this.#error;
  }

  /**
   * Hands the transfer to the agent's progress thread. A transfer that has
   * finished (done or error) can be posted again; one still in flight cannot
   * (ERR_REPOST_ACTIVE). A notification given here replaces the one the
   * transfer was made with, for this post; the peer receives it once the
   * data is in place.
   */
  post(notification?: NotificationBody): this {
    if (this.#released) throw new NotAllowedError('this transfer was released');
    if (this.#status === 'pending') throw new RepostActiveError('this transfer is still in flight');
    const r = this.#r;
    if (!r.peer.valid || r.peer.generation !== r.generation) {
      throw new NotFoundError(`peer '${r.peer.name}' was invalidated or reloaded since this transfer was made`);
    }
    for (const region of r.remoteRegions) {
      if (!region.valid) throw new NotFoundError(`a remote region of '${r.peer.name}' is no longer registered`);
    }
    for (const region of r.localRegions) {
      if (!region.registered) throw new NotFoundError('a local region of this transfer was deregistered');
    }
    const notif =
      notification === undefined
        ? r.notification
        : parseNotificationBody(notification);
    this.#id = this.#host.postNative(this, r.op, r.peer, r.pairs, r.count, notif);
    for (const region of r.localRegions) region.acquire();
    this.#status = 'pending';
    this.#error = undefined;
    return this;
  }

  /**
   * Resolves when the data has arrived (WRITE: in the target's memory; READ:
   * in ours). Rejects with the transfer's error, or with ERR_TIMEOUT after
   * timeoutMs or ERR_CANCELED when signal aborts; both also cancel what is not
   * yet posted, and the transfer ends in 'error' (or 'done' if it finished).
   */
  done(options: WaitOptions = {}): Promise<void> {
    const { timeoutMs = this.#host.defaultTimeoutMs, signal } = parse(WaitOptionsSchema, options, 'done options');
    if (this.#status === 'done') return Promise.resolve();
    if (this.#status === 'error') return Promise.reject(this.#error);
    if (this.#status === 'idle') return Promise.reject(new NotAllowedError('this transfer was never posted'));
    return deadlineWait<void>({
      timeoutMs,
      signal,
      what: `${this.op} of ${this.bytes} bytes to '${this.peer}'`,
      start: (settle) => {
        this.#waiters.push(settle);
        return () => {
          const i = this.#waiters.indexOf(settle);
          if (i >= 0) this.#waiters.splice(i, 1);
        };
      },
      giveUp: (code) => this.#cancel(code),
    });
  }

  /**
   * Resolves once the last post has ended, whatever its outcome (never
   * rejects). After done() rejected on a timeout or abort, this is when the
   * I/O under way has stopped and the transfer's memory and files are free.
   */
  settled(): Promise<void> {
    if (this.#status !== 'pending') return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ resolve, reject: () => resolve() }));
  }

  /** Posts and waits: `await t.run()` is `t.post(); await t.done()`. */
  run(options: WaitOptions = {}): Promise<void> {
    this.post();
    return this.done(options);
  }

  /**
   * Gives the transfer up. One in flight is canceled (what the provider
   * already has still lands); its memory stays in use until it ends.
   */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#status === 'pending') this.#cancel('ERR_CANCELED');
  }

  [Symbol.dispose](): void {
    this.release();
  }

  #cancel(code: GiveUpCode): void {
    if (this.#status === 'pending') this.#host.cancelNative(this.#id, code);
  }

  /** @internal Called by the agent when the shim reports the end of post #id. */
  complete(status: number, fiErrno: number, detail = 0): void {
    for (const region of this.#r.localRegions) region.releaseUse();
    if (status === 0) {
      this.#status = 'done';
    } else {
      this.#status = 'error';
      this.#error = makeError(
        codeOfStatus(status),
        `${this.op} of ${this.bytes} bytes to '${this.peer}' failed: ${this.#host.describeError(status, fiErrno, detail)}`,
        { nativeMessage: fiErrno ? this.#host.describeError(status, fiErrno, detail) : undefined },
      );
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (this.#status === 'done') w.resolve();
      else w.reject(this.#error!);
    }
  }

  /** @internal Called when the agent closes with this transfer in flight. */
  abandon(): void {
    this.complete(statusOf('ERR_CANCELED'), 0);
  }
}

/** Packs pairs in ixfer_iov_pair layout: local addr, len, local mr, remote addr, remote key. */
export function packPairs(
  entries: { laddr: number; len: number; mr: bigint; raddr: number; key: bigint }[],
): Uint8Array {
  const words = (entries.length * IOV_PAIR_BYTES) / 8;
  const u64 = new BigUint64Array(words);
  const u32 = new Uint32Array(u64.buffer);
  // Numbers (below 2^53) go in as two 32-bit halves: BigInt() per field costs more
  // than the rest of building a transfer.
  const put = (word: number, v: number) => {
    u32[word * 2] = v >>> 0;
    u32[word * 2 + 1] = Math.floor(v / 0x1_0000_0000);
  };
  let w = 0;
  for (const e of entries) {
    put(w, e.laddr);
    put(w + 1, e.len);
    u64[w + 2] = e.mr;
    put(w + 3, e.raddr);
    u64[w + 4] = e.key;
    w += 5;
  }
  return new Uint8Array(u64.buffer);
}
