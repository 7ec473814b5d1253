import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, deserializeDescriptors, serializeDescriptors, type MemoryRegion } from '../../lib/index.js';
import { agents, connectAll, expectCode, MiB, random } from '../support/helpers.js';

describe('two agents in one process', () => {
  let a: Agent;
  let b: Agent;
  let c: Agent;
  let aMem: MemoryRegion;
  let bMem: MemoryRegion;
  beforeAll(async () => {
    [a, b, c] = await agents('a', 'b', 'c');
    aMem = a.allocate(64 * MiB + 4096);
    bMem = b.allocate(64 * MiB + 4096);
    connectAll([a, b, c]);
  });
  afterAll(async () => {
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  /** After any failure test: a good transfer on the same agent. */
  async function stillWorks(): Promise<void> {
    a.loadRemoteMetadata(b.getLocalMetadata());
    const data = random(4096);
    aMem.bytes.set(data, 0);
    await a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 4096)], remote: [bMem.desc(0, 4096)] }).run({
      timeoutMs: 10_000,
    });
    expect(Buffer.compare(bMem.bytes.subarray(0, 4096), data)).toBe(0);
  }

  for (const size of [1, 63, 4095, 65536, MiB + 3, 64 * MiB]) {
    it(`WRITE then READ of ${size} bytes, checked byte for byte`, async () => {
      const data = random(size);
      aMem.bytes.set(data, 7);
      const w = a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(7, size)], remote: [bMem.desc(11, size)] });
      await w.run({ timeoutMs: 30_000 });
      expect(w.status).toBe('done');
      expect(Buffer.compare(bMem.bytes.subarray(11, 11 + size), data)).toBe(0);
      aMem.bytes.fill(0, 0, size + 16);
      await a.createTransfer({ op: 'READ', peer: 'b', local: [aMem.desc(3, size)], remote: [bMem.desc(11, size)] }).run({
        timeoutMs: 30_000,
      });
      expect(Buffer.compare(aMem.bytes.subarray(3, 3 + size), data)).toBe(0);
    });
  }

  it('4,096 descriptors in one transfer, scattered, both ways', async () => {
    const n = 4096;
    const block = 1000; // odd size: descriptors do not align with anything
    const data = random(n * block);
    aMem.bytes.set(data, 0);
    // local block i goes to remote slot (n - 1 - i)
    const local = Array.from({ length: n }, (_, i) => aMem.desc(i * block, block));
    const remote = Array.from({ length: n }, (_, i) => bMem.desc((n - 1 - i) * 1024, block));
    await a.createTransfer({ op: 'WRITE', peer: 'b', local, remote }).run({ timeoutMs: 30_000 });
    for (let i = 0; i < n; i++) {
      const got = bMem.bytes.subarray((n - 1 - i) * 1024, (n - 1 - i) * 1024 + block);
      expect(Buffer.compare(got, data.subarray(i * block, (i + 1) * block))).toBe(0);
    }
    aMem.bytes.fill(0, 0, n * block);
    await a.createTransfer({ op: 'READ', peer: 'b', local, remote }).run({ timeoutMs: 30_000 });
    expect(Buffer.compare(aMem.bytes.subarray(0, n * block), data)).toBe(0);
  });

  it('a single 256 MiB descriptor', async () => {
    const size = 256 * MiB;
    const src = a.allocate(size);
    const dst = b.allocate(size);
    const data = random(MiB);
    for (let o = 0; o < size; o += MiB) src.bytes.set(data, o);
    src.bytes[size - 1] = 0x5a;
    a.loadRemoteMetadata(b.getLocalMetadata());
    await a.createTransfer({ op: 'WRITE', peer: 'b', local: [src.desc()], remote: [dst.desc()] }).run({ timeoutMs: 60_000 });
    expect(Buffer.compare(dst.bytes, src.bytes)).toBe(0);
    src.deregister();
    dst.deregister();
  });

  it('256 transfers in flight to one peer, then to three peers, then both directions', async () => {
    const block = 16384;
    const data = random(256 * block);
    aMem.bytes.set(data, 0);
    const ts = Array.from({ length: 256 }, (_, i) =>
      a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(i * block, block)], remote: [bMem.desc(i * block, block)] }),
    );
    for (const t of ts) t.post();
    expect(a.inflight).toBeGreaterThan(0);
    await Promise.all(ts.map((t) => t.done({ timeoutMs: 30_000 })));
    expect(Buffer.compare(bMem.bytes.subarray(0, 256 * block), data)).toBe(0);

    const cMem = c.allocate(256 * block);
    const aSelf = a.allocate(256 * block);
    connectAll([a, b, c]);
    const targets: [string, MemoryRegion][] = [
      ['b', bMem],
      ['c', cMem],
      ['a', aSelf], // the agent itself
    ];
    bMem.bytes.fill(0, 0, 256 * block);
    const many = targets.flatMap(([peer, mem]) =>
      Array.from({ length: 256 }, (_, i) =>
        a.createTransfer({ op: 'WRITE', peer, local: [aMem.desc(i * block, block)], remote: [mem.desc(i * block, block)] }).post(),
      ),
    );
    await Promise.all(many.map((t) => t.done({ timeoutMs: 30_000 })));
    for (const [, mem] of targets) expect(Buffer.compare(mem.bytes.subarray(0, 256 * block), data)).toBe(0);

    // both directions at once: a writes to b while b writes to a
    const back = random(64 * block);
    bMem.bytes.set(back, 32 * MiB);
    const ab = Array.from({ length: 64 }, (_, i) =>
      a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(i * block, block)], remote: [bMem.desc(i * block, block)] }).post(),
    );
    const ba = Array.from({ length: 64 }, (_, i) =>
      b
        .createTransfer({
          op: 'WRITE',
          peer: 'a',
          local: [bMem.desc(32 * MiB + i * block, block)],
          remote: [aMem.desc(32 * MiB + i * block, block)],
        })
        .post(),
    );
    await Promise.all([...ab, ...ba].map((t) => t.done({ timeoutMs: 30_000 })));
    expect(Buffer.compare(bMem.bytes.subarray(0, 64 * block), data.subarray(0, 64 * block))).toBe(0);
    expect(Buffer.compare(aMem.bytes.subarray(32 * MiB, 32 * MiB + 64 * block), back)).toBe(0);
    cMem.deregister();
    aSelf.deregister();
  });

  it('10,000 transfers in flight exhaust nothing', async () => {
    const n = 10_000;
    const ts = Array.from({ length: n }, (_, i) =>
      a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc((i % 1024) * 64, 64)], remote: [bMem.desc(i * 64, 64)] }),
    );
    aMem.bytes.set(random(64 * 1024), 0);
    for (const t of ts) t.post();
    await Promise.all(ts.map((t) => t.done({ timeoutMs: 60_000 })));
    expect(ts.every((t) => t.status === 'done')).toBe(true);
    expect(Buffer.compare(bMem.bytes.subarray(9999 * 64, 10_000 * 64), aMem.bytes.subarray((9999 % 1024) * 64, (9999 % 1024) * 64 + 64))).toBe(0);
    expect(a.inflight).toBe(0);
  });

  it('prepared lists: transfers by index, reposted in a serving loop', async () => {
    const block = 4096;
    const local = a.prepareLocal(aMem.blocks(block, 16));
    const remote = a.prepareRemote('b', bMem.blocks(block, 16));
    const t = a.makeTransfer('WRITE', local, [0, 5, 15], remote, [1, 2, 3]);
    for (let round = 0; round < 20; round++) {
      const data = random(block);
      aMem.bytes.set(data, 5 * block);
      t.post();
      await expectCode(() => t.post(), 'ERR_REPOST_ACTIVE');
      await t.done({ timeoutMs: 10_000 });
      expect(Buffer.compare(bMem.bytes.subarray(2 * block, 3 * block), data)).toBe(0);
    }
    await expectCode(() => a.makeTransfer('WRITE', local, [0, 1], remote, [0]), 'ERR_MISMATCH');
    await expectCode(() => a.makeTransfer('WRITE', local, [16], remote, [0]), 'ERR_INVALID_PARAM');
    await expectCode(() => a.makeTransfer('COPY' as never, local, [0], remote, [0]), 'ERR_INVALID_PARAM');
    t.release();
    await expectCode(() => t.post(), 'ERR_NOT_ALLOWED');
    await stillWorks();
  });

  it('mismatched lists are ERR_MISMATCH', async () => {
    await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 8)], remote: [bMem.desc(0, 8), bMem.desc(8, 8)] }),
      'ERR_MISMATCH',
    );
    await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 8)], remote: [bMem.desc(0, 9)] }),
      'ERR_MISMATCH',
    );
    await stillWorks();
  });

  it('unregistered memory on either side is ERR_NOT_FOUND before anything is posted', async () => {
    const stray = Buffer.alloc(64);
    await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer: 'b', local: [{ addr: Number(stray.byteOffset) + 1, len: 8 }], remote: [bMem.desc(0, 8)] }),
      'ERR_NOT_FOUND',
    );
    const e = await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 8)], remote: [{ addr: bMem.addr + bMem.len - 4, len: 8 }] }),
      'ERR_NOT_FOUND',
    );
    expect(e.message).toContain("'b'");
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer: 'nobody', local: [], remote: [] }), 'ERR_NOT_FOUND');
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer: 'b', local: [{ addr: -1, len: 1 }], remote: [] }), 'ERR_INVALID_PARAM');
    await stillWorks();
  });

  it('empty lists and 0-byte descriptors move nothing and complete; the other descriptors of the list arrive', async () => {
    a.loadRemoteMetadata(b.getLocalMetadata());
    await a.createTransfer({ op: 'WRITE', peer: 'b', local: [], remote: [] }).run({ timeoutMs: 10_000 });
    await a.createTransfer({ op: 'READ', peer: 'b', local: [aMem.desc(0, 0)], remote: [bMem.desc(0, 0)] }).run({ timeoutMs: 10_000 });
    const data = random(8192);
    aMem.bytes.set(data, 0);
    const zero = (m: MemoryRegion) => m.desc(100, 0);
    const local = [zero(aMem), aMem.desc(0, 4096), zero(aMem), aMem.desc(4096, 4096), zero(aMem)];
    const remote = [zero(bMem), bMem.desc(0, 4096), zero(bMem), bMem.desc(4096, 4096), zero(bMem)];
    for (let i = 0; i < 20; i++) await a.createTransfer({ op: 'WRITE', peer: 'b', local, remote }).run({ timeoutMs: 10_000 });
    expect(Buffer.compare(bMem.bytes.subarray(0, 8192), data)).toBe(0);
    await stillWorks();
  });

  it('bad arguments to the smaller calls are ERR_INVALID_PARAM (never a TypeError), and nothing is left in flight', async () => {
    const bad = (f: () => unknown) => expectCode(f, 'ERR_INVALID_PARAM');
    await bad(() => aMem.desc(0n as never));
    await bad(() => aMem.desc(0, '8' as never));
    for (const [size, count] of [[4096, Infinity], [4096, 2 ** 32], [4096, -1], [4096, 1.5], [4096, '2'], [NaN, 1]]) {
      await bad(() => aMem.blocks(size as never, count as never));
    }
    await bad(() => aMem.descList(null as never, 1));
    await bad(() => aMem.descList({ length: 1e10 } as never, 1));
    await bad(() => aMem.descList([0], null as never));
    // run() with bad options posts nothing: the transfer runs right after.
    a.loadRemoteMetadata(b.getLocalMetadata());
    const t = a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 64)], remote: [bMem.desc(0, 64)] });
    for (const o of [{ timeoutMs: -1 }, null, { foo: 1 }]) await bad(() => t.run(o as never));
    expect(t.status).toBe('idle');
    // A promise-returning call rejects rather than throws: .catch() alone sees the error.
    const rejected = t.done({ timeoutMs: -1 });
    expect(rejected).toBeInstanceOf(Promise);
    await bad(() => rejected);
    await t.run({ timeoutMs: 10_000 });
    // Prepared lists: only this agent's, and options checked.
    const local = a.prepareLocal([aMem.desc(0, 64)]);
    const remote = a.prepareRemote('b', [bMem.desc(0, 64)]);
    c.loadRemoteMetadata(b.getLocalMetadata());
    const theirs = c.prepareRemote('b', [bMem.desc(0, 64)]);
    await bad(() => a.makeTransfer('WRITE', {} as never, [0], remote, [0]));
    await bad(() => a.makeTransfer('WRITE', local, [0], null as never, [0]));
    await bad(() => a.makeTransfer('WRITE', local, [0], theirs, [0]));
    await bad(() => a.makeTransfer('WRITE', local, [0], remote, [0], { foo: 1 } as never));
    await bad(() => a.makeTransfer('WRITE', local, [0], remote, [0], null as never));
    await a.makeTransfer('WRITE', local, [0], remote, [0]).run({ timeoutMs: 10_000 });
    // checkRemote checks packed lists before anything else.
    await bad(() => a.checkRemote('b', { addrs: Float64Array.of(bMem.addr), lens: Float64Array.of(-1) }));
    await bad(() => a.checkRemote('b', { addrs: Float64Array.of(NaN), lens: Float64Array.of(1) }));
    await bad(() => a.checkRemote('nobody', null as never));
    // A region listed twice in partial metadata is listed once.
    expect(b.loadRemoteMetadata(a.getLocalMetadata({ regions: [aMem, aMem] }))).toBe('a');
    await bad(() => serializeDescriptors([{ addr: 2 ** 53 - 1, len: 2 ** 53 - 1 }]));
    await stillWorks();
  });

  it('descriptor lists: what is accepted, what is refused with the field named, and copies are taken', async () => {
    // bigint addresses, absent devId: accepted as zod's schema says.
    const data = random(4096);
    aMem.bytes.set(data, 0);
    await a
      .createTransfer({ op: 'WRITE', peer: 'b', local: [{ addr: BigInt(aMem.addr), len: 4096 }], remote: [{ ...bMem.desc(0, 4096) }] })
      .run({ timeoutMs: 10_000 });
    expect(Buffer.compare(bMem.bytes.subarray(0, 4096), data)).toBe(0);
    for (const bad of [{ addr: 1.5, len: 1 }, { addr: aMem.addr, len: -1 }, { addr: aMem.addr, len: 1, devId: 70_000 }, null, 'x']) {
      const e = await expectCode(
        () => a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, 1), bad as never], remote: [] }),
        'ERR_INVALID_PARAM',
      );
      expect(e.message).toContain('transfer.local.1');
    }
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer: 'b', local: 'x' as never, remote: [] }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.makeTransfer('WRITE', a.prepareLocal([]), [-1], b.prepareLocal([]) as never, [0]), 'ERR_INVALID_PARAM');
    // A descriptor changed after prepareLocal does not change the prepared list.
    const d = aMem.desc(0, 4096);
    const local = a.prepareLocal([d]);
    d.addr = 0;
    expect(local.descs[0]!.addr).toBe(aMem.addr);
    await stillWorks();
  });

  it('deregistering memory in use is refused; waiting first works', async () => {
    const src = a.allocate(16 * MiB);
    const t = a.createTransfer({ op: 'WRITE', peer: 'b', local: [src.desc()], remote: [bMem.desc(0, 16 * MiB)] }).post();
    await expectCode(() => src.deregister(), 'ERR_NOT_ALLOWED');
    await t.done({ timeoutMs: 30_000 });
    src.deregister();
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
    await stillWorks();
  });

  it('invalidated and reloaded peers: old transfers are ERR_NOT_FOUND', async () => {
    const cMem = c.allocate(4096);
    a.loadRemoteMetadata(c.getLocalMetadata());
    const t = a.createTransfer({ op: 'WRITE', peer: 'c', local: [aMem.desc(0, 8)], remote: [cMem.desc(0, 8)] });
    a.invalidateRemote('c');
    expect(a.peers).not.toContain('c');
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
    await expectCode(() => a.invalidateRemote('c'), 'ERR_NOT_FOUND');
    // a restarted peer under the same name: new instance, new address
    const c2 = await Agent.create({ name: 'c' });
    const m2 = c2.allocate(4096);
    a.loadRemoteMetadata(c.getLocalMetadata());
    const old = a.createTransfer({ op: 'WRITE', peer: 'c', local: [aMem.desc(0, 8)], remote: [cMem.desc(0, 8)] });
    a.loadRemoteMetadata(c2.getLocalMetadata());
    await expectCode(() => old.post(), 'ERR_NOT_FOUND');
    const data = random(8);
    aMem.bytes.set(data, 0);
    await a.createTransfer({ op: 'WRITE', peer: 'c', local: [aMem.desc(0, 8)], remote: [m2.desc(0, 8)] }).run({ timeoutMs: 10_000 });
    expect(Buffer.compare(m2.bytes.subarray(0, 8), data)).toBe(0);
    await c2.close();
    a.invalidateRemote('c');
    await stillWorks();
  });

  it('past metadata.maxPeers the least recently used peer is dropped, with a peer event; the others keep working', async () => {
    await using hub = await Agent.create({ name: 'hub', metadata: { maxPeers: 2 } });
    const [p1, p2, p3] = await Promise.all(['lru-1', 'lru-2', 'lru-3'].map((name) => Agent.create({ name })));
    try {
      const events: unknown[] = [];
      hub.on('peer', (e) => events.push(e));
      const mem = hub.allocate(4096);
      const dst = p1!.allocate(4096);
      hub.loadRemoteMetadata(p1!.getLocalMetadata());
      hub.loadRemoteMetadata(p2!.getLocalMetadata());
      const t = hub.createTransfer({ op: 'WRITE', peer: 'lru-1', local: [mem.desc(0, 64)], remote: [dst.desc(0, 64)] }); // lru-1 used last
      hub.loadRemoteMetadata(p3!.getLocalMetadata());
      expect(hub.peers.sort()).toEqual(['lru-1', 'lru-3']);
      await Promise.resolve();
      expect(events).toEqual([{ name: 'lru-2', action: 'dropped', via: 'limit' }]);
      await expectCode(() => hub.createTransfer({ op: 'WRITE', peer: 'lru-2', local: [mem.desc(0, 64)], remote: [{ addr: 0, len: 64 }] }), 'ERR_NOT_FOUND');
      const data = random(64);
      mem.bytes.set(data, 0);
      await t.run({ timeoutMs: 10_000 });
      expect(Buffer.compare(dst.bytes.subarray(0, 64), data)).toBe(0);
      // Posting counts as use: after two posts to lru-1, loading lru-2 again drops lru-3.
      await t.run({ timeoutMs: 10_000 });
      hub.loadRemoteMetadata(p2!.getLocalMetadata());
      expect(hub.peers.sort()).toEqual(['lru-1', 'lru-2']);
      await expectCode(() => Agent.create({ name: 'bad', metadata: { maxPeers: 0 } }), 'ERR_INVALID_PARAM');
    } finally {
      await Promise.all([p1, p2, p3].map((x) => x?.close()));
    }
  });

  it('partial metadata adds regions; stale metadata is refused', async () => {
    const extra = b.allocate(4096);
    const partial = b.getLocalMetadata({ regions: [extra], includeConnection: false });
    const before = b.getLocalMetadata();
    expect(a.checkRemote('b', [extra.desc()])).toBe(false);
    a.loadRemoteMetadata(partial);
    expect(a.checkRemote('b', [extra.desc(), bMem.desc(0, 16)])).toBe(true);
    const fresh = b.allocate(4096);
    a.loadRemoteMetadata(b.getLocalMetadata());
    await expectCode(() => a.loadRemoteMetadata(before), 'ERR_INVALID_PARAM');
    expect(a.checkRemote('b', [fresh.desc()])).toBe(true);
    // unknown peer without connection information
    const d = await Agent.create({ name: 'd' });
    await expectCode(() => a.loadRemoteMetadata(d.getLocalMetadata({ includeConnection: false })), 'ERR_NOT_FOUND');
    await expectCode(() => a.getLocalMetadata({ regions: [extra] }), 'ERR_NOT_FOUND');
    await d.close();
    extra.deregister();
    fresh.deregister();
    await stillWorks();
  });

  it('a peer with this agent’s own name is refused', async () => {
    const twin = await Agent.create({ name: 'a' });
    await expectCode(() => a.loadRemoteMetadata(twin.getLocalMetadata()), 'ERR_INVALID_PARAM');
    await twin.close();
  });

  it('a transfer to an address nobody serves fails or times out, and the agent goes on', async () => {
    const ghost = await Agent.create({ name: 'ghost' });
    const mem = ghost.allocate(4096);
    const md = ghost.getLocalMetadata();
    const desc = mem.desc(0, 64);
    await ghost.close();
    a.loadRemoteMetadata(md);
    const t = a.createTransfer({ op: 'WRITE', peer: 'ghost', local: [aMem.desc(0, 64)], remote: [desc] }).post();
    const started = Date.now();
    const err = await t.done({ timeoutMs: 2000 }).catch((e: { code?: string }) => e);
    expect(['ERR_TIMEOUT', 'ERR_REMOTE_DISCONNECT']).toContain((err as { code?: string }).code);
    expect(Date.now() - started).toBeLessThan(5000);
    a.invalidateRemote('ghost');
    await stillWorks();
  });

  it('an AbortSignal cancels the wait with ERR_CANCELED', async () => {
    const ac = new AbortController();
    ac.abort();
    const t = a.createTransfer({ op: 'WRITE', peer: 'b', local: [aMem.desc(0, MiB)], remote: [bMem.desc(0, MiB)] }).post();
    await expectCode(() => t.done({ signal: ac.signal }), 'ERR_CANCELED');
    // the transfer still ends, one way or the other
    await t.done({ timeoutMs: 10_000 }).catch(() => undefined);
    expect(['done', 'error']).toContain(t.status);
    await expectCode(() => a.createTransfer({ op: 'WRITE', peer: 'b', local: [], remote: [] }).done(), 'ERR_NOT_ALLOWED');
    await expectCode(() => t.done({ timeoutMs: -5 }), 'ERR_INVALID_PARAM');
    await stillWorks();
  });

  it('an empty transfer completes', async () => {
    await a.createTransfer({ op: 'READ', peer: 'b', local: [], remote: [] }).run({ timeoutMs: 5000 });
  });
});

describe('serialized descriptor lists', () => {
  it('round-trip and refuse malformed bytes', async () => {
    const descs = [
      { addr: 4096, len: 10, devId: 0 },
      { addr: 2 ** 40, len: 2 ** 30, devId: 3 },
    ];
    expect(deserializeDescriptors(serializeDescriptors(descs))).toEqual(descs);
    const bytes = serializeDescriptors(descs);
    await expectCode(() => deserializeDescriptors(bytes.subarray(0, bytes.length - 1)), 'ERR_INVALID_PARAM');
    await expectCode(() => deserializeDescriptors(new Uint8Array(5)), 'ERR_INVALID_PARAM');
    const wrongVersion = new Uint8Array(bytes);
    wrongVersion[4] = 9;
    await expectCode(() => deserializeDescriptors(wrongVersion), 'ERR_INVALID_PARAM');
    await expectCode(() => serializeDescriptors([{ addr: 1.5, len: 1 }]), 'ERR_INVALID_PARAM');
  });
});
