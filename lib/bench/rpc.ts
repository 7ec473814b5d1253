/**
 * Request/reply over the IPC channel of child_process.fork, between the
 * orchestrator and its worker processes (initiator and target of each engine).
 */
import { fork, type ChildProcess } from 'node:child_process';

import { BackendError, ErrorCodes, makeError, type ErrorCode } from '../errors.js';

export interface Request {
  type: string;
  [key: string]: unknown;
}
/** A failed request carries the error's message and, for an IxferError, its code. */
type Reply = { id: number; error?: string; code?: string } & Record<string, unknown>;

/** The orchestrator's handle on one worker process. */
export class Worker {
  readonly proc: ChildProcess;
  #next = 1;
  #pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>();
  #exited: Error | undefined;

  constructor(readonly name: string, script: string, args: string[] = []) {
    this.proc = fork(script, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.proc.on('message', (m: Reply) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.error) p.reject(makeError(codeOf(m.code), `${this.name}: ${m.error}`));
      else p.resolve(m);
    });
    this.proc.on('exit', (code, signal) => {
      this.#exited = new BackendError(`${this.name} exited (${signal ?? code})`);
      for (const p of this.#pending.values()) p.reject(this.#exited);
      this.#pending.clear();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request<T = Record<string, unknown>>(msg: Request): Promise<T> {
    if (this.#exited) return Promise.reject(this.#exited);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (r: Reply) => void, reject });
      this.proc.send({ ...msg, id });
    });
  }

  /** Asks the worker to exit (it does when the channel closes); kills it if it has not within 5 s. */
  close(): void {
    if (this.#exited) return;
    this.proc.disconnect();
    setTimeout(() => {
      if (!this.#exited) this.proc.kill('SIGKILL');
    }, 5000).unref();
  }
}

function codeOf(code: string | undefined): ErrorCode {
  return ErrorCodes.includes(code as ErrorCode) ? (code as ErrorCode) : 'ERR_BACKEND';
}

/** The worker's side: answers each request with its handler's result. */
export function serve(handlers: Record<string, (msg: Request) => unknown>): void {
  process.on('disconnect', () => process.exit(0));
  // An interrupted orchestrator (Ctrl-C) is gone before the answer: nothing to report then.
  const reply = (m: object) => process.connected && process.send!(m, () => {});
  process.on('message', async (msg: Request & { id: number }) => {
    try {
      const handler = handlers[msg.type];
      if (!handler) throw new Error(`unknown request '${msg.type}'`);
      const result = (await handler(msg)) ?? {};
      reply({ ...result, id: msg.id });
    } catch (err) {
      const e = err as { code?: string; message?: string };
      reply({ id: msg.id, error: e.message ?? String(err), code: e.code });
    }
  });
}
