// Cost of descriptor-heavy transfers: createTransfer, post() and done() of N
// descriptors, and makeTransfer from N indices of prepared lists. Two agents
// in one process, tcp on 127.0.0.1. Run after `npm run compile`:
//   node bench/scale.mjs [N=100000] [DESCRIPTOR_BYTES=128] [ROUNDS=3]
// Descriptors are contiguous on both sides (as a block list often is).
import { Agent } from '../dist/index.js';

const N = Number(process.argv[2] ?? 100_000);
const L = Number(process.argv[3] ?? 128);
const rounds = Number(process.argv[4] ?? 3);
const a = await Agent.create({ name: 'scale-a', provider: 'tcp', address: '127.0.0.1' });
const b = await Agent.create({ name: 'scale-b', provider: 'tcp', address: '127.0.0.1' });
try {
  const ra = a.allocate(N * L);
  const rb = b.allocate(N * L);
  const peer = a.loadRemoteMetadata(b.getLocalMetadata());
  const ms = (t) => (performance.now() - t).toFixed(1);
  const local = Array.from({ length: N }, (_, i) => ra.desc(i * L, L));
  const remote = Array.from({ length: N }, (_, i) => ({ addr: rb.addr + i * L, len: L }));
  console.log(`${N} descriptors of ${L} bytes; times in ms`);
  for (let round = 0; round < rounds; round++) {
    let t = performance.now();
    const x = a.createTransfer({ op: 'WRITE', peer, local, remote });
    const create = ms(t);
    t = performance.now();
    x.post();
    const post = ms(t);
    t = performance.now();
    await x.done({ timeoutMs: 60_000 });
    console.log(`createTransfer ${create}  post ${post}  done ${ms(t)}`);
    x.release();
  }
  let t = performance.now();
  const pl = a.prepareLocal(local);
  const pr = a.prepareRemote(peer, remote);
  console.log(`prepareLocal + prepareRemote ${ms(t)}`);
  const idx = Array.from({ length: N }, (_, i) => i);
  for (let round = 0; round < rounds; round++) {
    t = performance.now();
    const x = a.makeTransfer('WRITE', pl, idx, pr, idx);
    const make = ms(t);
    t = performance.now();
    x.post();
    const post = ms(t);
    t = performance.now();
    await x.done({ timeoutMs: 60_000 });
    console.log(`makeTransfer ${make}  post ${post}  done ${ms(t)}`);
    x.release();
  }
} finally {
  await a.close();
  await b.close();
}
