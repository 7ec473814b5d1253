// A remote metadata blob is untrusted input: 10,000+ mutated and random blobs
// each either load or fail with ERR_INVALID_PARAM (ERR_NOT_FOUND for partial
// metadata of an unknown peer), never crash, and the agent keeps working.
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { Agent, IxferError, type MemoryRegion } from '../../lib/index.js';
import { random } from '../support/helpers.js';

let a: Agent;
let b: Agent;
let aMem: MemoryRegion;
let bMem: MemoryRegion;
let full: Uint8Array;
let partial: Uint8Array;

beforeAll(async () => {
  a = await Agent.create({ name: 'fuzz-a' });
  b = await Agent.create({ name: 'fuzz-b' });
  aMem = a.allocate(65536);
  bMem = b.allocate(65536, { name: 'kv' }); // names are fuzzed too
  b.allocate(4096);
  b.registerMemory(Buffer.alloc(100), { name: 'scratch' });
  full = b.getLocalMetadata();
  partial = b.getLocalMetadata({ regions: [bMem], includeConnection: false });
});
afterAll(async () => {
  await a.close();
  await b.close();
});

function loadOrTypedError(blob: Uint8Array): void {
  try {
    a.loadRemoteMetadata(blob);
  } catch (err) {
    if (!(err instanceof IxferError)) throw err;
    expect(['ERR_INVALID_PARAM', 'ERR_NOT_FOUND']).toContain(err.code);
  }
}

const mutation = (base: Uint8Array) =>
  fc.oneof(
    // flip bytes at random positions
    fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((edits) => {
      const copy = new Uint8Array(base);
      for (const [i, v] of edits) copy[i] = v;
      return copy;
    }),
    // truncate
    fc.nat(base.length).map((n) => base.slice(0, n)),
    // append junk
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => Uint8Array.from([...base, ...tail])),
    // splice a chunk out
    fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 1, max: 16 })).map(([at, n]) =>
      Uint8Array.from([...base.slice(0, at), ...base.slice(at + n)]),
    ),
  );

it('10,000 mutated full blobs', () => {
  fc.assert(fc.property(mutation(full), (blob) => loadOrTypedError(blob)), { numRuns: 10_000 });
});

it('2,000 mutated partial blobs and 2,000 random blobs', () => {
  fc.assert(fc.property(mutation(partial), (blob) => loadOrTypedError(blob)), { numRuns: 2000 });
  fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (blob) => loadOrTypedError(blob)), { numRuns: 2000 });
});

it('oversized, wrong-version and non-byte inputs are ERR_INVALID_PARAM', () => {
  const wrongVersion = new Uint8Array(full);
  wrongVersion[4] = 99; // (2, the version in use, loaded whenever no mutation had loaded a newer sequence)
  for (const blob of [wrongVersion, new Uint8Array(65 * 1024 * 1024), 'text' as never, null as never]) {
    try {
      a.loadRemoteMetadata(blob);
      expect.unreachable();
    } catch (err) {
      expect((err as IxferError).code).toBe('ERR_INVALID_PARAM');
    }
  }
});

it('the agent still transfers after the fuzzing', async () => {
  for (const p of a.peers) a.invalidateRemote(p);
  expect(a.loadRemoteMetadata(full)).toBe('fuzz-b');
  const data = random(65536);
  aMem.bytes.set(data);
  await a.createTransfer({ op: 'WRITE', peer: 'fuzz-b', local: [aMem.desc()], remote: [bMem.desc()] }).run({ timeoutMs: 10_000 });
  expect(Buffer.compare(bMem.bytes, data)).toBe(0);
});
