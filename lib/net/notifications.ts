/**
 * Standalone notifications of an agent: sending them (each a run tracked by
 * the completions, settled when the shim reports it sent), and receiving
 * them (records of the event pump, queued in the inbox).
 */
import type { Completions } from '../core/completions.js';
import type { Telemetry } from '../core/telemetry.js';
import { withDeadline, type GiveUpCode, type Settle, type Wait } from '../core/deadline.js';
import { codeOfStatus, makeError, NoSpaceError, statusOf, type IxferError } from '../errors.js';
import { EVENT_NOTIF, takeNotification } from '../native/layout.js';
import { check, shim } from '../native/shim.js';
import type { Endpoint } from './endpoint.js';
import { Notification, NotificationInbox, parseNotificationBody, type InboxLimits } from './inbox.js';
import type { Peer } from './peers.js';

/** The 'notification-dropped' event's error: its sender and size besides the code. */
export type NotificationDroppedError = IxferError & {
  peer: string;
  bytes: number;
  /** 'queue-full': delivered, but dropped unread from the full queue (notifications.maxQueued*). */
  reason?: 'queue-full';
};

export interface NotificationStats {
  received: number;
  /** Dropped: over maxPendingBytesPerPeer, or stale (see the 'notification-dropped' event). */
  dropped: number;
  /** Fragments that were malformed (not ixfer's, or corrupted). */
  malformed: number;
  /** Bytes held now for incoming notifications not yet complete (or waiting for their data). */
  pendingBytes: number;
  /** Delivered notifications dropped because nobody took them and the queue was full (notifications.maxQueued*). */
  overflowed: number;
  /** Delivered notifications waiting to be taken, and their bytes. */
  queued: number;
  queuedBytes: number;
}

export class Notifications {
  readonly inbox: NotificationInbox;
  readonly #ep: Endpoint;
  readonly #completions: Completions;
  readonly #telemetry: Telemetry;
  readonly #describe: (status: number, fiErrno: number) => string;
  readonly #dropped: (err: NotificationDroppedError) => void;
  #counts = { received: 0, dropped: 0, overflowed: 0 };
  #warned = false;
  /** Next standalone-notification sequence number per receiving agent instance. */
  readonly #seq = new Map<string, number>();

  constructor(init: {
    endpoint: Endpoint;
    completions: Completions;
    telemetry: Telemetry;
    describe: (status: number, fiErrno: number) => string;
    /** Reports a dropped incoming notification ('notification-dropped'). */
    dropped: (err: NotificationDroppedError) => void;
    limits: InboxLimits;
  }) {
    this.#ep = init.endpoint;
    this.#completions = init.completions;
    this.#telemetry = init.telemetry;
    this.#describe = init.describe;
    this.#dropped = init.dropped;
    this.inbox = new NotificationInbox(
      () => this.#completions.refresh(),
      init.limits,
      (n, why) => this.#overflowed(n, why),
    );
    this.#completions.on(EVENT_NOTIF, (addr) => this.#received(addr));
  }

  /**
   * Sends `message` to peer (fragmented and reassembled by the shim); in
   * order with the other standalone notifications to that peer instance.
   * Resolves once sent; the wait's deadline and signal stop what is not yet.
   */
  send(peer: Peer, message: unknown, wait: Wait): Promise<void> {
    const handle = this.#ep.handle();
    const bytes = parseNotificationBody(message);
    const seq = (this.#seq.get(peer.instance) ?? 0) + 1;
    const what = `notification of ${bytes.length} bytes to '${peer.name}'`;
    let settle: Settle<void> | undefined;
    const complete = (status: number, fiErrno: number) => {
      if (status === 0) {
        this.#telemetry.notification('sent', peer.name, bytes.length);
        settle?.resolve();
      } else settle?.reject(makeError(codeOfStatus(status), `${what} failed: ${this.#describe(status, fiErrno)}`));
    };
    const id = this.#completions.track(
      { complete },
      (id) => check(shim().notify(handle, peer.fiAddr, bytes, bytes.length, seq, id), `notifying '${peer.name}'`),
    );
    this.#seq.set(peer.instance, seq);
    const cancel = (code: GiveUpCode) => {
      const live = this.#ep.live;
      if (live && this.#completions.has(id)) shim().xferCancel(live, id, statusOf(code));
    };
    return withDeadline<void>({ what, ...wait, giveUp: cancel }, (s) => {
      settle = s;
      return () => (settle = undefined);
    });
  }

  /**
   * A peer instance was replaced or invalidated: its numbering goes with it.
   * Loaded again, the same instance is numbered from 1; its receiver delivers
   * numbers below what it expects at once.
   */
  forget(instance: string): void {
    this.#seq.delete(instance);
  }

  /** A delivered notification dropped from the full queue: reported like the shim's drops. */
  #overflowed(n: Notification, why: string): void {
    this.#counts.overflowed++;
    const err: NotificationDroppedError = Object.assign(
      new NoSpaceError(`a notification of ${n.bytes.length} bytes from '${n.peer}' was dropped unread: ${why}`),
      { peer: n.peer, bytes: n.bytes.length, reason: 'queue-full' as const },
    );
    this.#telemetry.notification('dropped', n.peer, n.bytes.length, err);
    if (!this.#warned) {
      // Usually an application that never reads its notifications: say so once.
      this.#warned = true;
      process.emitWarning(`${err.message} (logged once per agent; see notificationStats.overflowed)`, {
        type: 'IxferNotificationWarning',
        code: 'IXFER_NOTIF_OVERFLOW',
      });
    }
    queueMicrotask(() => this.#dropped(err));
  }

  get stats(): NotificationStats {
    const h = this.#ep.live;
    const native = shim();
    const queued = this.inbox.queued;
    return {
      ...this.#counts,
      queued: queued.count,
      queuedBytes: queued.bytes,
      malformed: h ? Number(native.notifMalformed(h)) : 0,
      pendingBytes: h ? Number(native.notifPending(h)) : 0,
    };
  }

  #received(addr: number): void {
    const n = takeNotification(shim(), addr);
    if (n.data) {
      this.#counts.received++;
      this.#telemetry.notification('received', n.sender, n.data.length);
      this.inbox.push(new Notification(n.sender, n.data));
      return;
    }
    this.#counts.dropped++;
    const code = codeOfStatus(n.status);
    const err: NotificationDroppedError = Object.assign(makeError(
      code,
      `a notification of ${n.len} bytes from '${n.sender}' was dropped: ` +
        (code === 'ERR_NOT_ALLOWED'
          ? 'it exceeds the pending limit for one peer (notifications.maxPendingBytesPerPeer)'
          : 'its data or its remaining fragments did not arrive within notifications.staleMs'),
    ), { peer: n.sender, bytes: n.len });
    this.#telemetry.notification('dropped', n.sender, n.len, err);
    // Not from inside the drain: a throwing listener must not cost other events.
    queueMicrotask(() => this.#dropped(err));
  }
}
