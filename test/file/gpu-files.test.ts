/**
 * VRAM <-> file transfers: runs test/file/gpu/files-gpu.mjs (a plain Node script,
 * so that the GPU machine needs no vitest) where there is a CUDA device, and
 * skips with a message elsewhere. cuFile's gds paths need the udev record that
 * test/file/gpu/run-gpu.sh writes; here only the staging path and its fallback run.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { expect, it } from 'vitest';

import { cuda } from '../../lib/index.js';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gpu', 'files-gpu.mjs');

it('VRAM <-> file with staging, and auto falling back when cuFile refuses', (ctx) => {
  if (cuda.deviceCount() === 0) {
    ctx.skip('no CUDA device here: run test/file/gpu/run-gpu.sh on a GPU machine (see README, "Files and GPUDirect Storage")');
    return;
  }
  const out = execFileSync(process.execPath, [script, 'refuse', os.tmpdir()], { encoding: 'utf8' });
  expect(out).toContain('all checks passed');
});
