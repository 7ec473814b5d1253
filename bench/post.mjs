// Time spent inside post() (the caller's cost of starting a transfer), for
// one descriptor of 4 KiB .. 1 MiB reposted, and for a transfer of N
// descriptors. Two agents in one process, tcp on 127.0.0.1. Run after
// `npm run compile`:
//   node bench/post.mjs [ITERATIONS=2000] [N=100000]
import { Agent } from '../dist/index.js';

const iterations = Number(process.argv[2] ?? 2000);
const N = Number(process.argv[3] ?? 100_000);
const a = await Agent.create({ name: 'post-a', provider: 'tcp', address: '127.0.0.1' });
const b = await Agent.create({ name: 'post-b', provider: 'tcp', address: '127.0.0.1' });
const us = (v) => (v * 1000).toFixed(1);
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
try {
  const ra = a.allocate(Math.max(1 << 20, N * 128));
  const rb = b.allocate(Math.max(1 << 20, N * 128));
  const peer = a.loadRemoteMetadata(b.getLocalMetadata());
  await a.connect(peer);
  console.log('post() in µs: p50 p99 max');
  for (let size = 4096; size <= 1 << 20; size *= 4) {
    const x = a.createTransfer({ op: 'WRITE', peer, local: [ra.desc(0, size)], remote: [rb.desc(0, size)] });
    const t = new Float64Array(iterations);
    for (let i = 0; i < iterations; i++) {
      const start = performance.now();
      x.post();
      t[i] = performance.now() - start;
      await x.done();
    }
    t.sort();
    console.log(`${size} B x1  ${us(pct(t, 0.5))} ${us(pct(t, 0.99))} ${us(t[t.length - 1])}`);
    x.release();
  }
  // N descriptors of 128 B, scattered (every other block) so nothing merges, and contiguous.
  for (const [label, step] of [['scattered', 2], ['contiguous', 1]]) {
    const n = step === 2 ? N / 2 : N;
    const offs = Float64Array.from({ length: n }, (_, i) => i * 128 * step);
    const x = a.createTransfer({ op: 'WRITE', peer, local: ra.descList(offs, 128), remote: rb.descList(offs, 128) });
    const t = new Float64Array(Math.min(iterations, 50));
    for (let i = 0; i < t.length; i++) {
      const start = performance.now();
      x.post();
      t[i] = performance.now() - start;
      await x.done({ timeoutMs: 60_000 });
    }
    t.sort();
    console.log(`128 B x${n} ${label}  ${us(pct(t, 0.5))} ${us(pct(t, 0.99))} ${us(t[t.length - 1])}`);
    x.release();
  }
} finally {
  await a.close();
  await b.close();
}
