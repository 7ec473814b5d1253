/** A standalone notification on its way out: settles when the shim reports it sent. */
import { CanceledError, codeOfStatus, makeError, TimeoutError } from './errors.js';

type CancelCode = 'ERR_TIMEOUT' | 'ERR_CANCELED';

export class NotifySend {
  #settle: ((err?: Error) => void) | undefined;

  constructor(
    private readonly peer: string,
    private readonly bytes: number,
    private readonly cancel: (code: CancelCode) => void,
    private readonly describe: (status: number, fiErrno: number) => string,
  ) {}

  /** Options already validated by the caller (before anything was sent). */
  wait(options: { timeoutMs?: number; signal?: AbortSignal }, defaultTimeoutMs: number | undefined): Promise<void> {
    const { timeoutMs = defaultTimeoutMs, signal } = options;
    const what = `notification of ${this.bytes} bytes to '${this.peer}'`;
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const stop = (code: CancelCode, err: Error) => {
        this.cancel(code);
        settle(err);
      };
      const onAbort = () => stop('ERR_CANCELED', new CanceledError(`${what} aborted`, { cause: signal?.reason }));
      const settle = (err?: Error) => {
        if (!this.#settle) return;
        this.#settle = undefined;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      this.#settle = settle;
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => stop('ERR_TIMEOUT', new TimeoutError(`${what} was not sent in ${timeoutMs} ms`)), timeoutMs);
      }
    });
  }

  /** The shim's report. */
  complete(status: number, fiErrno: number): void {
    this.#settle?.(
      status === 0
        ? undefined
        : makeError(codeOfStatus(status), `notification of ${this.bytes} bytes to '${this.peer}' failed: ${this.describe(status, fiErrno)}`),
    );
  }

  /** The agent closed first. */
  abandon(): void {
    this.complete(-9 /* IXFER_ERR_CANCELED */, 0);
  }
}
