#!/usr/bin/env node
/**
 * VRAM over the network between two processes on real CUDA, as a plain Node
 * script (the GPU machine has no vitest; it runs from dist/, so compile first).
 * Exits 0 when every check passed, 1 when one failed, and 0 with a SKIP line
 * when there is no CUDA device (a skip, not a pass).
 *
 *   node test/net/gpu/vram-net.mjs tcp staged      # libfabric without FI_HMEM: every VRAM region is staged
 *   node test/net/gpu/vram-net.mjs shm gpudirect   # libfabric 2.6 built with CUDA: shm reaches VRAM (FI_HMEM)
 *
 *   node test/net/gpu/vram-net.mjs tcp staged 0,1 # our VRAM on device 0, the peer's on device 1
 *
 * The second argument is the path VRAM regions must report ('auto': either);
 * the third, the CUDA devices of our VRAM and the peer's (default 0,0; the
 * peer's device must come back in its metadata).
 * Forced staging (staged: true) runs on the same provider after the default
 * path. With IXFER_EMULATE_VRAM=1 it runs on host memory (checks the script
 * itself on a machine without a GPU).
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { assert, check, finish } = await import(path.join(here, '..', '..', 'support', 'fixtures', 'checks.mjs'));
const dist = path.join(here, '..', '..', '..', 'dist');
const { Agent, cuda } = await import(path.join(dist, 'index.js'));
const { Worker } = await import(path.join(dist, 'bench', 'rpc.js'));
const peerScript = path.join(here, '..', '..', 'support', 'fixtures', 'peer.mjs');

const [provider = 'tcp', expectPath = 'auto', devicePair = '0,0'] = process.argv.slice(2);
const [ourDevice, peerDevice] = devicePair.split(',').map(Number);
const devices = cuda.deviceCount();
if (devices === 0) {
  console.log('SKIP: no CUDA device (libcuda.so.1 missing or no GPU): VRAM network tests not run');
  process.exit(0);
}
if (!(ourDevice >= 0 && peerDevice >= 0 && Math.max(ourDevice, peerDevice) < devices)) {
  console.error(`devices ${devicePair} asked for, ${devices} visible (CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES ?? 'unset'})`);
  process.exit(2);
}
const MiB = 1 << 20;
const SIZE = 80 * MiB;
console.log(`provider ${provider}, expected path ${expectPath}, ${devices} CUDA device(s)${process.env.IXFER_EMULATE_VRAM === '1' ? ' (emulated)' : ''}`);

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

async function spawnPeer(name, options) {
  const worker = new Worker(`peer '${name}'`, peerScript, [name, JSON.stringify(options)]);
  worker.proc.on('error', () => {});
  const r = await worker.request({ type: 'ready' });
  return { worker, ready: { ...r, metadata: Buffer.from(r.metadata, 'base64') }, request: (m) => worker.request(m) };
}

const agent = await Agent.create({ name: `vram-net-${provider}`, provider });
const dram = agent.allocate(SIZE);
const vram = agent.allocateVram(SIZE, { devId: ourDevice });
const vramStaged = agent.allocateVram(SIZE, { devId: ourDevice, staged: true });
const bytesOf = (r, offset, len) => (r.kind === 'VRAM' ? cuda.read(r.desc(offset, len)) : r.bytes.subarray(offset, offset + len));
const fill = (r, offset, data) => (r.kind === 'VRAM' ? cuda.write(r.desc(offset, data.length), data) : r.bytes.set(data, offset));

/** Every combination of memory kinds and ops, at sizes from 1 byte to 64 MiB, unaligned; one line of rates. */
async function combinations(child, peer, local, what) {
  const sizes = [
    { len: 1, lo: 0, ro: 0 },
    { len: 4097, lo: 3, ro: 5 },
    { len: 3.5 * MiB + 3, lo: 1001, ro: 77 },
    { len: 64 * MiB, lo: 0, ro: 0 },
  ];
  for (const op of ['WRITE', 'READ']) {
    for (const [lk, mem] of [['DRAM', dram], ['VRAM', local]]) {
      for (const rk of ['DRAM', 'VRAM']) {
        await check(`${what}: ${op} ${lk} here, ${rk} there`, async () => {
          const base = rk === 'VRAM' ? child.ready.vramAddr : child.ready.addr;
          const rates = [];
          for (const c of sizes) {
            const t = agent.createTransfer({ op, peer, local: [mem.desc(c.lo, c.len)], remote: [{ addr: base + c.ro, len: c.len }] });
            const want = lk === 'DRAM' && rk === 'DRAM' ? 'host' : mem.path === 'staged' || (rk === 'VRAM' && child.ready.vramPath === 'staged') ? 'staged' : 'gpudirect';
            assert(t.path === want, `transfer path ${t.path}, expected ${want}`);
            let hash;
            if (op === 'WRITE') {
              const data = crypto.randomBytes(c.len);
              fill(mem, c.lo, data);
              hash = sha(data);
            } else {
              hash = (await child.request({ type: 'fill', region: base, offset: c.ro, len: c.len })).hash;
            }
            const start = performance.now();
            await t.run({ timeoutMs: 60_000 });
            const ms = performance.now() - start;
            if (c.len >= MiB) rates.push(`${(c.len / MiB).toFixed(1)} MiB ${((c.len / ms) * 1e-6).toFixed(2)} GB/s`);
            const got = op === 'WRITE' ? (await child.request({ type: 'hash', region: base, offset: c.ro, len: c.len })).hash : sha(bytesOf(mem, c.lo, c.len));
            assert(got === hash, `${c.len} bytes differ`);
          }
          return `path ${agent.createTransfer({ op, peer, local: [mem.desc(0, 1)], remote: [{ addr: base, len: 1 }] }).path}; ${rates.join(', ')}`;
        });
      }
    }
  }
}

