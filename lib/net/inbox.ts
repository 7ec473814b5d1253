/**
 * Incoming notifications of an agent: a queue that the shim's events fill,
 * consumed by waiters (waitForNotification), async iterators
 * (notifications()) or a drain grouped by peer (getNotifications). Each
 * notification goes to exactly one consumer, in arrival order.
 */
import { z } from 'zod';

import { withDeadline } from '../core/deadline.js';
import { NotificationBodySchema, parse, timeoutOrInfinity, type NotificationBody } from '../schemas.js';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A notification's bytes: text goes as UTF-8. */
export function encodeNotification(body: NotificationBody): Uint8Array {
  return typeof body === 'string' ? encoder.encode(body) : body;
}

/** A notification body from the caller, checked (zod only for the error) and encoded. */
export function parseNotificationBody(value: unknown): Uint8Array {
  if (typeof value === 'string' || value instanceof Uint8Array) return encodeNotification(value);
  return encodeNotification(parse(NotificationBodySchema, value, 'notification'));
}

export class Notification {
  /** @internal */
  constructor(
    /** Name of the agent that sent it. */
    readonly peer: string,
    readonly bytes: Uint8Array,
  ) {}

  /** The bytes as UTF-8 text. */
  get text(): string {
    return decoder.decode(this.bytes);
  }
}

export const WaitForNotificationSchema = z
  .object({
    /** Only from this peer. */
    peer: z.string().min(1).optional(),
    /** A prefix (text or bytes) or a predicate; any notification when absent. */
    match: z
      .union([
        z.string(),
        z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'a Uint8Array'),
        z.custom<(n: Notification) => boolean>((v) => typeof v === 'function', 'a string, bytes or a predicate'),
      ])
      .optional(),
    timeoutMs: timeoutOrInfinity.optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();
export type WaitForNotificationOptions = z.input<typeof WaitForNotificationSchema>;

export type NotificationMatch = NonNullable<WaitForNotificationOptions['match']>;

function matcher(match: NotificationMatch | undefined, peer: string | undefined): (n: Notification) => boolean {
  const test =
    match === undefined
      ? () => true
      : typeof match === 'function'
        ? match
        : (() => {
            const prefix = encodeNotification(match);
            return (n: Notification) =>
              n.bytes.length >= prefix.length && prefix.every((b, i) => n.bytes[i] === b);
          })();
  return peer === undefined ? test : (n) => n.peer === peer && test(n);
}

/** A FIFO with O(1) shift (Array.prototype.shift is O(n) on long arrays). */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    // Compact once the consumed prefix dominates.
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Removes and returns the first item that satisfies pred. */
  take(pred: (item: T) => boolean): T | undefined {
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]!;
      if (!pred(item)) continue;
      if (i === this.#head) return this.shift();
      this.#items.splice(i, 1);
      return item;
    }
    return undefined;
  }

  /** Removes and returns everything. */
  drain(): T[] {
    const all = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return all;
  }
}

interface Consumer {
  /** Absent for an iterator, which takes anything (after every waiter passed). */
  accepts?(n: Notification): boolean;
  take(n: Notification): void;
  /** The agent closed. */
  fail(err: Error): void;
}

/** Bounds of the queue of delivered notifications nobody has taken yet. */
export interface InboxLimits {
  maxQueued: number;
  maxQueuedBytes: number;
  maxQueuedBytesPerPeer: number;
}

export class NotificationInbox {
  #queue = new Fifo<Notification>();
  #consumers: Consumer[] = [];
  /** Called when the number of waiting consumers changes (to hold the process open). */
  readonly #onWaitingChange: () => void;
  /** Called for a queued notification dropped to stay within the limits. */
  readonly #onOverflow: (n: Notification, why: string) => void;
  readonly #limits: InboxLimits;
  #closedError: Error | undefined;
  #bytes = 0;
  readonly #byPeer = new Map<string, { count: number; bytes: number }>();

  constructor(onWaitingChange: () => void, limits: InboxLimits, onOverflow: (n: Notification, why: string) => void) {
    this.#onWaitingChange = onWaitingChange;
    this.#limits = limits;
    this.#onOverflow = onOverflow;
  }

