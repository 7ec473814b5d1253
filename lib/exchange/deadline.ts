/**
 * Deadlines for exchange operations: every wait on a peer or on etcd has one,
 * so a peer that never answers (or never appears) fails only its own waiters.
 */
import { CanceledError, TimeoutError } from '../errors.js';

/** How long a caller waits, and what may cancel it. */
export interface Wait {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Runs `task` with a signal that aborts with a TimeoutError after `timeoutMs`
 * (its message is `describe()`, read when the deadline passes, so it can name
 * the phase) or with a CanceledError when `signal` aborts; rejects with a
 * CanceledError at once if `signal` is already aborted.
 */
export async function withDeadline<T>(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  describe: () => string,
  task: (abort: AbortSignal) => Promise<T>,
): Promise<T> {
  const canceled = () => new CanceledError(`${describe()}: canceled`, { cause: signal?.reason });
  // Canceled before it started: the task is not run (its abort listeners would never fire).
  if (signal?.aborted) throw canceled();
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new TimeoutError(`${describe()}: no answer within ${timeoutMs} ms`)), timeoutMs);
  const cancel = () => ctl.abort(canceled());
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    return await task(ctl.signal);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', cancel);
  }
}

/** `promise`, or the abort reason of `signal` if that comes first. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
