import crypto from 'node:crypto';

import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { Agent, IxferError, type ExchangeOptions, type MemoryRegion } from '../../lib/index.js';
import { startEtcd, type EtcdServer } from '../support/etcd-server.js';
import { expectCode, MiB, nextPeerEvent, random, runExample, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

/** Options of an agent in its own etcd namespace. */
const inNamespace = (namespace: string, leaseTtlSec = 2): ExchangeOptions => ({
  etcd: { endpoints: [etcd.endpoint], namespace, leaseTtlSec },
  timeoutMs: 10_000,
});
const newNamespace = () => `ixfer-test-${crypto.randomBytes(4).toString('hex')}`;

describe('three agents in three processes find each other through etcd', () => {
  let ns: string;
  let p: Agent;
  let mem: MemoryRegion;
  let c1: Peer;
  let c2: Peer;
  beforeAll(async () => {
    ns = newNamespace();
    [p, c1, c2] = await Promise.all([
      Agent.create({ name: 'p', metadata: inNamespace(ns) }),
      spawnPeer('c1', { metadata: inNamespace(ns) }),
      spawnPeer('c2', { metadata: inNamespace(ns) }),
    ]);
    mem = p.allocate(4 * MiB);
  });
  afterAll(async () => {
    await Promise.all([c1?.kill(), c2?.kill()]);
    await p?.close();
  });

  it('each fetches the other two by name, and transfers between every pair land', async () => {
    const fetched = await Promise.all([
      p.fetchRemoteMetadata('c1'),
      p.fetchRemoteMetadata('c2'),
      c1.request({ type: 'fetch', from: 'p' }),
      c1.request({ type: 'fetch', from: 'c2' }),
      c2.request({ type: 'fetch', from: 'p' }),
      c2.request({ type: 'fetch', from: 'c1' }),
    ]);
    expect(fetched.map((f) => (typeof f === 'string' ? f : f.peer))).toEqual(['c1', 'c2', 'p', 'c2', 'p', 'c1']);

    // p -> c1
    const data = random(MiB);
    mem.bytes.set(data, 0);
    await p.createTransfer({ op: 'WRITE', peer: 'c1', local: [mem.desc(0, MiB)], remote: [{ addr: c1.ready.addr, len: MiB }] }).run({ timeoutMs: 30_000 });
    expect((await c1.request({ type: 'hash', offset: 0, len: MiB })).hash).toBe(sha(data));
    // c1 -> c2
    const { hash } = await c1.request({ type: 'write', peer: 'c2', offset: 0, len: MiB, remoteAddr: c2.ready.addr });
    expect((await c2.request({ type: 'hash', offset: 0, len: MiB })).hash).toBe(hash);
    // c2 -> p
    await c2.request({ type: 'fill', offset: 0, len: MiB });
    const back = await c2.request({ type: 'write', peer: 'p', offset: 0, len: MiB, remoteAddr: mem.addr + MiB });
    expect(sha(mem.bytes.subarray(MiB, 2 * MiB))).toBe(back.hash);
  });

  it('an agent killed before it publishes fails only the waits for it, with ERR_TIMEOUT naming it', async () => {
    const dead = await spawnPeer('d', { idle: true });
    await dead.kill('SIGKILL');

    // Ordering, not absolute times, so that a loaded machine does not fail it: the data keeps moving while the waits are pending.
    const started = Date.now();
    const rejectedAt: number[] = [];
    const rejected = <T>(wait: Promise<T>) => wait.finally(() => rejectedAt.push(Date.now()));
    const waits = Promise.all([
      rejected(expectCode(() => p.fetchRemoteMetadata('d', { timeoutMs: 3000 }), 'ERR_TIMEOUT')),
      rejected(
        c1.request({ type: 'fetch', from: 'd', timeoutMs: 3000 }).then(
          () => undefined,
          (e: IxferError) => e,
        ),
      ),
    ]);
    // Meanwhile the others keep moving data between them.
    let transfersDoneAt = 0;
    const transfers = (async () => {
      for (let i = 0; i < 20; i++) {
        const data = random(256 * 1024);
        mem.bytes.set(data, 0);
        await p
          .createTransfer({ op: 'WRITE', peer: 'c1', local: [mem.desc(0, data.length)], remote: [{ addr: c1.ready.addr, len: data.length }] })
          .run({ timeoutMs: 30_000 });
        expect((await c1.request({ type: 'hash', offset: 0, len: data.length })).hash).toBe(sha(data));
        await c1.request({ type: 'write', peer: 'p', offset: 0, len: 65536, remoteAddr: mem.addr + MiB });
      }
      transfersDoneAt = Date.now();
    })();
    const [[pErr, c1Err]] = await Promise.all([waits, transfers]);
    expect(transfersDoneAt).toBeLessThanOrEqual(Math.min(...rejectedAt)); // not held up by the missing agent
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    expect(pErr.message).toContain(`agent 'd' at ${ns}/d`);
    expect(c1Err).toBeInstanceOf(IxferError); // the peer's error, with its code
    expect(c1Err!.code).toBe('ERR_TIMEOUT');
    expect(c1Err!.message).toContain("agent 'd'");
    expect(p.peers.sort()).toEqual(['c1', 'c2']);
  });

  it('a registration change on one agent reaches the others, which use it at once', async () => {
    const seenByP = nextPeerEvent(p, { name: 'c1', action: 'loaded', via: 'etcd' });
    await c2.request({ type: 'expect', peer: 'c1', action: 'loaded' });
    const region = await c1.request({ type: 'allocate', size: 2 * MiB });
    const desc = { addr: region.addr, len: region.len };
    expect(p.checkRemote('c1', [desc])).toBe(false);
    await seenByP;
    expect(p.checkRemote('c1', [desc])).toBe(true);
    const data = random(2 * MiB);
    mem.bytes.set(data, 0);
    await p.createTransfer({ op: 'WRITE', peer: 'c1', local: [mem.desc(0, 2 * MiB)], remote: [desc] }).run({ timeoutMs: 30_000 });
    expect((await c1.request({ type: 'hash', region: region.addr, offset: 0, len: 2 * MiB })).hash).toBe(sha(data));
    await c2.request({ type: 'awaitExpected', peer: 'c1', action: 'loaded' });
    const { hash } = await c2.request({ type: 'write', peer: 'c1', offset: 0, len: MiB, remoteAddr: region.addr + MiB });
    expect((await c1.request({ type: 'hash', region: region.addr, offset: MiB, len: MiB })).hash).toBe(hash);

    // Deregistration too: the region leaves the peers' view, and transfers into it are refused before posting.
    const dropped = nextPeerEvent(p, { name: 'c1', action: 'loaded', via: 'etcd' });
    await c1.request({ type: 'deregister', addr: region.addr });
    await dropped;
    expect(p.checkRemote('c1', [desc])).toBe(false);
    await expectCode(() => p.createTransfer({ op: 'WRITE', peer: 'c1', local: [mem.desc(0, 64)], remote: [{ addr: region.addr, len: 64 }] }), 'ERR_NOT_FOUND');
  });
});

describe('entries leave etcd with their agent', () => {
  let ns: string;
  let p: Agent;
  beforeAll(async () => {
    ns = newNamespace();
    p = await Agent.create({ name: 'watcher', metadata: inNamespace(ns) });
  });
  afterAll(async () => {
    await p?.close();
  });

  it('a killed agent (SIGKILL) is removed when its lease expires, and its peers drop it', async () => {
    const victim = await spawnPeer('victim', { metadata: inNamespace(ns, 2) });
    expect(await p.fetchRemoteMetadata('victim')).toBe('victim');
    const gone = nextPeerEvent(p, { name: 'victim', action: 'dropped', via: 'etcd' });
    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    await gone;
    const after = Date.now() - killedAt;
    // The TTL is 2 s: etcd expires it within about that (its expiry checks run every 500 ms).
    expect(after).toBeGreaterThanOrEqual(1000);
    expect(after).toBeLessThan(10_000);
    console.log(`lease expiry: dropped ${after} ms after SIGKILL (TTL 2 s)`);
    expect(p.peers).not.toContain('victim');
    await expectCode(() => p.createTransfer({ op: 'WRITE', peer: 'victim', local: [], remote: [] }), 'ERR_NOT_FOUND');
    await expectCode(() => p.fetchRemoteMetadata('victim', { timeoutMs: 500 }), 'ERR_TIMEOUT');

    // Restarted under the same name, it is followed again without another fetch.
    const reborn = await spawnPeer('victim', { metadata: inNamespace(ns, 2) });
    const remote = { addr: reborn.ready.addr, len: MiB };
    while (!p.checkRemote('victim', [remote])) await nextPeerEvent(p, { name: 'victim', action: 'loaded', via: 'etcd' });
    const data = random(MiB);
    const src = p.registerMemory(data);
    await p.createTransfer({ op: 'WRITE', peer: 'victim', local: [src.desc()], remote: [remote] }).run({ timeoutMs: 30_000 });
    expect((await reborn.request({ type: 'hash', offset: 0, len: MiB })).hash).toBe(sha(data));
    src.deregister();
    await reborn.kill();
  });

  it('close() removes the entry at once; invalidateLocalMetadata() withdraws it and sendLocalMetadata() brings it back', async () => {
    const q = await Agent.create({ name: 'q', metadata: inNamespace(ns, 60) });
    expect(await p.fetchRemoteMetadata('q')).toBe('q');
    // Canceled before it starts: nothing is withdrawn.
    await expectCode(() => q.invalidateLocalMetadata({ signal: AbortSignal.abort() }), 'ERR_CANCELED');
    expect(await p.fetchRemoteMetadata('q', { timeoutMs: 1000 })).toBe('q');

    let event = nextPeerEvent(p, { name: 'q', action: 'dropped', via: 'etcd' });
    await q.invalidateLocalMetadata();
    await event;
    q.allocate(4096); // not published while withdrawn
    await expectCode(() => p.fetchRemoteMetadata('q', { timeoutMs: 500 }), 'ERR_TIMEOUT');

    event = nextPeerEvent(p, { name: 'q', action: 'loaded', via: 'etcd' });
    await q.sendLocalMetadata();
    await event;
    expect(p.peers).toContain('q');

    event = nextPeerEvent(p, { name: 'q', action: 'dropped', via: 'etcd' });
    const closedAt = Date.now();
    await q.close();
    await event;
    expect(Date.now() - closedAt).toBeLessThan(5000); // the lease is 60 s: this is close() deleting it
  });

  it('an entry holding another agent\'s metadata, or garbage, is not loaded', async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const other = await Agent.create({ name: 'impostor' });
      await client.put(`${ns}/someone`).value(Buffer.from(other.getLocalMetadata()));
      await client.put(`${ns}/garbage`).value('not metadata');
      await expectCode(() => p.fetchRemoteMetadata('someone'), 'ERR_INVALID_PARAM');
      await expectCode(() => p.fetchRemoteMetadata('garbage'), 'ERR_INVALID_PARAM');
      await expectCode(() => p.fetchRemoteMetadata(''), 'ERR_INVALID_PARAM');
      expect(p.peers).not.toContain('impostor');
      await other.close();
    } finally {
      client.close();
    }
  });

  it('an unreachable etcd fails Agent.create within its timeout, naming the endpoint', async () => {
    const started = Date.now();
    const err = await Agent.create({
      name: 'lonely',
      metadata: { etcd: { endpoints: ['http://127.0.0.1:1'] }, timeoutMs: 1000 },
    }).then(
      () => expect.fail('created without etcd'),
      (e: IxferError) => e,
    );
    expect(['ERR_TIMEOUT', 'ERR_BACKEND']).toContain(err.code);
    expect(err.message).toContain('http://127.0.0.1:1');
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

describe('etcd going away', () => {
  it('frozen for longer than the lease: the entry is written again, and peers reload it', async () => {
    const ns = newNamespace();
    await using a = await Agent.create({ name: 'a', metadata: { ...inNamespace(ns, 2), timeoutMs: 1000 } });
    const target = a.allocate(MiB);
    await a.sendLocalMetadata();
    await using w = await Agent.create({ name: 'w', metadata: inNamespace(ns, 60) });
    expect(await w.fetchRemoteMetadata('a')).toBe('a');

    // Dropped when the expired lease deletes the entry, then loaded from the rewritten one.
    const seen: string[] = [];
    const back = new Promise<void>((resolve) => {
      w.on('peer', (e) => {
        if (e.name !== 'a') return;
        seen.push(e.action);
        if (e.action === 'loaded' && seen.includes('dropped')) resolve();
      });
    });
    const publishedBefore = a.exchangeStats.published;
    etcd.pause();
    await new Promise((r) => setTimeout(r, 4000));
    etcd.resume();
    await back;
    // w may see the rewritten entry before a's own write call returns and is counted.
    await vi.waitFor(() => expect(a.exchangeStats.published).toBeGreaterThan(publishedBefore), { timeout: 10_000 });
    const data = random(MiB);
    const src = w.registerMemory(data);
    await w.createTransfer({ op: 'WRITE', peer: 'a', local: [src.desc()], remote: [target.desc()] }).run({ timeoutMs: 30_000 });
    expect(Buffer.compare(target.bytes, data)).toBe(0);
  });
});

it('examples/exchange.mjs etcd: two processes find each other and check the bytes', async () => {
  const stdout = await runExample('exchange.mjs', 'etcd', etcd.endpoint);
  expect(stdout).toMatch(/prefill-0: found 'decode-0' through etcd/);
  expect(stdout).toMatch(/decode-0: prefill-0 wrote 8388608 bytes into kv: checked/);
});
