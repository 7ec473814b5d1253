/**
 * VRAM over the network without emulation: on a machine without CUDA, VRAM
 * requests are typed errors and the agent keeps working; on a GPU machine,
 * test/net/gpu/vram-net.mjs runs the two-process combinations on real CUDA
 * (a plain Node script, so that machine needs no vitest).
 */
delete process.env.IXFER_EMULATE_VRAM; // real CUDA or none: this file is about what the driver says

import { execFileSync } from 'node:child_process';
import path from 'node:path';

import { expect, it } from 'vitest';

import { Agent, cuda } from '../../lib/index.js';
import { expectCode, random } from '../support/helpers.js';

const script = path.join(import.meta.dirname, 'gpu', 'vram-net.mjs');

it('without CUDA, allocateVram and registerVram are ERR_LIBRARY_MISSING naming libcuda.so.1; the agent keeps working', async (ctx) => {
  if (cuda.deviceCount() > 0) {
    ctx.skip('a CUDA device is present: this checks machines without one');
    return;
  }
  const a = await Agent.create({ name: 'no-cuda' });
  try {
    for (const call of [() => a.allocateVram(4096), () => a.allocateVram(4096, { devId: 0, name: 'kv' }), () => a.registerVram({ addr: 0x7f0000000000, len: 4096 })]) {
      const err = await expectCode(call, 'ERR_LIBRARY_MISSING');
      expect(err.message).toContain('libcuda.so.1');
    }
    // Nothing was registered (the name is free), and host memory moves as before.
    const mem = a.allocate(8192, { name: 'kv' });
    a.loadRemoteMetadata(a.getLocalMetadata());
    const data = random(4096);
    mem.bytes.set(data, 0);
    await a.createTransfer({ op: 'WRITE', peer: 'no-cuda', local: [mem.desc(0, 4096)], remote: [mem.desc(4096, 4096)] }).run({ timeoutMs: 10_000 });
    expect(Buffer.compare(mem.bytes.subarray(4096), data)).toBe(0);
    expect(a.stagingStats.chunksBusy).toBe(0);
  } finally {
    await a.close();
  }
});

it('real CUDA: every combination between two processes (test/net/gpu/vram-net.mjs)', (ctx) => {
  if (cuda.deviceCount() === 0) {
    ctx.skip('no CUDA device here: run test/net/gpu/vram-net.mjs on a GPU machine (see README, "VRAM over the network")');
    return;
  }
  const out = execFileSync(process.execPath, [script, 'tcp', 'staged'], { encoding: 'utf8', timeout: 300_000 });
  expect(out).toContain('all checks passed');
});
