/**
 * Packed descriptor lists ({ addrs, lens } typed arrays, region.descList) at
 * the scale vLLM posts them: 100,000 descriptors between two processes, every
 * byte checked, and bad entries anywhere in the list.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, type MemoryRegion } from '../../lib/index.js';
import { expectCode, MiB, random, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

const N = 100_000;
const BLOCK = 128;
const BYTES = N * BLOCK;

/** A permutation of 0..n-1 (deterministic), so that no two neighbours stay neighbours. */
function shuffled(n: number, seed = 7): Uint32Array {
  const p = Uint32Array.from({ length: n }, (_, i) => i);
  let s = seed;
  for (let i = n - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

describe('packed descriptor lists, two processes', () => {
  let a: Agent;
  let mem: MemoryRegion;
  let child: Peer;
  let peer: string;
  beforeAll(async () => {
    a = await Agent.create({ name: 'packed-parent' });
    mem = a.allocate(32 * MiB);
    child = await spawnPeer('packed-child', { size: 32 * MiB });
    peer = a.loadRemoteMetadata(child.ready.metadata);
  });
  afterAll(async () => {
    await child?.kill();
    await a?.close();
  });

  /** The child's blocks at these offsets, packed. */
  const remoteAt = (offsets: ArrayLike<number>, len: number | Float64Array = BLOCK) => ({
    addrs: Float64Array.from(offsets, (o) => child.ready.addr + o),
    lens: typeof len === 'number' ? new Float64Array(offsets.length).fill(len) : len,
  });
  const blockOffsets = (order: Uint32Array) => Float64Array.from(order, (b) => b * BLOCK);

  /** A 4 KiB WRITE and READ back, checked: the agent still works. */
  async function stillWorks(): Promise<void> {
    const data = random(4096);
    mem.bytes.set(data, 31 * MiB);
    const local = mem.descList([31 * MiB], 4096);
    await a.createTransfer({ op: 'WRITE', peer, local, remote: remoteAt([31 * MiB], 4096) }).run({ timeoutMs: 30_000 });
    expect((await child.request({ type: 'hash', offset: 31 * MiB, len: 4096 })).hash).toBe(sha(data));
  }

  it('100,000 scattered descriptors: WRITE then READ, every byte checked in both processes', async () => {
    const data = random(BYTES);
    mem.bytes.set(data, 0);
    const from = shuffled(N, 1);
    const to = shuffled(N, 2);
    const t = a.createTransfer({ op: 'WRITE', peer, local: mem.descList(blockOffsets(from), BLOCK), remote: remoteAt(blockOffsets(to)) });
    expect(t.count).toBe(N);
    expect(t.bytes).toBe(BYTES);
    await t.run({ timeoutMs: 60_000 });
    // Block from[i] of ours is block to[i] of the child's.
    const expected = Buffer.alloc(BYTES);
    for (let i = 0; i < N; i++) data.copy(expected, to[i]! * BLOCK, from[i]! * BLOCK, (from[i]! + 1) * BLOCK);
    expect((await child.request({ type: 'hash', offset: 0, len: BYTES })).hash).toBe(sha(expected));

    // Back the other way, into a second area of ours: the original order again.
    const back = a.createTransfer({
      op: 'READ',
      peer,
      local: mem.descList(Float64Array.from(from, (b) => 16 * MiB + b * BLOCK), BLOCK),
      remote: remoteAt(blockOffsets(to)),
    });
    await back.run({ timeoutMs: 60_000 });
    expect(Buffer.compare(mem.bytes.subarray(16 * MiB, 16 * MiB + BYTES), data)).toBe(0);
    // Reposting the same transfer moves the same bytes again.
    mem.bytes.fill(0, 16 * MiB, 16 * MiB + BYTES);
    await back.run({ timeoutMs: 60_000 });
    expect(Buffer.compare(mem.bytes.subarray(16 * MiB, 16 * MiB + BYTES), data)).toBe(0);
    await stillWorks();
  });

  it('100,000 descriptors in runs of 4 neighbours, the runs scattered (merged in part), through createTransfer and makeTransfer', async () => {
    const data = random(BYTES);
    mem.bytes.set(data, 0);
    const from = shuffled(N / 4, 3);
    const to = shuffled(N / 4, 4);
    const local = Float64Array.from({ length: N }, (_, i) => (from[i >> 2]! * 4 + (i & 3)) * BLOCK);
    const remote = Float64Array.from({ length: N }, (_, i) => (to[i >> 2]! * 4 + (i & 3)) * BLOCK);
    const expected = Buffer.alloc(BYTES);
    for (let i = 0; i < N; i++) data.copy(expected, remote[i]!, local[i]!, local[i]! + BLOCK);
    await a.createTransfer({ op: 'WRITE', peer, local: mem.descList(local, BLOCK), remote: remoteAt(remote) }).run({ timeoutMs: 60_000 });
    expect((await child.request({ type: 'hash', offset: 0, len: BYTES })).hash).toBe(sha(expected));

    await child.request({ type: 'fill', offset: 0, len: BYTES });
    const idx = Uint32Array.from({ length: N }, (_, i) => i);
    await a.makeTransfer('WRITE', a.prepareLocal(mem.descList(local, BLOCK)), idx, a.prepareRemote(peer, remoteAt(remote)), idx).run({ timeoutMs: 60_000 });
    expect((await child.request({ type: 'hash', offset: 0, len: BYTES })).hash).toBe(sha(expected));
  });

  it('100,000 contiguous descriptors (merged into one pair) and BigUint64Array addresses', async () => {
    const data = random(BYTES);
    mem.bytes.set(data, 0);
    const offsets = Float64Array.from({ length: N }, (_, i) => i * BLOCK);
    const remote = { addrs: BigUint64Array.from(offsets, (o) => BigInt(child.ready.addr + o)), lens: new Uint32Array(N).fill(BLOCK) };
    await a.createTransfer({ op: 'WRITE', peer, local: mem.descList(offsets, BLOCK), remote }).run({ timeoutMs: 60_000 });
    expect((await child.request({ type: 'hash', offset: 0, len: BYTES })).hash).toBe(sha(data));
  });

  it('makeTransfer from 100,000 indices of packed prepared lists, reversed, every byte checked', async () => {
    const data = random(BYTES);
    mem.bytes.set(data, 0);
    const offsets = Float64Array.from({ length: N }, (_, i) => i * BLOCK);
    const pl = a.prepareLocal(mem.descList(offsets, BLOCK));
    const pr = a.prepareRemote(peer, remoteAt(offsets));
    expect(pl.length).toBe(N);
    // Changing the caller's arrays after preparing changes nothing.
    offsets.fill(0);
    const li = Uint32Array.from({ length: N }, (_, i) => N - 1 - i);
    const ri = Uint32Array.from({ length: N }, (_, i) => i);
    await a.makeTransfer('WRITE', pl, li, pr, ri).run({ timeoutMs: 60_000 });
    const expected = Buffer.alloc(BYTES);
    for (let i = 0; i < N; i++) data.copy(expected, i * BLOCK, (N - 1 - i) * BLOCK, (N - i) * BLOCK);
    expect((await child.request({ type: 'hash', offset: 0, len: BYTES })).hash).toBe(sha(expected));

    for (const at of [0, N / 2, N - 1]) {
      const bad = li.slice();
      bad[at] = N;
      const e = await expectCode(() => a.makeTransfer('WRITE', pl, bad, pr, ri), 'ERR_INVALID_PARAM');
      expect(e.message).toContain(`local index ${N} is outside the prepared list of ${N}`);
    }
    await stillWorks();
  });

  describe('a bad entry at the start, in the middle and at the end', () => {
    const offsets = () => Float64Array.from({ length: N }, (_, i) => i * BLOCK);
    for (const at of [0, N / 2, N - 1]) {
      it(`entry ${at}: out of our region, not in the peer's memory, length mismatch, not an address`, async () => {
        // Out of our registered memory: ERR_NOT_FOUND naming the entry.
        const local = mem.descList(offsets(), BLOCK);
        local.addrs[at] = mem.addr + mem.len - 64; // runs past the region's end
        let e = await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local, remote: remoteAt(offsets()) }), 'ERR_NOT_FOUND');
        expect(e.message).toContain(`local[${at}] [0x${(mem.addr + mem.len - 64).toString(16)}, +${BLOCK}) is not in registered memory`);

        // Not in memory the peer registered: ERR_NOT_FOUND naming the entry.
        const remote = remoteAt(offsets());
        remote.addrs[at] = child.ready.addr + child.ready.len;
        e = await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local: mem.descList(offsets(), BLOCK), remote }), 'ERR_NOT_FOUND');
        expect(e.message).toContain(`remote[${at}]`);
        expect(e.message).toContain(`is not in memory 'packed-child' registered`);

        // Local and remote lengths differ: ERR_MISMATCH naming the descriptor.
        const lens = new Float64Array(N).fill(BLOCK);
        lens[at] = BLOCK / 2;
        e = await expectCode(
          () => a.createTransfer({ op: 'READ', peer, local: mem.descList(offsets(), BLOCK), remote: remoteAt(offsets(), lens) }),
          'ERR_MISMATCH',
        );
        expect(e.message).toContain(`descriptor ${at}: local length ${BLOCK}, remote length ${BLOCK / 2}`);

        // Not an address at all (NaN, a fraction): ERR_INVALID_PARAM naming the entry.
        for (const v of [NaN, 1.5, -BLOCK]) {
          const bad = remoteAt(offsets());
          bad.addrs[at] = v;
          e = await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local: mem.descList(offsets(), BLOCK), remote: bad }), 'ERR_INVALID_PARAM');
          expect(e.message).toContain(`remote[${at}]`);
        }
        // And region.descList refuses an offset outside the region.
        const outside = offsets();
        outside[at] = mem.len;
        e = await expectCode(() => mem.descList(outside, BLOCK), 'ERR_INVALID_PARAM');
        expect(e.message).toContain(`descList[${at}]`);
        await stillWorks();
      });
    }
  });

  it('checkRemote takes packed lists', () => {
    expect(a.checkRemote(peer, remoteAt([0, child.ready.len - BLOCK]))).toBe(true);
    expect(a.checkRemote(peer, remoteAt([0, child.ready.len - BLOCK + 1]))).toBe(false);
  });

  it('list shapes: addrs and lens of different lengths, a list of each form paired, counts that differ', async () => {
    const e = await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer, local: { addrs: new Float64Array(2), lens: new Float64Array(3) }, remote: [] }),
      'ERR_INVALID_PARAM',
    );
    expect(e.message).toContain('2 addresses but 3 lengths');
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local: { addrs: [1], lens: [1] } as never, remote: [] }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local: mem.descList([0, 128], 128), remote: remoteAt([0]) }), 'ERR_MISMATCH');
    // Objects on one side, packed on the other.
    const data = random(4096);
    mem.bytes.set(data, 0);
    await a.createTransfer({ op: 'WRITE', peer, local: [mem.desc(0, 4096)], remote: remoteAt([8192], 4096) }).run({ timeoutMs: 30_000 });
    expect((await child.request({ type: 'hash', offset: 8192, len: 4096 })).hash).toBe(sha(data));
    await stillWorks();
  });

  it('a region in use by a packed transfer cannot be deregistered; once it ends it can, and the transfer then fails to post', async () => {
    const src = a.allocate(8 * MiB);
    const offsets = Float64Array.from({ length: 8 * MiB / BLOCK }, (_, i) => i * BLOCK);
    const t = a.createTransfer({ op: 'WRITE', peer, local: src.descList(offsets, BLOCK), remote: remoteAt(offsets) }).post();
    await expectCode(() => src.deregister(), 'ERR_NOT_ALLOWED');
    await t.done({ timeoutMs: 30_000 });
    src.deregister();
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
    await stillWorks();
  });
});
