/**
 * A dead peer the application keeps sending to must not stall other peers on
 * a multi-rail agent. A rail worker holds back only the refused peer's later
 * ops, and gives that peer up after RAIL_REFUSE_NS (500 ms) of refusals while
 * the endpoint shows room (another peer's op posted since, or nothing in
 * flight). Before, one dead peer's op at the head of the queue held every
 * other peer's ops on the rail for ~500 ms per rail cooldown (2 rails, 2
 * cores: ~8x fewer 4 KiB WRITEs to the live peer, stalls of ~500 ms).
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
  // Network rails only: a peer on this host would otherwise take the shm rail (libfabric 2.6).
  a = await Agent.create({ name: 'hol-parent', rails: 2, sameHost: 'off' });
  mem = a.allocate(MiB);
  [b, c] = await Promise.all([spawnPeer('hol-b', { size: MiB, rails: 2, sameHost: 'off' }), spawnPeer('hol-c', { size: MiB, rails: 2, sameHost: 'off' })]);
  a.loadRemoteMetadata(b.ready.metadata);
  a.loadRemoteMetadata(c.ready.metadata);
});
afterAll(async () => {
  await Promise.all([b?.kill(), c?.kill()]);
  await a?.close();
});

it('a dead peer the application keeps sending to does not stall another peer on the same rails, and its own transfers fail with a typed error', async () => {
  const write = (peer: Peer, name: string) =>
    a.createTransfer({ op: 'WRITE', peer: name, local: [mem.desc(0, 4096)], remote: [{ addr: peer.ready.addr, len: 4096 }] });
  await write(c, 'hol-c').run({ timeoutMs: 5000 });
  await write(b, 'hol-b').run({ timeoutMs: 5000 });
  await c.kill('SIGKILL');
  let stop = false;
  const codes = new Set<string>();
  const toC = (async () => {
    while (!stop) {
      await write(c, 'hol-c')
        .run({ timeoutMs: 5000 })
        .catch((e: { code?: string }) => codes.add(String(e.code)));
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
  // A stall behind the dead peer lasted ~500 ms; a liveness bound, not a speed one.
  expect(worst).toBeLessThan(400);
  expect([...codes]).toEqual(['ERR_REMOTE_DISCONNECT']);
  // The agent still serves the live peer.
  await write(b, 'hol-b').run({ timeoutMs: 5000 });
});
