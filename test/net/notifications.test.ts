import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, IxferError, type MemoryRegion } from '../../lib/index.js';
import { agents, connectAll, expectCode, MiB, random, runExample } from '../support/helpers.js';

// Around the receive buffer (16 KiB) and the sizes connection data reaches
// with 32 and 256 network devices.
const SIZES = [0, 1, 63, 64, 65, 255, 256, 257, 1024, 1792, 14_336, 16_384, 16_385, MiB, 16 * MiB];

describe('notifications between two agents', () => {
  let a: Agent;
  let b: Agent;
  let src: MemoryRegion;
  let dst: MemoryRegion;
  beforeAll(async () => {
    [a, b] = await agents('nsend', 'nrecv');
    connectAll([a, b]);
    src = a.allocate(32 * MiB);
    dst = b.allocate(32 * MiB);
    // Metadata again, now with the regions.
    a.loadRemoteMetadata(b.getLocalMetadata());
  });
  afterAll(async () => {
    await a.close();
    await b.close();
  });

  it.each(SIZES)('standalone, %i bytes, arrives whole', async (size) => {
    const body = random(size);
    await a.notify('nrecv', body, { timeoutMs: 30_000 });
    const n = await b.waitForNotification({ peer: 'nsend', timeoutMs: 30_000 });
    expect(n.peer).toBe('nsend');
    expect(n.bytes.length).toBe(size);
    expect(Buffer.from(n.bytes).equals(body)).toBe(true);
  });

  it.each(SIZES)('attached to a WRITE, %i bytes, arrives whole after the data', async (size) => {
    const body = random(size);
    const data = random(64 * 1024);
    src.bytes.set(data, 0);
    const t = a.createTransfer({
      op: 'WRITE',
      peer: 'nrecv',
      local: [src.desc(0, data.length)],
      remote: [dst.desc(0, data.length)],
      notification: body,
    });
    await t.run({ timeoutMs: 30_000 });
    const n = await b.waitForNotification({ timeoutMs: 30_000 });
    expect(Buffer.from(dst.bytes.subarray(0, data.length)).equals(data)).toBe(true);
    expect(Buffer.from(n.bytes).equals(body)).toBe(true);
  });

  it('a WRITE of many descriptors: at the moment the notification is read, every byte is there', async () => {
    const blocks = 128;
    const block = 256 * 1024; // 32 MiB per round, 128 provider operations or more
    for (let round = 0; round < 20; round++) {
      const data = random(blocks * block);
      src.bytes.set(data, 0);
      // Scatter: block i goes to slot (i * 37) % blocks on the other side.
      const local = [];
      const remote = [];
      for (let i = 0; i < blocks; i++) {
        local.push(src.desc(i * block, block));
        remote.push(dst.desc(((i * 37) % blocks) * block, block));
      }
      const tag = `round ${round}`;
      a.createTransfer({ op: 'WRITE', peer: 'nrecv', local, remote }).post(tag);
      const n = await b.waitForNotification({ match: tag, timeoutMs: 60_000 });
      expect(n.text).toBe(tag);
      // Synchronously, before anything else can run.
      let bad = -1;
      for (let i = 0; i < blocks && bad < 0; i++) {
        const at = ((i * 37) % blocks) * block;
        if (!data.subarray(i * block, (i + 1) * block).equals(dst.bytes.subarray(at, at + block))) bad = i;
      }
      expect(bad, `block ${bad} of round ${round} had not landed`).toBe(-1);
    }
  });

  it('a READ with a notification: the target hears of it after the reads completed', async () => {
    const data = random(MiB);
    dst.bytes.set(data, 0);
    const t = a.createTransfer({
      op: 'READ',
      peer: 'nrecv',
      local: [src.desc(0, MiB)],
      remote: [dst.desc(0, MiB)],
      notification: 'read done',
    });
    await t.run({ timeoutMs: 30_000 });
    expect(Buffer.from(src.bytes.subarray(0, MiB)).equals(data)).toBe(true);
    const n = await b.waitForNotification({ match: 'read done', timeoutMs: 30_000 });
    expect(n.peer).toBe('nsend');
  });

  it('a reposted transfer can carry a different notification each time', async () => {
    const t = a.createTransfer({
      op: 'WRITE',
      peer: 'nrecv',
      local: [src.desc(0, 4096)],
      remote: [dst.desc(0, 4096)],
      notification: 'default',
    });
    for (const note of ['first', undefined, 'third']) {
      t.post(note);
      await t.done({ timeoutMs: 30_000 });
      const n = await b.waitForNotification({ timeoutMs: 30_000 });
      expect(n.text).toBe(note ?? 'default');
    }
  });

  it('a burst of 10,000 small notifications: none lost, none duplicated, in order', async () => {
    const count = 10_000;
    const sent: Promise<void>[] = [];
    for (let i = 0; i < count; i++) sent.push(a.notify('nrecv', `burst ${i}`));
    const got: string[] = [];
    for await (const n of b.notifications()) {
      got.push(n.text);
      if (got.length === count) break;
    }
    await Promise.all(sent);
    expect(got).toEqual(Array.from({ length: count }, (_, i) => `burst ${i}`));
    expect(b.getNotifications().size).toBe(0);
  });

  it('large standalone notifications keep their order behind each other', async () => {
    const sizes = [3 * MiB, 10, 2 * MiB, 0, 100_000];
    const bodies = sizes.map((s, i) => Buffer.alloc(s, i + 1));
    await Promise.all(bodies.map((body) => a.notify('nrecv', body)));
    for (const body of bodies) {
      const n = await b.waitForNotification({ timeoutMs: 30_000 });
      expect(Buffer.from(n.bytes).equals(body)).toBe(true);
    }
  });

  it('a peer invalidated and loaded again (the same instance) still gets every notification', async () => {
    await a.notify('nrecv', 'before 1');
    await a.notify('nrecv', 'before 2');
    a.invalidateRemote('nrecv');
    a.loadRemoteMetadata(b.getLocalMetadata());
    await a.notify('nrecv', 'after');
    const got: string[] = [];
    for (let i = 0; i < 3; i++) got.push((await b.waitForNotification({ peer: 'nsend', timeoutMs: 10_000 })).text);
    expect(got).toEqual(['before 1', 'before 2', 'after']);
    expect(b.notificationStats.dropped).toBe(0);
  });

  it('waitForNotification matches by prefix, bytes, predicate and peer; getNotifications groups by peer', async () => {
    await a.notify('nrecv', 'alpha 1');
    await a.notify('nrecv', 'beta 2');
    await a.notify('nrecv', new Uint8Array([7, 8, 9]));
    await a.notify('nrecv', 'gamma 3');
    expect((await b.waitForNotification({ match: 'beta', timeoutMs: 30_000 })).text).toBe('beta 2');
    expect([...(await b.waitForNotification({ match: new Uint8Array([7, 8]), timeoutMs: 30_000 })).bytes]).toEqual([7, 8, 9]);
    expect((await b.waitForNotification({ match: (n) => n.text.endsWith('3'), peer: 'nsend', timeoutMs: 30_000 })).text).toBe(
      'gamma 3',
    );
    const grouped = b.getNotifications();
    expect([...grouped.keys()]).toEqual(['nsend']);
    expect(grouped.get('nsend')!.map((n) => n.text)).toEqual(['alpha 1']);
    await expectCode(() => b.waitForNotification({ peer: 'nobody', timeoutMs: 50 }), 'ERR_TIMEOUT');
    const ctl = new AbortController();
    const waiting = b.waitForNotification({ match: 'never' });
    const aborted = b.waitForNotification({ match: 'never', signal: ctl.signal });
    ctl.abort();
    await expectCode(() => aborted, 'ERR_CANCELED');
    // A notification that matches no waiter stays queued for others.
    await a.notify('nrecv', 'unmatched');
    expect((await b.waitForNotification({ timeoutMs: 30_000 })).text).toBe('unmatched');
    await a.notify('nrecv', 'never mind');
    expect((await waiting).text).toBe('never mind');
  });

  it('a notify canceled part way does not hold up the ones after it, and is not reported as dropped', async () => {
    const drops: unknown[] = [];
    const onDrop = (e: unknown) => drops.push(e);
    b.on('notification-dropped', onDrop);
    try {
      const ctl = new AbortController();
      const big = a.notify('nrecv', Buffer.alloc(32 * MiB, 1), { signal: ctl.signal });
      ctl.abort();
      await expectCode(() => big, 'ERR_CANCELED');
      await a.notify('nrecv', 'after the canceled one');
      // Well under staleMs (30 s): the receiver was told to skip the canceled message.
      const n = await b.waitForNotification({ timeoutMs: 10_000 });
      expect(n.text).toBe('after the canceled one');
      // Checked at once, not waited for: once a notification is seen, neither its bytes nor
      // the canceled one's may still count as pending (a drop report gives them back first too).
      expect(b.notificationStats.pendingBytes).toBe(0);
      expect(drops).toEqual([]);
    } finally {
      b.off('notification-dropped', onDrop);
    }
  });

  it('a throwing match predicate fails its own wait; the notification still reaches others', async () => {
    const bad = b.waitForNotification({
      match: () => {
        throw new Error('predicate bug');
      },
    });
    const rejected = expect(bad).rejects.toThrow('predicate bug');
    const good = b.waitForNotification({ match: 'fine', timeoutMs: 30_000 });
    await a.notify('nrecv', 'fine');
    await rejected;
    expect((await good).text).toBe('fine');
  });

  it('a matching waiter gets a notification before an iterator that was waiting first', async () => {
    const ctl = new AbortController();
    const it = b.notifications({ signal: ctl.signal });
    const viaIterator = it.next();
    const waiter = b.waitForNotification({ match: 'for the waiter', timeoutMs: 30_000 });
    await a.notify('nrecv', 'for the waiter');
    await a.notify('nrecv', 'for the iterator');
    expect((await waiter).text).toBe('for the waiter');
    expect((await viaIterator).value?.text).toBe('for the iterator');
    ctl.abort();
  });

  it('notifications({ signal }) ends when the signal aborts', async () => {
    const ctl = new AbortController();
    const it = b.notifications({ signal: ctl.signal });
    const next = it.next();
    ctl.abort();
    expect((await next).done).toBe(true);
    // The abandoned iterator takes nothing away from later consumers.
    await a.notify('nrecv', 'for the next one');
    expect((await b.waitForNotification({ timeoutMs: 30_000 })).text).toBe('for the next one');
  });

  it('bad input: unknown peer, wrong body type', async () => {
    await expectCode(() => a.notify('nobody', 'x'), 'ERR_NOT_FOUND');
    await expectCode(() => a.notify('nrecv', 42 as unknown as string), 'ERR_INVALID_PARAM');
    await expectCode(() => b.waitForNotification({ match: 5 as unknown as string }), 'ERR_INVALID_PARAM');
    const local = [src.desc(0, 64)];
    const remote = [dst.desc(0, 64)];
    await expectCode(
      () => a.createTransfer({ op: 'WRITE', peer: 'nrecv', local, remote, notification: 7 as unknown as string }),
      'ERR_INVALID_PARAM',
    );
    const t = a.createTransfer({ op: 'WRITE', peer: 'nrecv', local, remote });
    await expectCode(() => t.post({} as unknown as string), 'ERR_INVALID_PARAM');
    expect(t.status).toBe('idle'); // nothing was posted
    const pl = a.prepareLocal(local);
    const pr = a.prepareRemote('nrecv', remote);
    await expectCode(() => a.makeTransfer('WRITE', pl, [0], pr, [0], { notification: null as unknown as string }), 'ERR_INVALID_PARAM');
    // Options are checked before anything is sent.
    await expectCode(() => a.notify('nrecv', 'never sent', { timeoutMs: -1 }), 'ERR_INVALID_PARAM');
    await a.notify('nrecv', 'sent');
    expect((await b.waitForNotification({ timeoutMs: 30_000 })).text).toBe('sent');
  });
});

