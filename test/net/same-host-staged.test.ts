/**
 * A peer on this host that is also served staged device memory stays on the
 * shm rail: serving its staged request inserts its rail-0 address again
 * (staging.c learn), which must leave its route over shm as it was. Emulated
 * VRAM (set before the shim loads; the peer inherits it); shm needs
 * libfabric >= 1.18 (.ci/run runs this file against 2.6).
 */
process.env.IXFER_EMULATE_VRAM = '1';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, cuda, listProviders, type MemoryRegion, type RailStatus } from '../../lib/index.js';
import { MiB, random, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

const shm = listProviders().find((p) => p.name === 'shm');
const why = !shm ? 'shm is not offered by this libfabric' : shm.unsupported && `shm is refused here: ${shm.unsupported}`;
const railBytes = (rails: RailStatus[], provider: string) => rails.filter((r) => r.provider === provider).reduce((n, r) => n + r.bytes, 0);

describe.skipIf(Boolean(why))(`same host and staged VRAM${why ? ` (skipped: ${why})` : ''}`, () => {
  let a: Agent;
  let mem: MemoryRegion;
  let vram: MemoryRegion;
  let near: Peer;
  let nearName: string;
  beforeAll(async () => {
    a = await Agent.create({ name: 'shs-parent', provider: 'tcp' });
    mem = a.allocate(4 * MiB);
    vram = a.allocateVram(MiB, { name: 'device', staged: true });
    near = await spawnPeer('shs-near', { size: 4 * MiB, provider: 'tcp' });
    nearName = a.loadRemoteMetadata(near.ready.metadata);
  });
  afterAll(async () => {
    await near?.kill();
    await a?.close();
  });

  it('after we served the peer a staged WRITE, our WRITEs to it still go over shm, every byte checked', async () => {
    expect(a.rails.map((r) => r.provider)).toEqual(['tcp', 'shm']);
    mem.bytes.set(random(MiB), 0);
    await a.createTransfer({ op: 'WRITE', peer: nearName, local: [mem.desc(0, MiB)], remote: [{ addr: near.ready.addr, len: MiB }] }).run({ timeoutMs: 10_000 });
    expect((await near.request({ type: 'hash', offset: 0, len: MiB })).hash).toBe(sha(mem.bytes.subarray(0, MiB)));
    // The peer WRITEs into our staged device memory: over tcp, with our help.
    const md = Buffer.from(a.getLocalMetadata()).toString('base64');
    const sent = await near.request({ type: 'write', metadata: md, offset: 0, remoteAddr: vram.addr, len: 65536 });
    expect(sha(cuda.read(vram.desc(0, 65536)))).toBe(sent.hash);
    const before = a.rails;
    mem.bytes.set(random(MiB), MiB);
    await a.createTransfer({ op: 'WRITE', peer: nearName, local: [mem.desc(MiB, MiB)], remote: [{ addr: near.ready.addr + MiB, len: MiB }] }).run({ timeoutMs: 10_000 });
    expect((await near.request({ type: 'hash', offset: MiB, len: MiB })).hash).toBe(sha(mem.bytes.subarray(MiB, 2 * MiB)));
    const after = a.rails;
    expect(railBytes(after, 'shm') - railBytes(before, 'shm')).toBe(MiB);
    expect(railBytes(after, 'tcp') - railBytes(before, 'tcp')).toBe(0);
  });
});
