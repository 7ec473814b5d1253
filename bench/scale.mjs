// Cost of descriptor-heavy transfers: createTransfer, post() and done() of N
// descriptors, and makeTransfer from N indices of prepared lists, with
// descriptor objects and with packed lists ({ addrs, lens } typed arrays).
// Two agents in one process, tcp on 127.0.0.1. Run after `npm run compile`:
//   node bench/scale.mjs [N=100000] [DESCRIPTOR_BYTES=128] [ROUNDS=5]
// Descriptors are contiguous on both sides (as a block list often is). Each
// round prints a line; the summary gives the median and the fastest round
// (on a shared machine the fastest is the cost without preemption), and the
// median CPU time of the build (the process's, which preemption does not
// inflate; the agents' threads are idle meanwhile).
import { Agent } from '../dist/index.js';

const N = Number(process.argv[2] ?? 100_000);
const L = Number(process.argv[3] ?? 128);
const rounds = Number(process.argv[4] ?? 5);
const a = await Agent.create({ name: 'scale-a', provider: 'tcp', address: '127.0.0.1' });
const b = await Agent.create({ name: 'scale-b', provider: 'tcp', address: '127.0.0.1' });
try {
  const ra = a.allocate(N * L);
  const rb = b.allocate(N * L);
  const peer = a.loadRemoteMetadata(b.getLocalMetadata());
  const ms = (t) => (performance.now() - t).toFixed(1);
  const objects = {
    local: Array.from({ length: N }, (_, i) => ra.desc(i * L, L)),
    remote: Array.from({ length: N }, (_, i) => ({ addr: rb.addr + i * L, len: L })),
  };
  const offsets = Float64Array.from({ length: N }, (_, i) => i * L);
  const packed = { local: ra.descList(offsets, L), remote: rb.descList(offsets, L) };
  console.log(`${N} descriptors of ${L} bytes; times in ms`);
  const rows = new Map();
  const keep = (row, build, post, cpu) => {
    if (!rows.has(row)) rows.set(row, []);
    rows.get(row).push([build, post, build + post, cpu]);
  };
  const cpuMs = (c) => {
    const d = process.cpuUsage(c);
    return (d.user + d.system) / 1000;
  };
  // Forms interleaved, round by round, so that both meet the same load; round 0
  // (JIT warm-up, connection set-up) is printed but left out of the summary.
  for (let round = 0; round <= rounds; round++) {
    for (const [form, lists] of [['objects', objects], ['packed', packed]]) {
      let t = performance.now();
      const c = process.cpuUsage();
      const x = a.createTransfer({ op: 'WRITE', peer, ...lists });
      const create = performance.now() - t;
      const cpu = cpuMs(c);
      t = performance.now();
      x.post();
      const post = performance.now() - t;
      if (round > 0) keep(`${form}: createTransfer, post`, create, post, cpu);
      t = performance.now();
      await x.done({ timeoutMs: 60_000 });
      console.log(`${form}: createTransfer ${create.toFixed(1)}  post ${post.toFixed(1)}  done ${ms(t)}`);
      x.release();
    }
  }
  const prepared = {};
  for (const [form, lists] of [['objects', objects], ['packed', packed]]) {
    const t = performance.now();
    const pl = a.prepareLocal(lists.local);
    const pr = a.prepareRemote(peer, lists.remote);
    console.log(`${form}: prepareLocal + prepareRemote ${ms(t)}`);
    const idx = form === 'packed' ? Uint32Array.from({ length: N }, (_, i) => i) : Array.from({ length: N }, (_, i) => i);
    prepared[form] = { pl, pr, idx };
  }
  for (let round = 0; round <= rounds; round++) {
    for (const [form, { pl, pr, idx }] of Object.entries(prepared)) {
      let t = performance.now();
      const c = process.cpuUsage();
      const x = a.makeTransfer('WRITE', pl, idx, pr, idx);
      const make = performance.now() - t;
      const cpu = cpuMs(c);
      t = performance.now();
      x.post();
      const post = performance.now() - t;
      if (round > 0) keep(`${form} indices: makeTransfer, post`, make, post, cpu);
      t = performance.now();
      await x.done({ timeoutMs: 60_000 });
      console.log(`${form} indices: makeTransfer ${make.toFixed(1)}  post ${post.toFixed(1)}  done ${ms(t)}`);
      x.release();
    }
  }
  console.log('\nmedian (fastest) of the rounds, ms: build | post | build + post | build CPU (median)');
  const med = (v) => v.slice().sort((x, y) => x - y)[(v.length - 1) >> 1];
  for (const [row, v] of rows) {
    const col = (k) => `${med(v.map((r) => r[k])).toFixed(1)} (${Math.min(...v.map((r) => r[k])).toFixed(1)})`;
    console.log(`${row.padEnd(34)} ${col(0)} | ${col(1)} | ${col(2)} | ${med(v.map((r) => r[3])).toFixed(1)}`);
  }
} finally {
  await a.close();
  await b.close();
}
