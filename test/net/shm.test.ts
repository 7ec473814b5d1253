import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, listProviders, type MemoryRegion } from '../../lib/index.js';
import { MiB, random, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

// shm's CQ offers no wait fd (FI_WAIT_YIELD), so the progress thread polls
// it: on libfabric 1.17 the first transfer used to wait forever.
const shm = listProviders().find((p) => p.name === 'shm');
// .ci/run runs this file again against libfabric 2.6, where shm is offered.
const why = !shm ? 'shm is not offered by this libfabric' : shm.unsupported && `shm is refused here: ${shm.unsupported}`;

describe.skipIf(Boolean(why))(`shm: a provider whose CQ the progress thread polls${why ? ` (skipped: ${why})` : ''}`, () => {
  let a: Agent;
  let mem: MemoryRegion;
  let child: Peer;
  let peer: string;
  beforeAll(async () => {
    a = await Agent.create({ name: 'shm-parent', provider: 'shm' });
    mem = a.allocate(4 * MiB);
    child = await spawnPeer('shm-child', { size: 4 * MiB, provider: 'shm' });
    peer = a.loadRemoteMetadata(child.ready.metadata);
  });
  afterAll(async () => {
    await child?.kill();
    await a?.close();
  });

  it('the first transfer and 300 more back to back complete, none near a second, data checked', async () => {
    const remote = { addr: child.ready.addr, len: 4096 };
    let worst = 0;
    for (let i = 0; i < 301; i++) {
      mem.bytes.set(random(4096), 0);
      const t = performance.now();
      await a.createTransfer({ op: 'WRITE', peer, local: [mem.desc(0, 4096)], remote: [remote] }).run({ timeoutMs: 10_000 });
      worst = Math.max(worst, performance.now() - t);
    }
    // A correctness bound (a lost wake-up costs a whole idle wait), not a speed check.
    expect(worst).toBeLessThan(500);
    expect((await child.request({ type: 'hash', offset: 0, len: 4096 })).hash).toBe(sha(mem.bytes.subarray(0, 4096)));
  });

  it('READs nudge the polled peer with a control message that reaches none of its notifications', async () => {
    const { hash } = await child.request({ type: 'fill', offset: 0, len: 65536 });
    const before = (await child.request({ type: 'notification-stats' })).stats;
    const t = a.createTransfer({ op: 'READ', peer, local: [mem.desc(0, 65536)], remote: [{ addr: child.ready.addr, len: 65536 }] });
    for (let i = 0; i < 50; i++) await t.run({ timeoutMs: 10_000 });
    expect(sha(mem.bytes.subarray(0, 65536))).toBe(hash);
    const after = (await child.request({ type: 'notification-stats' })).stats;
    expect([after.received, after.malformed, after.queued, after.dropped]).toEqual([before.received, before.malformed, before.queued, before.dropped]);
  });

  it('a READ of 1 MiB after the agents sat idle', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { hash } = await child.request({ type: 'fill', offset: 0, len: MiB });
    await a.createTransfer({ op: 'READ', peer, local: [mem.desc(0, MiB)], remote: [{ addr: child.ready.addr, len: MiB }] }).run({ timeoutMs: 10_000 });
    expect(sha(mem.bytes.subarray(0, MiB))).toBe(hash);
  });
});