  /** Notifications queued (delivered, not yet taken), and their bytes. */
  get queued(): { count: number; bytes: number } {
    return { count: this.#queue.size, bytes: this.#bytes };
  }

  /**
   * Queues n within the limits. Drops the oldest first, and of the peer over
   * its share first: n's own sender when it passes maxQueuedBytesPerPeer,
   * else the sender holding the most, so one chatty sender cannot push out
   * the others' notifications.
   */
  #enqueue(n: Notification): void {
    const { maxQueued, maxQueuedBytes, maxQueuedBytesPerPeer } = this.#limits;
    const size = n.bytes.length;
    if (size > maxQueuedBytesPerPeer || size > maxQueuedBytes) {
      this.#onOverflow(n, `it alone is over notifications.${size > maxQueuedBytes ? 'maxQueuedBytes' : 'maxQueuedBytesPerPeer'}`);
      return;
    }
    this.#queue.push(n);
    this.#count(n, 1);
    while ((this.#byPeer.get(n.peer)?.bytes ?? 0) > maxQueuedBytesPerPeer) {
      this.#evict(n.peer, 'notifications.maxQueuedBytesPerPeer');
    }
    while (this.#queue.size > maxQueued) this.#evict(this.#largest('count'), 'notifications.maxQueued');
    while (this.#bytes > maxQueuedBytes) this.#evict(this.#largest('bytes'), 'notifications.maxQueuedBytes');
  }

  /** The peer holding the most queued notifications (or bytes). */
  #largest(by: 'count' | 'bytes'): string {
    let peer = '';
    let most = -1;
    for (const [name, held] of this.#byPeer) {
      if (held[by] > most) {
        most = held[by];
        peer = name;
      }
    }
    return peer;
  }

  #evict(peer: string, cap: string): void {
    const n = this.#queue.take((q) => q.peer === peer)!;
    this.#count(n, -1);
    this.#onOverflow(n, `the queue of notifications not yet taken was full (${cap}); the oldest of the sender over its share went first`);
  }

  #count(n: Notification, sign: 1 | -1): void {
    const size = n.bytes.length;
    this.#bytes += sign * size;
    const held = this.#byPeer.get(n.peer) ?? { count: 0, bytes: 0 };
    held.count += sign;
    held.bytes += sign * size;
    if (held.count > 0) this.#byPeer.set(n.peer, held);
    else this.#byPeer.delete(n.peer);
  }

  #taken(n: Notification | undefined): Notification | undefined {
    if (n) this.#count(n, -1);
    return n;
  }

  /** Consumers currently waiting. */
  get waiting(): number {
    return this.#consumers.length;
  }

  /** To the first waiter that accepts it, else the first iterator, else the queue. */
  push(n: Notification): void {
    for (let i = 0; i < this.#consumers.length; i++) {
      const consumer = this.#consumers[i]!;
      if (!consumer.accepts) continue;
      let accepted: boolean;
      try {
        accepted = consumer.accepts(n);
      } catch (err) {
        // A throwing predicate fails its own wait, not the delivery.
        this.#consumers.splice(i--, 1);
        this.#onWaitingChange();
        consumer.fail(err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      if (!accepted) continue;
      this.#consumers.splice(i, 1);
      this.#onWaitingChange();
      consumer.take(n);
      return;
    }
    const i = this.#consumers.findIndex((c) => !c.accepts);
    if (i < 0) {
      this.#enqueue(n);
      return;
    }
    const [iterator] = this.#consumers.splice(i, 1);
    this.#onWaitingChange();
    iterator!.take(n);
  }

  /** Everything queued, grouped by peer, in arrival order (like NIXL's getNotifs). */
  drain(): Map<string, Notification[]> {
    const out = new Map<string, Notification[]>();
    this.#bytes = 0;
    this.#byPeer.clear();
    for (const n of this.#queue.drain()) {
      const list = out.get(n.peer);
      if (list) list.push(n);
      else out.set(n.peer, [n]);
    }
    return out;
  }

  /** The first queued notification that matches, removed; else waits for one. */
  wait(options: WaitForNotificationOptions): Promise<Notification> {
    const { peer, match, timeoutMs, signal } = parse(
      WaitForNotificationSchema,
      options,
      'waitForNotification options',
    );
    const accepts = matcher(match, peer);
    const queued = this.#taken(this.#queue.take(accepts));
    if (queued) return Promise.resolve(queued);
    if (this.#closedError) return Promise.reject(this.#closedError);
    const what = `waiting for a notification${peer === undefined ? '' : ` from '${peer}'`}`;
    return withDeadline<Notification>({ what, timeoutMs, signal }, (settle) => {
      const consumer: Consumer = { accepts, take: settle.resolve, fail: settle.reject };
      this.#add(consumer);
      return () => this.#remove(consumer);
    });
  }

  /** Every notification as it arrives, until the agent closes, signal aborts or the loop breaks. */
  async *iterate(signal?: AbortSignal): AsyncGenerator<Notification, void, undefined> {
    for (;;) {
      if (this.#closedError || signal?.aborted) return;
      const next = this.#taken(this.#queue.shift());
      if (next) {
        yield next;
        continue;
      }
      const n = await new Promise<Notification | undefined>((resolve) => {
        const done = (v: Notification | undefined) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(v);
        };
        const consumer: Consumer = { take: done, fail: () => done(undefined) };
        const onAbort = () => {
          this.#remove(consumer);
          done(undefined);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.#add(consumer);
      });
      if (!n) return;
      yield n;
    }
  }

  /** Ends every wait: waiters reject with err, iterators finish. */
  close(err: Error): void {
    this.#closedError = err;
    const consumers = this.#consumers;
    this.#consumers = [];
    for (const c of consumers) c.fail(err);
    this.#onWaitingChange();
  }

  #add(c: Consumer): void {
    this.#consumers.push(c);
    this.#onWaitingChange();
  }

  #remove(c: Consumer): void {
    const i = this.#consumers.indexOf(c);
    if (i >= 0) {
      this.#consumers.splice(i, 1);
      this.#onWaitingChange();
    }
  }
}
