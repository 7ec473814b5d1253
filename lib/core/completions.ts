/**
 * The agent's event pump. The shim's progress thread (and the file engine's
 * threads) write a byte to a pipe when work finishes; the pipe is read by a
 * net.Socket on the event loop, which drains every finished event with one
 * synchronous call. No polling, no timers, no thread-pool work per transfer.
 *
 * Runs in flight are kept here by id. Other kinds of event (incoming
 * notifications) go to the handler registered for their type: the pump does
 * not know what they are.
 */
import net from 'node:net';

import { statusOf } from '../errors.js';
import { EVENT_BYTES, EVENT_XFER_DONE, forEachEvent } from '../native/layout.js';
import type { AgentHandle, Shim } from '../native/shim.js';
import type { Completion } from './engine.js';

const DRAIN_BATCH = 1024;
const CANCELED = statusOf('ERR_CANCELED');

export class Completions {
  readonly #native: Shim;
  #handle: AgentHandle | undefined;
  readonly #events: net.Socket;
  readonly #buf = Buffer.alloc(EVENT_BYTES * DRAIN_BATCH);
  readonly #wake = Buffer.alloc(64);
  #nextId = 1;
  readonly #inflight = new Map<number, Completion>();
  readonly #handlers = new Map<number, (id: number, status: number, fiErrno: number, detail: number) => void>();
  /** Other reasons to keep the process alive (waiting notification consumers). */
  readonly #busy: () => boolean;

  constructor(native: Shim, handle: AgentHandle, eventFd: number, busy: () => boolean) {
    this.#native = native;
    this.#handle = handle;
    this.#busy = busy;
    // onread: the wake bytes land in one reused buffer and skip the stream machinery.
    this.#events = new net.Socket({
      fd: eventFd,
      readable: true,
      writable: false,
      onread: { buffer: this.#wake, callback: () => void this.#drain() },
    } as net.SocketConstructorOpts);
    this.#events.on('error', () => {}); // closed under us during close()
    this.#events.unref();
  }

  /** Runs in flight. */
  get size(): number {
    return this.#inflight.size;
  }

  has(id: number): boolean {
    return this.#inflight.has(id);
  }

  /** Routes events of `type` (other than transfer ends) to handler. */
  on(type: number, handler: (id: number, status: number, fiErrno: number, detail: number) => void): void {
    this.#handlers.set(type, handler);
  }

  /** Assigns an id, calls post(id) (which may throw: nothing is tracked then), and routes the id's end to c. */
  track(c: Completion, post: (id: number) => void): number {
    const id = this.#nextId++;
    post(id);
    this.#inflight.set(id, c);
    if (this.#inflight.size === 1) this.refresh();
    return id;
  }

  /** Pending work and waiting consumers keep the process alive; an idle agent does not. */
  refresh(): void {
    if (this.#inflight.size > 0 || this.#busy()) this.#events.ref();
    else this.#events.unref();
  }

  #drain(): void {
    const handle = this.#handle;
    if (!handle) return;
    for (;;) {
      const n = this.#native.agentDrain(handle, this.#buf, DRAIN_BATCH);
      forEachEvent(this.#buf, n, (type, id, status, fiErrno, detail) => {
        if (type !== EVENT_XFER_DONE) return this.#handlers.get(type)?.(id, status, fiErrno, detail);
        const c = this.#inflight.get(id);
        if (!c) return;
        this.#inflight.delete(id);
        c.complete(status, fiErrno, detail);
      });
      if (n < DRAIN_BATCH) break;
    }
    if (this.#inflight.size === 0) this.refresh();
  }

  /** Before the shim's agent is destroyed: events are no longer read (the descriptor stays open until close). */
  detach(): void {
    this.#handle = undefined;
  }

  /** After the shim's agent is destroyed (no more events): runs still in flight end as canceled. */
  close(): void {
    this.#handle = undefined;
    this.#events.destroy();
    const inflight = [...this.#inflight.values()];
    this.#inflight.clear();
    for (const c of inflight) c.complete(CANCELED, 0, 0);
  }
}
