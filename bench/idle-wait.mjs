// Measures the CPU an agent uses while it waits on a transfer to a silent peer
// (a peer process stopped with SIGSTOP), and a first rough GB/s for 1 MiB
// WRITEs between two processes. Run after `npm run compile`:
//   node bench/idle-wait.mjs [seconds]
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Agent } from '../dist/index.js';

const seconds = Number(process.argv[2] ?? 10);
const MiB = 1 << 20;
const child = fork(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'peer.mjs'), ['silent', String(64 * MiB)]);
const ready = await new Promise((resolve) => child.on('message', (m) => m.type === 'ready' && resolve(m)));

const agent = await Agent.create({ name: 'waiter' });
const mem = agent.allocate(64 * MiB);
const peer = agent.loadRemoteMetadata(Buffer.from(ready.metadata, 'base64'));

// Throughput: 1 MiB WRITEs, 16 in flight, for about two seconds.
const block = MiB;
const ts = Array.from({ length: 16 }, (_, i) =>
  agent.createTransfer({ op: 'WRITE', peer, local: [mem.desc(i * block, block)], remote: [{ addr: ready.addr + i * block, len: block }] }),
);
let bytes = 0;
const t0 = performance.now();
while (performance.now() - t0 < 2000) {
  for (const t of ts) t.post();
  for (const t of ts) await t.done();
  bytes += ts.length * block;
}
const gbps = bytes / ((performance.now() - t0) / 1000) / 1e9;

// Idle wait: stop the peer, post a 64 MiB WRITE that cannot finish, and wait.
child.kill('SIGSTOP');
const stuck = agent.createTransfer({ op: 'WRITE', peer, local: [mem.desc()], remote: [{ addr: ready.addr, len: 64 * MiB }] }).post();
await new Promise((r) => setTimeout(r, 500)); // let the socket buffers fill
const cpu0 = process.cpuUsage();
const w0 = performance.now();
const outcome = await stuck.done({ timeoutMs: seconds * 1000 }).then(() => 'done', (e) => e.code);
const wall = (performance.now() - w0) / 1000;
const cpu = process.cpuUsage(cpu0);
const cpuSec = (cpu.user + cpu.system) / 1e6;

console.log(JSON.stringify({
  write1MiBGBps: Number(gbps.toFixed(2)),
  silentPeerWaitSeconds: Number(wall.toFixed(2)),
  waitOutcome: outcome,
  cpuSeconds: Number(cpuSec.toFixed(4)),
  cpuPercentOfOneCore: Number(((cpuSec / wall) * 100).toFixed(3)),
}, null, 2));
child.kill('SIGKILL');
await agent.close();
