/** Child-process peers and event waits for the metadata exchange tests. */
import { fork, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';

import type { Agent, ExchangeOptions, PeerEvent, SocketAddress } from '../lib/index.js';

const fixture = path.join(import.meta.dirname, 'fixtures', 'exchange-peer.mjs');

export const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

export interface Ready {
  pid: number;
  addr: number;
  len: number;
  address?: SocketAddress;
}

/** An error reported by a child: its message and ixfer code. */
export class ChildError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export interface ExchangePeer {
  proc: ChildProcess;
  ready: Ready;
  request(msg: Record<string, unknown>): Promise<any>;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
}

export async function spawnExchangePeer(
  name: string,
  options: { metadata?: ExchangeOptions; listen?: boolean; idle?: boolean; size?: number; throwOnPeer?: boolean } = {},
): Promise<ExchangePeer> {
  const proc = fork(fixture, [name, JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let nextId = 1;
  const pending = new Map<number, { resolve(m: unknown): void; reject(e: Error): void }>();
  const ready = await new Promise<Ready>((resolve, reject) => {
    proc.once('error', reject);
    void exited.then(() => reject(new Error(`peer '${name}' exited before it was ready`)));
    proc.on('message', (m: { type?: string; id?: number; error?: string; code?: string } & Ready) => {
      if (m.type === 'ready') return resolve(m);
      const p = pending.get(m.id!);
      pending.delete(m.id!);
      if (m.error !== undefined) p?.reject(new ChildError(m.error, m.code));
      else p?.resolve(m);
    });
  });
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`peer '${name}' exited`));
  });
  return {
    proc,
    ready,
    exited,
    request(msg) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        proc.send({ ...msg, id });
      });
    },
  };
}

/**
 * Resolves with the first 'peer' event of `agent` that matches. Call it before
 * what causes the event; rejects after `timeoutMs`.
 */
export function nextPeerEvent(agent: Agent, match: Partial<PeerEvent>, timeoutMs = 20_000): Promise<PeerEvent> {
  return new Promise((resolve, reject) => {
    const on = (e: PeerEvent) => {
      if (Object.entries(match).some(([k, v]) => e[k as keyof PeerEvent] !== v)) return;
      clearTimeout(timer);
      agent.off('peer', on);
      resolve(e);
    };
    const timer = setTimeout(() => {
      agent.off('peer', on);
      reject(new Error(`no peer event ${JSON.stringify(match)} within ${timeoutMs} ms`));
    }, timeoutMs);
    agent.on('peer', on);
  });
}
