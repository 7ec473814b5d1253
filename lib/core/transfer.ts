/** A READ or WRITE that an engine moves, posted and awaited. */
import { codeOfStatus, InvalidParamError, makeError, NotAllowedError, NotFoundError, RepostActiveError, type IxferError } from '../errors.js';
import { parse, WaitOptionsSchema, type NotificationBody, type Op, type WaitOptions } from '../schemas.js';
import { withDeadline, type GiveUpCode, type Settle } from './deadline.js';
import type { Completion, Engine, Posting, TransferPath } from './engine.js';
import { micros, type TransferTelemetry } from './telemetry.js';
import { detachedError } from './memory.js';

const NO_OPTIONS: WaitOptions = Object.freeze({});

export type TransferStatus = 'idle' | 'pending' | 'done' | 'error';

export class Transfer implements Completion, Disposable {
  readonly op: Op;
  /** The far side: the peer's name, or for file transfers the file (or how many). */
  readonly peer: string;
  /** Descriptor pairs in this transfer. */
  readonly count: number;
  /** Total bytes moved by one post. */
  readonly bytes: number;
  /**
   * Network transfers: 'host' (host memory on both sides), 'gpudirect' (VRAM
   * that the provider moves) or 'staged' (VRAM copied through bounce buffers,
   * on either side); undefined for file transfers.
   */
  readonly path: TransferPath | undefined;
  #status: TransferStatus = 'idle';
  #error: IxferError | undefined;
  #released = false;
  #id = 0;
  #waiters: Settle<void>[] = [];
  readonly #engine: Engine;
  readonly #posting: Posting;
  /** The posting of the run in flight (it may carry a notification given to post()). */
  #running: Posting;
  /** performance.now() and Date.now() at the last post, and how long post() took (µs). */
  #postedAt = 0;
  #startTime = 0;
  #postUs = 0;
  #telemetry: TransferTelemetry | undefined;

  /** @internal */
  constructor(engine: Engine, posting: Posting) {
    this.#engine = engine;
    this.#posting = this.#running = posting;
    this.op = posting.op;
    this.peer = posting.target;
    this.count = posting.count;
    this.bytes = posting.bytes;
    this.path = posting.path;
  }

  get status(): TransferStatus {
    return this.#status;
  }

  /** Numbers of the last run that ended (undefined before): start, post and transfer time, bytes, descriptors. */
  get telemetry(): TransferTelemetry | undefined {
    return this.#telemetry;
  }

  /** The failure of the last post, when status is 'error'. */
  get error(): IxferError | undefined {
    return this.#error;
  }

  /**
   * Hands the transfer to its engine. A transfer that has finished (done or
   * error) can be posted again; one still in flight cannot
   * (ERR_REPOST_ACTIVE). A notification given here replaces the one the
   * transfer was made with, for this post; the peer receives it once the
   * data is in place. File transfers carry none.
   */
  post(notification?: NotificationBody): this {
    if (this.#released) throw new NotAllowedError('this transfer was released');
    this.#engine.checkOpen();
    if (this.#status === 'pending') throw new RepostActiveError('this transfer is still in flight');
    let posting = this.#posting;
    if (notification !== undefined) {
      if (!this.#engine.notifying) throw new InvalidParamError('only network transfers carry notifications');
      posting = this.#engine.notifying(posting, notification);
    }
    for (const region of posting.memory) {
      if (!region.registered) throw new NotFoundError('a local region of this transfer was deregistered');
      if (region.detached) {
        // Closing the registration at once makes peers' writes fail instead of landing in freed memory.
        if (region.inUse === 0) region.deregister();
        throw detachedError();
      }
    }
    const telemetry = this.#engine.telemetry;
    const start = performance.now();
    try {
      this.#id = this.#engine.post(posting, this);
    } catch (err) {
      if (err instanceof Error && 'code' in err) telemetry.failed(err as IxferError);
      throw err;
    }
    this.#postedAt = start;
    this.#startTime = performance.timeOrigin + start;
    this.#postUs = micros(start, performance.now());
    telemetry.transferStarted(this.op, this.peer, this.bytes, this.count, this);
    this.#running = posting;
    for (const region of posting.memory) region.acquire();
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
  done(options: WaitOptions = NO_OPTIONS): Promise<void> {
    // Without options (the common call) there is nothing to validate; bad ones reject, as every failure here does.
    let parsed: WaitOptions;
    try {
      parsed = options === NO_OPTIONS ? NO_OPTIONS : parse(WaitOptionsSchema, options, 'done options');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const { timeoutMs = this.#engine.defaultTimeoutMs, signal } = parsed;
    if (this.#status === 'done') return Promise.resolve();
    if (this.#status === 'error') return Promise.reject(this.#error);
    if (this.#status === 'idle') return Promise.reject(new NotAllowedError('this transfer was never posted'));
    const what = `${this.op} of ${this.bytes} bytes to '${this.peer}'`;
    return withDeadline<void>({ what, timeoutMs, signal, giveUp: (code) => this.#cancel(code) }, (settle) => {
      this.#waiters.push(settle);
      return () => {
        const i = this.#waiters.indexOf(settle);
        if (i >= 0) this.#waiters.splice(i, 1);
      };
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
  run(options: WaitOptions = NO_OPTIONS): Promise<void> {
    try {
      // Checked before posting: bad options must not leave the transfer in flight.
      if (options !== NO_OPTIONS) parse(WaitOptionsSchema, options, 'run options');
      this.post();
    } catch (err) {
      return Promise.reject(err as Error); // a promise-returning call does not also throw
    }
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
    if (this.#status === 'pending') this.#engine.cancel(this.#id, code);
  }

  /** @internal The end of the run in flight, from the agent's completions. */
  complete(status: number, fiErrno: number, detail: number): void {
    const posting = this.#running;
    for (const region of posting.memory) region.releaseUse();
    this.#engine.release(posting);
    if (status === 0) {
      this.#status = 'done';
    } else {
      this.#status = 'error';
      const why = this.#engine.describeError(posting, status, fiErrno, detail);
      this.#error = makeError(codeOfStatus(status), `${this.op} of ${this.bytes} bytes to '${this.peer}' failed: ${why}`, {
        nativeMessage: fiErrno ? why : undefined,
      });
    }
    this.#telemetry = {
      startTime: this.#startTime,
      postDurationUs: this.#postUs,
      transferDurationUs: micros(this.#postedAt, performance.now()),
      bytes: this.bytes,
      descriptors: this.count,
    };
    this.#engine.telemetry.transferEnded(this.op, this.peer, this.#telemetry, this, this.#error);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (this.#status === 'done') w.resolve();
      else w.reject(this.#error!);
    }
  }
}
