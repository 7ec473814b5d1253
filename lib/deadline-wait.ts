/**
 * Waiting for something that another party settles (the shim's completion
 * event, an incoming notification), with an optional deadline and
 * AbortSignal. Timers only bound the wait: nothing is polled.
 */
import { CanceledError, TimeoutError } from './errors.js';

export type GiveUpCode = 'ERR_TIMEOUT' | 'ERR_CANCELED';

export interface Settle<T> {
  resolve(value: T): void;
  reject(err: Error): void;
}

export interface DeadlineWait<T> {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** What is awaited, for the error messages: "WRITE of 4096 bytes to 'decode-0'". */
  what: string;
  /** Registers the waiter; returns how to unregister it. */
  start(settle: Settle<T>): () => void;
  /** Called on timeout or abort, after unregistering, before rejecting. */
  giveUp?(code: GiveUpCode): void;
}

export function deadlineWait<T>(w: DeadlineWait<T>): Promise<T> {
  const aborted = () => new CanceledError(`${w.what}: aborted`, { cause: w.signal?.reason });
  if (w.signal?.aborted) {
    w.giveUp?.('ERR_CANCELED');
    return Promise.reject(aborted());
  }
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let stop: (() => void) | undefined;
    let settled = false;
    const finish = () => {
      settled = true;
      if (timer) clearTimeout(timer);
      w.signal?.removeEventListener('abort', onAbort);
      stop?.();
    };
    const fail = (code: GiveUpCode, err: Error) => {
      finish();
      w.giveUp?.(code);
      reject(err);
    };
    const onAbort = () => fail('ERR_CANCELED', aborted());
    stop = w.start({
      resolve: (value) => {
        finish();
        resolve(value);
      },
      reject: (err) => {
        finish();
        reject(err);
      },
    });
    if (settled) return stop(); // settled from inside start()
    w.signal?.addEventListener('abort', onAbort, { once: true });
    if (w.timeoutMs !== undefined) {
      const ms = w.timeoutMs;
      timer = setTimeout(() => fail('ERR_TIMEOUT', new TimeoutError(`${w.what}: not done within ${ms} ms`)), ms);
    }
  });
}
