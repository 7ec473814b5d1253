/**
 * The one way ixfer waits with a deadline: for a transfer's end, a
 * notification, a notification being sent, a metadata listener's answer or
 * an etcd entry. Timers only bound the wait: nothing is polled.
 *
 * The deadline is a cleared setTimeout feeding an AbortController, not
 * AbortSignal.timeout(): that timer cannot be cleared, so every finished wait
 * would leave one behind until it fires (100k transfers a second with a 5 s
 * deadline: half a million), and it is unref'd, so a waiter alone would not
 * hold the process open.
 */
import { CanceledError, TimeoutError } from '../errors.js';

export type GiveUpCode = 'ERR_TIMEOUT' | 'ERR_CANCELED';

/** How long a caller waits, and what may cancel it. */
export interface Wait {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface Settle<T> {
  resolve(value: T): void;
  reject(err: Error): void;
}

export interface Deadline extends Wait {
  /** What is awaited, for the errors: "WRITE of 4096 bytes to 'decode-0'"; read when the wait fails, so it can name a phase. */
  what: string | (() => string);
  /** Called on timeout or abort, after the waiter is unregistered, before the promise rejects. */
  giveUp?(code: GiveUpCode): void;
}

/** Handed to waits that have neither deadline nor signal (the common transfer), so they cost no controller. */
const NEVER = new AbortController().signal;

/**
 * Waits for `start` to settle. It rejects instead with a TimeoutError after
 * timeoutMs, or a CanceledError when `signal` aborts (at once, without
 * calling start, if it already has); start's `abort` signal then aborts with
 * that error. The function start returns, if any, unregisters the waiter
 * and is called however the wait ends.
 */
export function withDeadline<T>(d: Deadline, start: (settle: Settle<T>, abort: AbortSignal) => (() => void) | void): Promise<T> {
  const what = () => (typeof d.what === 'string' ? d.what : d.what());
  const canceled = () => new CanceledError(`${what()}: canceled`, { cause: d.signal?.reason });
  if (d.signal?.aborted) {
    d.giveUp?.('ERR_CANCELED');
    return Promise.reject(canceled());
  }
  // Only a start that declares the abort parameter gets a controller: a
  // transfer's waiter does not, and one per wait showed in its profile.
  const ctl = start.length > 1 && (d.timeoutMs !== undefined || d.signal) ? new AbortController() : undefined;
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let stop: (() => void) | void;
    let done = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      d.signal?.removeEventListener('abort', onAbort);
      stop?.();
    };
    const fail = (code: GiveUpCode, err: Error) => {
      if (done) return;
      finish();
      d.giveUp?.(code);
      ctl?.abort(err);
      reject(err);
    };
    const onAbort = () => fail('ERR_CANCELED', canceled());
    stop = start(
      {
        resolve: (value) => {
          if (done) return;
          finish();
          resolve(value);
        },
        reject: (err) => {
          if (done) return;
          finish();
          reject(err);
        },
      },
      ctl?.signal ?? NEVER,
    );
    if (done) return stop?.(); // settled from inside start(), before stop was known
    d.signal?.addEventListener('abort', onAbort, { once: true });
    const ms = d.timeoutMs;
    if (ms === undefined || ms === Infinity) return;
    timer = setTimeout(() => fail('ERR_TIMEOUT', new TimeoutError(`${what()}: not done within ${ms} ms`)), ms);
  });
}
