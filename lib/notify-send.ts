/** A standalone notification on its way out: settles when the shim reports it sent. */
import { deadlineWait, type GiveUpCode, type Settle } from './deadline-wait.js';
import { codeOfStatus, makeError, statusOf } from './errors.js';

export class NotifySend {
  #settle: Settle<void> | undefined;

  constructor(
    private readonly peer: string,
    private readonly bytes: number,
    private readonly cancel: (code: GiveUpCode) => void,
    private readonly describe: (status: number, fiErrno: number) => string,
  ) {}

  /** Options already validated by the caller (before anything was sent). */
  wait(options: { timeoutMs?: number; signal?: AbortSignal }, defaultTimeoutMs: number | undefined): Promise<void> {
    return deadlineWait<void>({
      timeoutMs: options.timeoutMs ?? defaultTimeoutMs,
      signal: options.signal,
      what: `notification of ${this.bytes} bytes to '${this.peer}'`,
      start: (settle) => {
        this.#settle = settle;
        return () => (this.#settle = undefined);
      },
      giveUp: (code) => this.cancel(code),
    });
  }

  /** The shim's report. */
  complete(status: number, fiErrno: number): void {
    if (status === 0) this.#settle?.resolve();
    else
      this.#settle?.reject(
        makeError(
          codeOfStatus(status),
          `notification of ${this.bytes} bytes to '${this.peer}' failed: ${this.describe(status, fiErrno)}`,
        ),
      );
  }

  /** The agent closed first. */
  abandon(): void {
    this.complete(statusOf('ERR_CANCELED'), 0);
  }
}
