/**
 * Hostile and heavy metadata from a peer: re-listing many regions, listing
 * more regions than metadata.maxRegionsPerPeer allows, and re-listing what is
 * known. Each ends in a typed error or a consistent peer table, and transfers
 * to the real peer (another process) keep working.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent } from '../../lib/index.js';
import { decodeMetadata, encodeMetadata, type RegionInfo } from '../../lib/net/metadata.js';
import { expectCode, MiB, random, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

let child: Peer;
let real: ReturnType<typeof decodeMetadata>;

beforeAll(async () => {
  child = await spawnPeer('lister', { size: MiB });
  real = decodeMetadata(child.ready.metadata);
});
afterAll(async () => {
  await child?.kill();
});

/** The child's real region first, then `n` made-up ones after it. */
function listing(n: number, from = 0): RegionInfo[] {
  const r = real.regions.find((x) => x.addr === child.ready.addr)!;
  const fake = Array.from({ length: n }, (_, i) => ({ addr: r.addr + r.len + 4096 + (from + i) * 8192, len: 4096, key: BigInt(i + 7), devId: 0, kind: 0 }));
  return [r, ...fake];
}

function blob(sequence: bigint, complete: boolean, regions: RegionInfo[]): Uint8Array {
  const { address, ...rest } = real;
  return encodeMetadata({ ...rest, ...(complete ? { address } : {}), sequence: real.sequence + sequence, complete, regions });
}

async function writeWorks(a: Agent, peer: string): Promise<void> {
  const mem = a.allocate(4096);
  const data = random(4096);
  mem.bytes.set(data);
  await a.createTransfer({ op: 'WRITE', peer, local: [mem.desc()], remote: [{ addr: child.ready.addr, len: 4096 }] }).run({ timeoutMs: 10_000 });
  expect((await child.request({ type: 'hash', offset: 0, len: 4096 })).hash).toBe(sha(data));
  mem.deregister();
}

describe('re-listing regions a peer already listed', () => {
  it('40,000 regions listed again: loads, transfers made before stay valid, an overlapping region replaces', async () => {
    const a = await Agent.create({ name: 'relist' });
    try {
      const peer = a.loadRemoteMetadata(blob(1n, true, listing(40_000)));
      const mem = a.allocate(4096);
      const t = a.createTransfer({ op: 'WRITE', peer, local: [mem.desc()], remote: [{ addr: child.ready.addr, len: 4096 }] });
      await t.run({ timeoutMs: 10_000 });
      // The same regions again, partial and complete: the transfer still stands.
      a.loadRemoteMetadata(blob(2n, false, listing(40_000)));
      a.loadRemoteMetadata(blob(3n, true, listing(40_000)));
      await t.run({ timeoutMs: 10_000 });
      // A region listed with another length replaces the old one: the transfer made on it is stale.
      const r = listing(0)[0]!;
      a.loadRemoteMetadata(blob(4n, false, [{ ...r, len: r.len - 4096 }]));
      await expectCode(() => t.run({ timeoutMs: 10_000 }), 'ERR_NOT_FOUND');
      a.loadRemoteMetadata(blob(5n, false, [r]));
      await writeWorks(a, peer);
    } finally {
      await a.close();
    }
  });
});

describe('metadata.maxRegionsPerPeer', () => {
  it('a peer listing more regions than allowed is ERR_INVALID_PARAM, a partial update that would pass it changes nothing', async () => {
    await expectCode(() => Agent.create({ name: 'cap0', metadata: { maxRegionsPerPeer: 0 } }), 'ERR_INVALID_PARAM');
    const a = await Agent.create({ name: 'capped', metadata: { maxRegionsPerPeer: 1000 } });
    try {
      const e = await expectCode(() => a.loadRemoteMetadata(blob(1n, true, listing(1000))), 'ERR_INVALID_PARAM');
      expect(e.message).toMatch(/maxRegionsPerPeer/);
      expect(a.peers).toEqual([]);
      const peer = a.loadRemoteMetadata(blob(1n, true, listing(599)));
      // 600 known + 600 new > 1000: refused, the peer keeps its 600 and its sequence.
      const e2 = await expectCode(() => a.loadRemoteMetadata(blob(2n, false, listing(600, 1000).slice(1))), 'ERR_INVALID_PARAM');
      expect(e2.message).toMatch(/maxRegionsPerPeer/);
      // The same 600 again do not grow it; the refused update's sequence is still free.
      a.loadRemoteMetadata(blob(2n, false, listing(599)));
      a.loadRemoteMetadata(blob(2n, false, listing(300, 1000).slice(1)));
      await writeWorks(a, peer);
    } finally {
      await a.close();
    }
  });
});

describe('a WRITE the target cannot place', () => {
  it('its first op refused (a key the peer never made) fails the whole WRITE, though only its last op waits for the target; the agent then works', async () => {
    const a = await Agent.create({ name: 'refused-op' });
    try {
      const peer = a.loadRemoteMetadata(blob(1n, true, listing(1)));
      const fake = listing(1)[1]!;
      const mem = a.allocate(64 * 1024);
      // Apart on both sides, so no two merge: the first provider op (tcp: 4
      // descriptors) carries the unknown key, the last only real ones.
      const local = [mem.desc(0, 4096), ...Array.from({ length: 7 }, (_, i) => mem.desc((i + 1) * 8192, 4096))];
      const remote = [{ addr: fake.addr, len: 4096 }, ...Array.from({ length: 7 }, (_, i) => ({ addr: child.ready.addr + i * 8192, len: 4096 }))];
      const t = a.createTransfer({ op: 'WRITE', peer, local, remote });
      const e = await expectCode(() => t.run({ timeoutMs: 10_000 }), 'ERR_REMOTE_DISCONNECT');
      expect(e.message.length).toBeGreaterThan(0);
      // The target dropped the connection: a WRITE right after may still meet
      // it closing (ERR_REMOTE_DISCONNECT), then one reconnects and lands.
      for (let attempt = 1; ; attempt++) {
        try {
          await writeWorks(a, peer);
          break;
        } catch (err) {
          expect((err as { code?: string }).code).toBe('ERR_REMOTE_DISCONNECT');
          if (attempt === 10) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      await a.close();
    }
  });
});