describe('many senders, caps', () => {
  it('four peers send large fragmented notifications to one agent at the same time', async () => {
    const list = await agents('hub', 's1', 's2', 's3', 's4');
    const [hub, ...senders] = list as [Agent, ...Agent[]];
    try {
      connectAll(list);
      const expected = new Map<string, Buffer[]>();
      const sends: Promise<void>[] = [];
      for (const s of senders) {
        const bodies = [random(4 * MiB), random(50_000), random(2 * MiB)];
        expected.set(s.name, bodies);
        for (const body of bodies) sends.push(s.notify('hub', body));
      }
      await Promise.all(sends);
      const got = new Map<string, Buffer[]>();
      let count = 0;
      for await (const n of hub.notifications()) {
        const list = got.get(n.peer) ?? [];
        list.push(Buffer.from(n.bytes));
        got.set(n.peer, list);
        if (++count === 12) break;
      }
      for (const [name, bodies] of expected) {
        const arrived = got.get(name)!;
        expect(arrived.length).toBe(3);
        bodies.forEach((b, i) => expect(arrived[i]!.equals(b), `${name} message ${i}`).toBe(true));
      }
    } finally {
      await Promise.all(list.map((x) => x.close()));
    }
  });

  it('a notification over the pending cap is dropped and reported; the agent keeps working', async () => {
    const small = await Agent.create({ name: 'capped', notifications: { maxPendingBytesPerPeer: MiB } });
    const big = await Agent.create({ name: 'talker' });
    try {
      connectAll([small, big]);
      const dropped = new Promise<IxferError & { peer?: string; bytes?: number }>((resolve) =>
        small.once('notification-dropped', resolve),
      );
      await big.notify('capped', random(4 * MiB));
      const err = await dropped;
      expect(err.code).toBe('ERR_NOT_ALLOWED');
      expect(err.peer).toBe('talker');
      expect(err.bytes).toBe(4 * MiB);
      expect(small.notificationStats.dropped).toBe(1);
      // Within the cap, and after the dropped one: arrives.
      await big.notify('capped', 'still here');
      expect((await small.waitForNotification({ timeoutMs: 30_000 })).text).toBe('still here');
      // And transfers still work.
      const mem = small.allocate(MiB);
      const src = big.allocate(MiB);
      src.bytes.fill(3);
      big.loadRemoteMetadata(small.getLocalMetadata());
      await big.createTransfer({ op: 'WRITE', peer: 'capped', local: [src.desc()], remote: [mem.desc()], notification: 'ok' }).run({ timeoutMs: 30_000 });
      expect((await small.waitForNotification({ timeoutMs: 30_000 })).text).toBe('ok');
      expect(mem.bytes.every((v) => v === 3)).toBe(true);
      expect(small.notificationStats).toMatchObject({ received: 2, dropped: 1, malformed: 0 });
    } finally {
      await small.close();
      await big.close();
    }
  });

  it('a notification still being sent when its agent closes ends with ERR_CANCELED', async () => {
    const [x, y] = await agents('closer', 'far');
    connectAll([x!, y!]);
    const pending = x!.notify('far', Buffer.alloc(32 * MiB, 2));
    const settled = pending.then(
      () => 'sent',
      (e: { code: string }) => e.code,
    );
    await x!.close();
    // Either it went out before close() got to it, or close() canceled it: never left pending.
    expect(['sent', 'ERR_CANCELED']).toContain(await settled);
    await y!.close();
  });

  it('closing an agent ends its waiters and iterators', async () => {
    const [x] = await agents('closing');
    const waiting = x!.waitForNotification();
    const it = x!.notifications();
    const next = it.next();
    await x!.close();
    await expectCode(() => waiting, 'ERR_NOT_ALLOWED');
    expect((await next).done).toBe(true);
  });
});


it('examples/kv-handoff.mjs: prefill writes KV pages into decode with notifications, every page checked on arrival', async () => {
  const stdout = await runExample('kv-handoff.mjs', '20');
  expect(stdout).toMatch(/decode-0: 20 requests, 480 pages of 64 KiB, every page checked when its notification arrived/);
});
