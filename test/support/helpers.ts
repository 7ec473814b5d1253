/** Helpers shared by the tests of every area: one definition each. */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';

import { expect } from 'vitest';

import { Agent, IxferError, type ErrorCode, type PeerEvent } from '../../lib/index.js';

/** SHA-256 in hex: the bench's consistency hash, which the peer fixture uses too. */
export { hash as sha } from '../../lib/bench/pattern.js';

export const MiB = 1 << 20;

/** The repository root, so that tests do not depend on how deep their folder is. */
export const root = path.join(import.meta.dirname, '..', '..');
/** The compiled CLI (`npm test` compiles before it runs vitest). */
export const cli = path.join(root, 'dist', 'cli.js');

export function random(len: number): Buffer {
  return crypto.randomBytes(len);
}

export async function agents(...names: string[]): Promise<Agent[]> {
  return Promise.all(names.map((name) => Agent.create({ name })));
}

/** Makes every agent know every other one (and itself). */
export function connectAll(list: Agent[]): void {
  for (const a of list) for (const b of list) a.loadRemoteMetadata(b.getLocalMetadata());
}

/** Asserts that fn throws (or rejects with) an IxferError of the given code. */
export async function expectCode(fn: () => unknown, code: ErrorCode): Promise<IxferError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(IxferError);
    expect((err as IxferError).code, (err as Error).message).toBe(code);
    return err as IxferError;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
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

/** Runs examples/<script> with Node and resolves with its output (60 s at most). */
export async function runExample(script: string, ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'examples', script), ...args], { timeout: 60_000 });
  return stdout;
}
