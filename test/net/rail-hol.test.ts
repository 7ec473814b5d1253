/**
 * Known defect (review21), kept as it.fails until fixed: a rail worker posts
 * its queue in order and stops at the first refusal, and gives up on a
 * refusing peer only after RAIL_REFUSE_NS (500 ms) with nothing of the rail's
 * in flight. A dead peer's op at the head of the queue (rxm answers "try
 * again" while it cannot reconnect) therefore holds every other peer's ops on
 * that rail for ~500 ms, once per rail cooldown while the application keeps
 * sending to the dead peer; and the dead peer is never declared gone (no
 * refusal reaches ixfer_peer_refused from a worker). Measured here (2 cores):
 * one rail: the live peer's 4 KiB WRITEs p50 0.1 ms, max ~20 ms, the dead
 * peer's work fails at once; two rails: ~8x fewer WRITEs to the live peer,
 * stalls of ~500 ms (with railCooldownMs under 500 the dead peer's transfers
 * cycle between the rails until their deadline and the live peer gets a few
 * WRITEs a second).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';

import { Agent, type MemoryRegion } from '../../lib/index.js';
import { MiB } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

let a: Agent;
let mem: MemoryRegion;
let b: Peer;
let c: Peer;
beforeAll(async () => {
  a = await Agent.create({ name: 'hol-parent', rails: 2 });
  mem = a.allocate(MiB);
  [b, c] = await Promise.all([spawnPeer('hol-b', { size: MiB, rails: 2 }), spawnPeer('hol-c', { size: MiB, rails: 2 })]);
  a.loadRemoteMetadata(b.ready.metadata);
  a.loadRemoteMetadata(c.ready.metadata);
});
afterAll(async () => {
  await Promise.all([b?.kill(), c?.kill()]);
  await a?.close();
});

it.fails('a dead peer the application keeps sending to does not stall another peer on the same rails', async () => {
  const write = (peer: Peer, name: string) =>
    a.createTransfer({ op: 'WRITE', peer: name, local: [mem.desc(0, 4096)], remote: [{ addr: peer.ready.addr, len: 4096 }] });
  await write(c, 'hol-c').run({ timeoutMs: 5000 });
  await write(b, 'hol-b').run({ timeoutMs: 5000 });
  await c.kill('SIGKILL');
  let stop = false;
  const toC = (async () => {
    while (!stop) {
      await write(c, 'hol-c').run({ timeoutMs: 5000 }).catch(() => {});
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  let worst = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 3000) {
    const s = performance.now();
    await write(b, 'hol-b').run({ timeoutMs: 10_000 });
    worst = Math.max(worst, performance.now() - s);
  }
  stop = true;
  await toC;
  expect(worst).toBeLessThan(250);
});
