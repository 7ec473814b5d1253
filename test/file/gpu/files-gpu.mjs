#!/usr/bin/env node
/**
 * VRAM <-> file transfers on a GPU machine, as a plain Node script (the GPU
 * machine has no vitest). Exits 0 when every check passed, 1 when one failed,
 * and 0 with a SKIP line when there is no CUDA device (a skip, not a pass).
 *
 *   node test/file/gpu/files-gpu.mjs refuse DIR   # cuFile refuses files (no udev record): auto falls back to staging
 *   node test/file/gpu/files-gpu.mjs gds DIR      # cuFile accepts them: gds (batch) and gds_mt, compat mode
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { assert, check, finish } = await import(path.join(here, '..', '..', 'support', 'fixtures', 'checks.mjs'));
const { Agent, BlockStore, cuda } = await import(path.join(here, '..', '..', '..', 'dist', 'index.js'));

const [mode = 'refuse', dir = '/tmp'] = process.argv.slice(2);
const devices = cuda.deviceCount();
if (devices === 0) {
  console.log('SKIP: no CUDA device (libcuda.so.1 missing or no GPU): VRAM file tests not run');
  process.exit(0);
}
console.log(`mode ${mode}, ${devices} CUDA device(s), dir ${dir}`);

const same = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
const warnings = [];
process.on('warning', (w) => warnings.push(w.message));

const agent = await Agent.create({ name: `gpu-${mode}`, files: { chunkBytes: 4 << 20 } });
const SIZE = (48 << 20) + 12345; // larger than a chunk, not a multiple of anything
const data = crypto.randomBytes(SIZE);
const src = agent.allocateVram(SIZE);
const dst = agent.allocateVram(SIZE);
cuda.write(src.desc(), data);
let n = 0;
const file = (opts = {}) => agent.registerFile(path.join(dir, `ixfer-gpu-${mode}-${process.pid}-${n++}.bin`), { truncate: true, ...opts });

/**
 * VRAM -> file -> VRAM in 7 uneven descriptors (page multiples for O_DIRECT),
 * reversed on the file side; says which engine moved it and how fast.
 */
async function roundTrip(engine, opts = {}) {
  const f = file(opts);
  const cuts = opts.direct
    ? [0, 4096, 1 << 20, 9 << 20, 20 << 20, (40 << 20) + 8192, 44 << 20, SIZE & ~4095]
    : [0, 1, 4096, 1 << 20, (9 << 20) + 7, (20 << 20) + 3, (40 << 20) + 11, SIZE];
  const end = cuts.at(-1);
  const mem = (r) => cuts.slice(0, -1).map((c, i) => r.desc(c, cuts[i + 1] - c));
  const fileDescs = [];
  let at = end;
  for (const d of mem(src)) fileDescs.push(f.desc((at -= d.len), d.len));
  const w = agent.createFileTransfer({ op: 'WRITE', local: mem(src), files: fileDescs, engine });
  const t0 = process.hrtime.bigint();
  await w.run({ timeoutMs: 60_000 });
  const t1 = process.hrtime.bigint();
  cuda.fill(dst.desc(), 0);
  const r = agent.createFileTransfer({ op: 'READ', local: mem(dst), files: fileDescs, engine });
  await r.run({ timeoutMs: 60_000 });
  const t2 = process.hrtime.bigint();
  assert(f.size === end, `file size ${f.size}`);
  assert(same(cuda.read(dst.desc(0, end)), data.subarray(0, end)), 'data read back equals data written');
  // The file holds the bytes where the descriptors said.
  const onDisk = fs.readFileSync(f.path);
  assert(same(onDisk.subarray(end - cuts[1], end), data.subarray(0, cuts[1])), 'first descriptor at the end of the file');
  assert(same(onDisk.subarray(0, end - cuts.at(-2)), data.subarray(cuts.at(-2), end)), 'last descriptor at the start');
  const where = f.path;
  f.deregister();
  fs.rmSync(where);
  const gbps = (t) => end / Number(t);
  return `engine ${w.engine} (${w.engineReason}); write ${gbps(t1 - t0).toFixed(2)} GB/s, read ${gbps(t2 - t1).toFixed(2)} GB/s`;
}

await check('cuda helpers: pointer kinds, fill and read back', () => {
  assert(cuda.deviceOf(src.addr) === 0, 'device pointer on device 0');
  assert(cuda.deviceOf(agent.allocate(4096).addr) === -1, 'host pointer is host');
  cuda.fill(dst.desc(0, 1000), 0xab);
  assert(cuda.read(dst.desc(0, 1000)).every((b) => b === 0xab), 'filled');
  assert(src.kind === 'VRAM' && src.desc().devId === 0, 'VRAM region');
});

