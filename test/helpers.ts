import crypto from 'node:crypto';

import { expect } from 'vitest';

import { Agent, IxferError, type ErrorCode } from '../lib/index.js';

export async function agents(...names: string[]): Promise<Agent[]> {
  return Promise.all(names.map((name) => Agent.create({ name })));
}

/** Makes every agent know every other one (and itself). */
export function connectAll(list: Agent[]): void {
  for (const a of list) for (const b of list) a.loadRemoteMetadata(b.getLocalMetadata());
}

export function random(len: number): Buffer {
  return crypto.randomBytes(len);
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
