/**
 * VRAM over the network between two processes, through the staged path: with
 * IXFER_EMULATE_VRAM=1 the shim's CUDA calls use host memory (device 0), so
 * this machine runs the whole staging path through the public API. Set here,
 * before the shim is first loaded; vitest runs each file in its own process,
 * and the peers inherit it. On a GPU machine test/net/gpu/vram-net.mjs runs
 * the same combinations on real CUDA (see vram-cuda.test.ts).
 */
process.env.IXFER_EMULATE_VRAM = '1';
// A peer silent this long while our staged requests wait is gone: short, so that a test can outlast it.
process.env.IXFER_PEER_STALL_MS = '1000';

import fs from 'node:fs';

import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, cuda, IxferError, type MemoryRegion, type Op } from '../../lib/index.js';
import { decodeMetadata, encodeMetadata } from '../../lib/net/metadata.js';
import { expectCode, MiB, random, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

const KiB = 1024;
const CHUNK = MiB;
const SIZE = 8 * MiB;

/** Bytes of a local region, host or device. */
const bytesOf = (r: MemoryRegion, offset: number, len: number): Uint8Array =>
  r.kind === 'VRAM' ? cuda.read(r.desc(offset, len)) : r.bytes.subarray(offset, offset + len);
const fillLocal = (r: MemoryRegion, offset: number, data: Uint8Array): void => {
  if (r.kind === 'VRAM') cuda.write(r.desc(offset, data.length), data);
  else r.bytes.set(data, offset);
};

/** User plus system CPU time of a process, in clock ticks (100 per second). */
function cpuTicks(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

describe('VRAM over the network, staged (emulated VRAM, two processes)', () => {
  let a: Agent;
  let dram: MemoryRegion;
  let vram: MemoryRegion;
  let child: Peer;
  let peer: string;
  const registry = new Registry();
  beforeAll(async () => {
    a = await Agent.create({ name: 'vram-parent', vram: { stagingChunkBytes: CHUNK }, metrics: { registry } });
    dram = a.allocate(SIZE, { name: 'host' });
    vram = a.allocateVram(SIZE, { name: 'device' });
    child = await spawnPeer('vram-child', { size: SIZE, vramSize: SIZE, vram: { stagingChunkBytes: CHUNK } });
    peer = a.loadRemoteMetadata(child.ready.metadata);
  });
  afterAll(async () => {
    await child?.kill();
    await a?.close();
  });

  it('emulation is on, regions say their kind and path, the peer lists its VRAM region', () => {
    expect(cuda.deviceCount()).toBeGreaterThan(0);
    expect(vram.kind).toBe('VRAM');
    expect(vram.path).toBe('staged'); // tcp has no FI_HMEM
    expect(dram.path).toBeUndefined();
    expect(child.ready.vramPath).toBe('staged');
    const regions = a.remoteRegions(peer);
    expect(regions.map((r) => r.kind).sort()).toEqual(['DRAM', 'VRAM']);
    expect(a.remoteRegion(peer, 'vram')).toEqual({ name: 'vram', addr: child.ready.vramAddr, len: SIZE, kind: 'VRAM', devId: 0, path: 'staged' });
    expect(regions.find((r) => r.kind === 'DRAM')).toMatchObject({ devId: 0, path: undefined });
  });

  const kinds = ['DRAM', 'VRAM'] as const;
  // 1 byte, an odd size at odd offsets, and several chunks plus a tail at unaligned offsets.
  const cases = [
    { len: 1, local: 0, remote: 0 },
    { len: 4097, local: 3, remote: 5 },
    { len: 3.5 * MiB + 3, local: 1001, remote: 77 },
  ];
  for (const op of ['WRITE', 'READ'] as Op[]) {
    for (const lk of kinds) {
      for (const rk of kinds) {
        it(`${op} ${lk} here, ${rk} there: every byte, sizes 1 B to 3.5 MiB at unaligned offsets`, async () => {
          const local = lk === 'VRAM' ? vram : dram;
          const remoteAddr = rk === 'VRAM' ? child.ready.vramAddr! : child.ready.addr;
          const region = rk === 'VRAM' ? child.ready.vramAddr : child.ready.addr;
          for (const c of cases) {
            const t = a.createTransfer({
              op,
              peer,
              local: [local.desc(c.local, c.len)],
              remote: [{ addr: remoteAddr + c.remote, len: c.len }],
            });
            expect(t.path).toBe(lk === 'VRAM' || rk === 'VRAM' ? 'staged' : 'host');
            if (op === 'WRITE') {
              const data = random(c.len);
              fillLocal(local, c.local, data);
              await t.run({ timeoutMs: 30_000 });
              expect((await child.request({ type: 'hash', region, offset: c.remote, len: c.len })).hash, `${c.len} B`).toBe(sha(data));
            } else {
              const { hash } = await child.request({ type: 'fill', region, offset: c.remote, len: c.len });
              await t.run({ timeoutMs: 30_000 });
              expect(sha(bytesOf(local, c.local, c.len)), `${c.len} B`).toBe(hash);
            }
          }
        });
      }
    }
  }

  it('connect() to a peer with staged VRAM sets up the staging path too: both pools, and a request served', async () => {
    const fresh = await Agent.create({ name: 'vram-connect', vram: { stagingChunkBytes: CHUNK } });
    try {
      const p = fresh.loadRemoteMetadata(child.ready.metadata);
      const served = (await child.request({ type: 'staging' })).stats.served as number;
      expect(fresh.stagingStats.poolBytes).toBe(0);
      await fresh.connect(p);
      expect(fresh.stagingStats.poolBytes).toBeGreaterThan(0);
      const theirs = (await child.request({ type: 'staging' })).stats;
      expect(theirs.poolBytes).toBeGreaterThan(0);
      expect(theirs.served).toBe(served + 1);
    } finally {
      await fresh.close();
    }
  });

  it('descriptor lists of 1,000 entries, mixing host and device memory on both sides, both ways', async () => {
    const n = 1000;
    const block = 3000; // blocks straddle chunk boundaries
    // Even entries: our VRAM to their VRAM; odd ones: our DRAM to their DRAM, reversed order there.
    const local = Array.from({ length: n }, (_, i) => (i % 2 ? dram : vram).desc(i * block, block));
    const remote = Array.from({ length: n }, (_, i) => ({
      addr: (i % 2 ? child.ready.addr : child.ready.vramAddr!) + (n - 1 - i) * block,
      len: block,
    }));
    const data = random(n * block);
    fillLocal(vram, 0, data);
    fillLocal(dram, 0, data);
    const w = a.createTransfer({ op: 'WRITE', peer, local, remote });
    expect(w.path).toBe('staged');
    await w.run({ timeoutMs: 30_000 });
    for (let i = 0; i < n; i += 97) {
      const region = i % 2 ? child.ready.addr : child.ready.vramAddr;
      const { hash } = await child.request({ type: 'hash', region, offset: (n - 1 - i) * block, len: block });
      expect(hash, `entry ${i}`).toBe(sha(data.subarray(i * block, (i + 1) * block)));
    }
    // And back: zero ours, READ the same lists, compare every byte.
    fillLocal(vram, 0, new Uint8Array(n * block));
    fillLocal(dram, 0, new Uint8Array(n * block));
    await a.createTransfer({ op: 'READ', peer, local, remote }).run({ timeoutMs: 30_000 });
    for (let i = 0; i < n; i++) {
      const got = bytesOf(i % 2 ? dram : vram, i * block, block);
      if (sha(got) !== sha(data.subarray(i * block, (i + 1) * block))) throw new Error(`entry ${i} differs after READ`);
    }
  });

  it('prepared lists (makeTransfer) over VRAM: chosen entries land where their indices say', async () => {
    const block = 256 * KiB + 1;
    const count = 12;
    const pl = a.prepareLocal(vram.blocks(block, count));
    const pr = a.prepareRemote(
      peer,
      Array.from({ length: count }, (_, i) => ({ addr: child.ready.vramAddr! + i * block, len: block })),
    );
    const data = random(count * block);
    fillLocal(vram, 0, data);
    const li = [0, 3, 5, 11];
    const ri = [11, 2, 0, 7];
    const t = a.makeTransfer('WRITE', pl, li, pr, ri);
    expect(t.path).toBe('staged');
    await t.run({ timeoutMs: 30_000 });
    for (let k = 0; k < li.length; k++) {
      const { hash } = await child.request({ type: 'hash', region: child.ready.vramAddr, offset: ri[k]! * block, len: block });
      expect(hash).toBe(sha(data.subarray(li[k]! * block, (li[k]! + 1) * block)));
    }
    // READ with prepared lists, posted twice (a posting is reusable).
    const { hash } = await child.request({ type: 'fill', region: child.ready.vramAddr, offset: 4 * block, len: block });
    const r = a.makeTransfer('READ', pl, [1], pr, [4]);
    await r.run({ timeoutMs: 30_000 });
    await r.run({ timeoutMs: 30_000 });
    expect(sha(bytesOf(vram, block, block))).toBe(hash);
  });

  it('a notification attached to a WRITE into our staged VRAM arrives only once the bytes are in device memory', async () => {
    const md = Buffer.from(a.getLocalMetadata()).toString('base64');
    for (const [count, block] of [
      [1, 1],
      [3, 1536 * KiB + 7], // several chunks, the last one partial
    ] as const) {
      fillLocal(vram, 0, new Uint8Array(count * block));
      const got = a.waitForNotification({ match: 'landed ', timeoutMs: 30_000 });
      const sent = child.request({ type: 'write-notify', metadata: md, offset: 0, count, block, remoteAddr: vram.addr });
      const n = await got;
      // Read at once, on the notification, before anything else runs.
      const now = sha(bytesOf(vram, 0, count * block));
      expect(n.text).toBe(`landed ${now}`);
      expect((await sent).hash).toBe(now);
    }
  });

  it('a notification on a WRITE from our VRAM into the peer VRAM, and a notification given to post()', async () => {
    const data = random(2 * MiB + 11);
    fillLocal(vram, 5, data);
    const t = a.createTransfer({
      op: 'WRITE',
      peer,
      local: [vram.desc(5, data.length)],
      remote: [{ addr: child.ready.vramAddr! + 9, len: data.length }],
      notification: 'made',
    });
    await t.run({ timeoutMs: 30_000 });
    expect((await child.request({ type: 'hash', region: child.ready.vramAddr, offset: 9, len: data.length })).hash).toBe(sha(data));
    t.post('given to post');
    await t.done({ timeoutMs: 30_000 });
  });

  it('remote descriptors outside the peer VRAM region are ERR_NOT_FOUND before anything is posted', async () => {
    const end = child.ready.vramAddr! + SIZE;
    const before = a.stagingStats.pieces;
    // Straddling either end (a range just past it may be another region of the peer's).
    for (const remote of [{ addr: end - 10, len: 20 }, { addr: child.ready.vramAddr! - 1, len: 2 }]) {
      await expectCode(() => a.createTransfer({ op: 'WRITE', peer, local: [vram.desc(0, remote.len)], remote: [remote] }), 'ERR_NOT_FOUND');
      await expectCode(() => a.prepareRemote(peer, [remote]), 'ERR_NOT_FOUND');
    }
    expect(a.checkRemote(peer, [{ addr: end - 10, len: 10 }])).toBe(true);
    expect(a.checkRemote(peer, [{ addr: end - 10, len: 11 }])).toBe(false);
    expect(a.stagingStats.pieces).toBe(before);
    expect(a.inflight).toBe(0);
  });

  it('deregistering a VRAM region in use is ERR_NOT_ALLOWED; once the transfer ends it deregisters', async () => {
    const r = a.allocateVram(4 * MiB, { name: 'busy' });
    expect(() => a.allocate(64, { name: 'busy' })).toThrow(/already named 'busy'/);
    const t = a.createTransfer({ op: 'WRITE', peer, local: [r.desc()], remote: [{ addr: child.ready.vramAddr!, len: r.len }] }).post();
    await expectCode(() => r.deregister(), 'ERR_NOT_ALLOWED');
    await t.done({ timeoutMs: 30_000 });
    r.deregister();
    expect(r.registered).toBe(false);
    // Its name is free again, and its memory left our metadata.
    a.allocateVram(4096, { name: 'busy' }).deregister();
    expect(decodeMetadata(a.getLocalMetadata()).regions.some((x) => x.addr === r.addr)).toBe(false);
  });

  it('the staging pool is back to no chunk held, and its numbers add up', async () => {
    const s = a.stagingStats;
    expect(s.chunksBusy).toBe(0);
    expect(s.chunkBytes).toBe(CHUNK);
    expect(s.poolBytes).toBeGreaterThan(0);
    expect(s.poolBytes).toBeLessThanOrEqual(64 * MiB);
    expect(s.chunksPeak).toBeLessThanOrEqual(s.poolBytes / s.chunkBytes);
    expect(s.pieces).toBeGreaterThan(0);
    expect(s.copiedBytes).toBeGreaterThan(0);
    // We served the peer's staged requests too (its WRITE into our VRAM).
    expect(s.served).toBeGreaterThan(0);
    const theirs = (await child.request({ type: 'staging' })).stats;
    expect(theirs.served).toBeGreaterThan(0);
    expect(theirs.chunksBusy).toBe(0);
    // The same numbers in Prometheus, read at scrape.
    const text = await registry.metrics();
    const metric = (name: string) => Number(new RegExp(`^${name}\\{agent="vram-parent"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    const now = a.stagingStats;
    expect(metric('ixfer_agent_staging_pool_bytes')).toBe(now.poolBytes);
    expect(metric('ixfer_agent_staging_chunks_busy')).toBe(0);
    expect(metric('ixfer_agent_staging_pieces')).toBe(now.pieces);
    expect(metric('ixfer_agent_staging_served')).toBe(now.served);
    expect(metric('ixfer_agent_staging_copied_bytes')).toBe(now.copiedBytes);
  });
});

describe('VRAM regions in metadata', () => {
  it('VRAM regions are listed with host ones in address order (full and partial), kinds 1 and 2, device carried', async () => {
    const a = await Agent.create({ name: 'md-vram' });
    try {
      const regions = [a.allocate(4096), a.allocateVram(8192, { name: 'kv' }), a.allocate(4096, { name: 'h' }), a.allocateVram(100)];
      const md = decodeMetadata(a.getLocalMetadata());
      const sorted = [...regions].sort((x, y) => x.addr - y.addr);
      expect(md.regions.map((r) => r.addr)).toEqual(sorted.map((r) => r.addr));
      for (const r of md.regions) {
        const mine = regions.find((x) => x.addr === r.addr)!;
        expect(r.kind).toBe(mine.kind === 'VRAM' ? 2 : 0); // staged: tcp has no FI_HMEM
        expect(r.devId).toBe(mine.devId);
        expect(r.len).toBe(mine.len);
      }
      expect(md.regions.find((r) => r.name === 'kv')?.kind).toBe(2);
      const partial = decodeMetadata(a.getLocalMetadata({ regions: [regions[3]!, regions[0]!] }));
      expect(partial.complete).toBe(false);
      expect(partial.regions.map((r) => r.addr)).toEqual([regions[3]!, regions[0]!].sort((x, y) => x.addr - y.addr).map((r) => r.addr));
      // A deregistered VRAM region cannot be sent in partial metadata.
      regions[3]!.deregister();
      await expectCode(() => a.getLocalMetadata({ regions: [regions[3]!] }), 'ERR_NOT_FOUND');
    } finally {
      await a.close();
    }
  });

  it('kinds 0..2 load; another kind is ERR_INVALID_PARAM and changes nothing', async () => {
    const [a, b] = [await Agent.create({ name: 'md-a' }), await Agent.create({ name: 'md-b' })];
    try {
      b.allocate(4096);
      b.allocateVram(4096);
      b.allocateVram(4096, { staged: true });
      const md = decodeMetadata(b.getLocalMetadata());
      // Another device than this emulation has, to see it carried.
      const withKinds = (kinds: number[]) =>
        encodeMetadata({ ...md, regions: md.regions.map((r, i) => ({ ...r, kind: kinds[i]!, devId: kinds[i] ? 3 : 0 })) });
      expect(a.loadRemoteMetadata(withKinds([0, 1, 2]))).toBe('md-b');
      expect(a.remoteRegions('md-b').map((r) => [r.kind, r.path, r.devId])).toEqual([
        ['DRAM', undefined, 0],
        ['VRAM', 'gpudirect', 3],
        ['VRAM', 'staged', 3],
      ]);
      for (const kind of [3, 7, 0xffff]) {
        const err = await expectCode(() => a.loadRemoteMetadata(withKinds([0, kind, 2])), 'ERR_INVALID_PARAM');
        expect(err.message).toContain(`unknown kind ${kind}`);
      }
      expect(a.remoteRegions('md-b')).toHaveLength(3);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('VRAM options and forced staging', () => {
  it('staged: true and vram.mode staged make staged regions; mode gpudirect on tcp (no FI_HMEM) is ERR_NOT_SUPPORTED', async () => {
    const a = await Agent.create({ name: 'forced', vram: { mode: 'staged' } });
    try {
      expect(a.allocateVram(4096).path).toBe('staged');
      expect(a.allocateVram(4096, { staged: true }).path).toBe('staged');
      expect(a.allocateVram(4096, 0).devId).toBe(0); // the old signature: a device id
    } finally {
      await a.close();
    }
    const err = await expectCode(() => Agent.create({ name: 'gdr', provider: 'tcp', vram: { mode: 'gpudirect' } }), 'ERR_NOT_SUPPORTED');
    expect(err.message).toMatch(/HMEM/i);
  });

  it('registerVram of memory another owner allocated: named, staged, refused twice, freed by its owner only', async () => {
    const [a, owner] = [await Agent.create({ name: 'reg' }), await Agent.create({ name: 'owner' })];
    try {
      const mem = owner.allocateVram(65536);
      const r = a.registerVram({ addr: BigInt(mem.addr), len: mem.len }, { name: 'theirs', staged: true });
      expect([r.kind, r.path, r.devId, r.name]).toEqual(['VRAM', 'staged', 0, 'theirs']);
      await expectCode(() => a.registerVram({ addr: mem.addr + 4096, len: 1 }), 'ERR_INVALID_PARAM'); // overlaps
      await expectCode(() => a.allocate(64, { name: 'theirs' }), 'ERR_INVALID_PARAM'); // one namespace
      r.deregister();
      // Past the allocation's end: peers would read (and write) whatever follows it.
      const tooLong = await expectCode(() => a.registerVram({ addr: mem.addr, len: 2 ** 30 }), 'ERR_INVALID_PARAM');
      expect(tooLong.message).toContain('runs past the end of its device allocation');
      cuda.write(mem.desc(0, 3), new Uint8Array([1, 2, 3])); // still the owner's, still there
      expect([...cuda.read(mem.desc(0, 3))]).toEqual([1, 2, 3]);
      // A range running past the allocation's end is refused before anything is copied.
      const past = { addr: mem.addr + mem.len - 16, len: MiB };
      const err = await expectCode(() => cuda.write(past, new Uint8Array(MiB)), 'ERR_INVALID_PARAM');
      expect(err.message).toContain('runs past the end of its device allocation');
      await expectCode(() => cuda.read(past), 'ERR_INVALID_PARAM');
      await expectCode(() => cuda.fill(past, 7), 'ERR_INVALID_PARAM');
      // Arguments of the wrong kind: typed errors, nothing copied.
      await expectCode(() => cuda.write(mem.desc(0, 3), 'abc' as never), 'ERR_INVALID_PARAM');
      await expectCode(() => cuda.write(mem.desc(0, 3), [1, 2, 3] as never), 'ERR_INVALID_PARAM');
      await expectCode(() => cuda.read({ addr: mem.addr, len: 2 ** 40 }), 'ERR_INVALID_PARAM');
      for (const v of [256, -1, NaN, 'x']) await expectCode(() => cuda.fill(mem.desc(0, 3), v as never), 'ERR_INVALID_PARAM');
      for (const p of ['x', null, -1, 1.5]) await expectCode(() => cuda.deviceOf(p as never), 'ERR_INVALID_PARAM');
      expect([...cuda.read({ addr: mem.addr + mem.len - 16, len: 16 })]).toEqual(new Array(16).fill(0));
      await expectCode(() => a.registerVram({ addr: a.allocate(4096).addr, len: 4096 }), 'ERR_INVALID_PARAM'); // host memory
      await expectCode(() => a.allocateVram(4096, { devId: -1 }), 'ERR_INVALID_PARAM');
      await expectCode(() => a.allocateVram(4096, { staged: 'yes' } as never), 'ERR_INVALID_PARAM');
      await expectCode(() => a.allocateVram(0), 'ERR_INVALID_PARAM');
      await expectCode(() => a.registerVram({ addr: mem.addr, len: 4096 }, { name: '' }), 'ERR_INVALID_PARAM');
    } finally {
      await Promise.all([a.close(), owner.close()]);
    }
    const bad = [{ stagingChunkBytes: 1024 }, { stagingBytes: MiB, stagingChunkBytes: MiB }, { mode: 'fast' }, { stagingBytes: 0 }, { extra: 1 }];
    for (const vram of bad) {
      await expectCode(() => Agent.create({ name: 'bad', vram: vram as never }), 'ERR_INVALID_PARAM');
    }
  });
});

describe('the staging pool under load and faults', () => {
  const chunk = 64 * KiB;
  const pool = 4 * chunk; // two chunks for our transfers, two for the peer's requests
  let a: Agent;
  let vram: MemoryRegion;
  beforeAll(async () => {
    a = await Agent.create({ name: 'pool', vram: { stagingBytes: pool, stagingChunkBytes: chunk } });
    vram = a.allocateVram(64 * MiB);
  });
  afterAll(async () => {
    await a?.close();
  });

  it('256 concurrent VRAM WRITEs and READs with a pool of 4 chunks: all bytes right, never more than the pool held', async () => {
    const child = await spawnPeer('pool-peer', { vramSize: 32 * MiB, vram: { stagingBytes: pool, stagingChunkBytes: chunk } });
    try {
      const peer = a.loadRemoteMetadata(child.ready.metadata);
      const block = 100 * KiB + 3; // two chunks and a bit each
      const n = 256;
      const data = random(n * block);
      fillLocal(vram, 0, data);
      const remote = (i: number) => ({ addr: child.ready.vramAddr! + i * block, len: block });
      const writes = Array.from({ length: n }, (_, i) => a.createTransfer({ op: 'WRITE', peer, local: [vram.desc(i * block, block)], remote: [remote(i)] }).post());
      await Promise.all(writes.map((t) => t.done({ timeoutMs: 60_000 })));
      expect((await child.request({ type: 'hash', region: child.ready.vramAddr, offset: 0, len: n * block })).hash).toBe(sha(data));
      // READ it back into another part of our VRAM.
      const base = n * block;
      const reads = Array.from({ length: n }, (_, i) => a.createTransfer({ op: 'READ', peer, local: [vram.desc(base + i * block, block)], remote: [remote(i)] }).post());
      await Promise.all(reads.map((t) => t.done({ timeoutMs: 60_000 })));
      expect(sha(bytesOf(vram, base, n * block))).toBe(sha(data));

      const ours = a.stagingStats;
      expect(ours.poolBytes).toBe(pool);
      expect(ours.chunksPeak).toBeLessThanOrEqual(pool / chunk);
      expect(ours.chunksBusy).toBe(0);
      const theirs = (await child.request({ type: 'staging' })).stats;
      expect(theirs.poolBytes).toBeLessThanOrEqual(pool);
      expect(theirs.chunksPeak).toBeLessThanOrEqual(pool / chunk);
      expect(theirs.served).toBeGreaterThanOrEqual(2 * n);
      expect(theirs.chunksBusy).toBe(0);
    } finally {
      await child.kill();
    }
  });

  it('a peer SIGKILLed mid-stream: typed errors, no chunk left held, and the agent works with a new peer', async () => {
    const child = await spawnPeer('pool-victim', { vramSize: 8 * MiB, vram: { stagingBytes: pool, stagingChunkBytes: chunk } });
    const peer = a.loadRemoteMetadata(child.ready.metadata);
    const piecesBefore = a.stagingStats.pieces;
    const ts = Array.from({ length: 32 }, (_, i) =>
      a
        .createTransfer({ op: i % 2 ? 'READ' : 'WRITE', peer, local: [vram.desc(i * 4 * MiB % (24 * MiB), 4 * MiB)], remote: [{ addr: child.ready.vramAddr!, len: 4 * MiB }] })
        .post(),
    );
    // Mid-stream: once pieces are moving (or after 5 s, when the assertions below say what went wrong).
    const until = Date.now() + 5000;
    while (a.stagingStats.pieces === piecesBefore && Date.now() < until) await new Promise((r) => setTimeout(r, 1));
    await child.kill('SIGKILL');
    const outcomes = await Promise.all(ts.map((t) => t.done({ timeoutMs: 60_000 }).then(() => 'ok', (e: IxferError) => e.code)));
    expect(outcomes.filter((o) => o !== 'ok').length).toBeGreaterThan(0);
    for (const o of outcomes) expect(['ok', 'ERR_REMOTE_DISCONNECT']).toContain(o);
    expect(a.stagingStats.chunksBusy).toBe(0);
    expect(a.inflight).toBe(0);

    const again = await spawnPeer('pool-victim', { vramSize: 8 * MiB });
    try {
      const peer2 = a.loadRemoteMetadata(again.ready.metadata);
      const data = random(3 * MiB);
      fillLocal(vram, 0, data);
      await a.createTransfer({ op: 'WRITE', peer: peer2, local: [vram.desc(0, data.length)], remote: [{ addr: again.ready.vramAddr!, len: data.length }] }).run({ timeoutMs: 30_000 });
      expect((await again.request({ type: 'hash', region: again.ready.vramAddr, offset: 0, len: data.length })).hash).toBe(sha(data));
      expect(a.stagingStats.chunksBusy).toBe(0);
    } finally {
      await again.kill();
    }
  });

  it('transfers that time out (the peer stopped) leave no chunk held once they end, and the peer works again', async () => {
    const child = await spawnPeer('pool-sleeper', { vramSize: 8 * MiB });
    const peer = a.loadRemoteMetadata(child.ready.metadata);
    try {
      await a.connect(peer);
      process.kill(child.ready.pid, 'SIGSTOP');
      const ts = (['WRITE', 'READ'] as Op[]).map((op) =>
        a.createTransfer({ op, peer, local: [vram.desc(0, 4 * MiB)], remote: [{ addr: child.ready.vramAddr!, len: 4 * MiB }] }).post(),
      );
      // Both at once: the peer stays silent for less than IXFER_PEER_STALL_MS.
      await Promise.all(ts.map((t) => expectCode(() => t.done({ timeoutMs: 300 }), 'ERR_TIMEOUT')));
      // What the provider already has may only end once the peer runs again.
      process.kill(child.ready.pid, 'SIGCONT');
      for (const t of ts) {
        await t.settled();
        expect(t.status).toBe('error');
      }
      expect(a.stagingStats.chunksBusy).toBe(0);
      // Past IXFER_PEER_STALL_MS since the peer went silent: it answers again, so it is not gone.
      await new Promise((r) => setTimeout(r, 1200));
      const data = random(MiB + 1);
      fillLocal(vram, 0, data);
      await a.createTransfer({ op: 'WRITE', peer, local: [vram.desc(0, data.length)], remote: [{ addr: child.ready.vramAddr!, len: data.length }] }).run({ timeoutMs: 30_000 });
      expect((await child.request({ type: 'hash', region: child.ready.vramAddr, offset: 0, len: data.length })).hash).toBe(sha(data));
      // We probed the silent peer's address: its provider accepted the probe,
      // and must not be left polling a dead socket (it once spun a core).
      const before = cpuTicks(child.ready.pid);
      await new Promise((r) => setTimeout(r, 1000));
      expect(cpuTicks(child.ready.pid) - before).toBeLessThan(30); // of 100 per second
    } finally {
      process.kill(child.ready.pid, 'SIGCONT');
      await child.kill();
    }
    expect(a.inflight).toBe(0);
    expect(a.stagingStats.chunksBusy).toBe(0);
  });
});