async function lists(child, peer, local, what) {
  await check(`${what}: 1,000 descriptors VRAM to VRAM and back, and a prepared list`, async () => {
    const n = 1000;
    const block = 3000;
    const data = crypto.randomBytes(n * block);
    fill(local, 0, data);
    const l = local.blocks(block, n);
    const r = Array.from({ length: n }, (_, i) => ({ addr: child.ready.vramAddr + (n - 1 - i) * block, len: block }));
    await agent.createTransfer({ op: 'WRITE', peer, local: l, remote: r }).run({ timeoutMs: 60_000 });
    for (let i = 0; i < n; i += 111) {
      const { hash } = await child.request({ type: 'hash', region: child.ready.vramAddr, offset: (n - 1 - i) * block, len: block });
      assert(hash === sha(data.subarray(i * block, (i + 1) * block)), `entry ${i}`);
    }
    fill(local, 0, Buffer.alloc(n * block));
    const pl = agent.prepareLocal(l);
    const pr = agent.prepareRemote(peer, r);
    await agent.makeTransfer('READ', pl, [...Array(n).keys()], pr, [...Array(n).keys()]).run({ timeoutMs: 60_000 });
    assert(sha(bytesOf(local, 0, n * block)) === sha(data), 'READ back through prepared lists');
  });
  await check(`${what}: a notification on a WRITE into our VRAM comes after the bytes`, async () => {
    const count = 4;
    const block = 3 * MiB + 5;
    fill(local, 0, Buffer.alloc(count * block));
    const got = agent.waitForNotification({ match: 'landed ', timeoutMs: 60_000 });
    const md = Buffer.from(agent.getLocalMetadata()).toString('base64');
    const sent = child.request({ type: 'write-notify', metadata: md, offset: 0, count, block, remoteAddr: local.addr });
    const n = await got;
    const now = sha(bytesOf(local, 0, count * block));
    assert(n.text === `landed ${now}`, 'the notification came before all the bytes');
    assert((await sent).hash === now, 'what the peer sent');
  });
}

async function run(what, peerOptions, local) {
  const child = await spawnPeer(`vram-net-peer-${peerOptions.vramStaged ? 'staged' : 'default'}`, { provider, size: SIZE, vramSize: SIZE, vramDevice: peerDevice, ...peerOptions });
  try {
    const peer = agent.loadRemoteMetadata(child.ready.metadata);
    const info = agent.remoteRegions(peer).find((r) => r.kind === 'VRAM');
    await check(`${what}: regions report their path`, async () => {
      const want = peerOptions.vramStaged ? 'staged' : expectPath;
      if (want !== 'auto') {
        assert(local.path === want, `our region: ${local.path}, expected ${want}`);
        assert(info.path === want, `the peer's region: ${info.path}, expected ${want}`);
      }
      assert(local.devId === ourDevice && info.devId === peerDevice, `devices: ours ${local.devId}, theirs ${info.devId}; expected ${devicePair}`);
      return `ours ${local.path} (device ${local.devId}), theirs ${info.path} (device ${info.devId})`;
    });
    await combinations(child, peer, local, what);
    await lists(child, peer, local, what);
    await check(`${what}: no bounce chunk held afterwards`, async () => {
      const ours = agent.stagingStats;
      const theirs = (await child.request({ type: 'staging' })).stats;
      assert(ours.chunksBusy === 0 && theirs.chunksBusy === 0, `chunks busy: ours ${ours.chunksBusy}, theirs ${theirs.chunksBusy}`);
      return `ours ${JSON.stringify(ours)}; theirs ${JSON.stringify(theirs)}`;
    });
  } finally {
    child.worker.proc.kill('SIGKILL');
  }
}

await run('default path', {}, vram);
await run('forced staging', { vramStaged: true }, vramStaged);
await agent.close();

finish();