await check('posix engine: VRAM staged through host memory', () => roundTrip('posix'));
await check('DRAM <-> file under auto', async () => {
  const f = file();
  const host = agent.allocate(1 << 20);
  crypto.randomFillSync(host.bytes);
  const t = agent.createFileTransfer({ op: 'WRITE', local: host.blocks(4096, 256), files: f.blocks(4096, 256).reverse() });
  await t.run({ timeoutMs: 10_000 });
  const back = agent.allocate(1 << 20);
  await agent.createFileTransfer({ op: 'READ', local: back.blocks(4096, 256), files: f.blocks(4096, 256).reverse() }).run({ timeoutMs: 10_000 });
  assert(same(back.bytes, host.bytes), 'round trip');
  return `engine ${t.engine}`;
});

if (mode === 'refuse') {
  await check('auto falls back to staging when cuFile refuses the file, and says why', async () => {
    const note = await roundTrip('auto');
    assert(/engine posix/.test(note) && /cuFile/.test(note), note);
    assert(warnings.some((w) => /cuFile/.test(w)), 'a warning was logged');
    return note;
  });
  await check("explicit 'gds' is refused with cuFile's reason", async () => {
    const f = file();
    try {
      agent.createFileTransfer({ op: 'WRITE', local: [src.desc(0, 4096)], files: [f.desc(0, 4096)], engine: 'gds' });
      throw new Error('not refused');
    } catch (err) {
      assert(err.code === 'ERR_NOT_ALLOWED', err.message);
      return err.message;
    }
  });
  await check('warning logged once', () => {
    assert(warnings.filter((w) => /cuFile/.test(w)).length === 1, `warnings: ${JSON.stringify(warnings)}`);
    return warnings[0];
  });
} else {
  await check('gds (cuFile batch API, compat mode)', () => roundTrip('gds'));
  await check('gds_mt (cuFile from the thread pool)', () => roundTrip('gds_mt'));
  await check('auto picks gds for VRAM', async () => {
    const note = await roundTrip('auto');
    assert(/engine gds /.test(note), note);
    return note;
  });
  await check('gds with O_DIRECT files', () => roundTrip('gds', { direct: true }));
  await check('gds_mt with O_DIRECT files', () => roundTrip('gds_mt', { direct: true }));
  for (const engine of ['gds', 'gds_mt']) {
    await check(`${engine}: a read past the end of the file is ERR_END_OF_FILE`, async () => {
      const f = file();
      await agent.createFileTransfer({ op: 'WRITE', local: [src.desc(0, 8192)], files: [f.desc(0, 8192)], engine }).run({ timeoutMs: 10_000 });
      const t = agent.createFileTransfer({ op: 'READ', local: [dst.desc(0, 4096), dst.desc(4096, 8192)], files: [f.desc(0, 4096), f.desc(4096, 8192)], engine });
      try {
        await t.run({ timeoutMs: 10_000 });
        throw new Error('no error');
      } catch (err) {
        assert(err.code === 'ERR_END_OF_FILE', `${err.code} ${err.message}`);
        return err.message;
      }
    });
  }
  await check('many concurrent gds transfers', async () => {
    const f = file();
    const ts = Array.from({ length: 16 }, (_, i) =>
      agent.createFileTransfer({ op: 'WRITE', local: [src.desc(i << 20, 1 << 20)], files: [f.desc(i << 20, 1 << 20)], engine: 'gds' }),
    );
    await Promise.all(ts.map((t) => t.run({ timeoutMs: 30_000 })));
    cuda.fill(dst.desc(), 0);
    await agent.createFileTransfer({ op: 'READ', local: [dst.desc(0, 16 << 20)], files: [f.desc(0, 16 << 20)], engine: 'gds' }).run({ timeoutMs: 30_000 });
    assert(same(cuda.read(dst.desc(0, 16 << 20)), data.subarray(0, 16 << 20)), 'data');
  });
}

for (const where of [dir, undefined]) {
  await check(`BlockStore ${where ? 'over a directory' : 'in host memory'} with VRAM blocks`, async () => {
    const store = await BlockStore.open(agent, { dir: where && path.join(where, `ixfer-gpu-blocks-${process.pid}`), capacityBytes: 64 << 20 });
    await store.put('layer0/block7', [src.desc(0, 1 << 20), src.desc(5 << 20, 12345)]);
    cuda.fill(dst.desc(), 0);
    await store.get('layer0/block7', dst.desc(0, (1 << 20) + 12345));
    const got = cuda.read(dst.desc(0, (1 << 20) + 12345));
    assert(same(got.subarray(0, 1 << 20), data.subarray(0, 1 << 20)), 'first part');
    assert(same(got.subarray(1 << 20), data.subarray(5 << 20, (5 << 20) + 12345)), 'second part');
    assert(await store.delete('layer0/block7'), 'deleted');
    await store.close();
    if (where) fs.rmSync(path.join(where, `ixfer-gpu-blocks-${process.pid}`), { recursive: true, force: true });
  });
}

src.deregister();
dst.deregister();
await agent.close();
finish();
