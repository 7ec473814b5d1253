// First-transfer latency to a peer in another process (tcp on loopback), with
// and without agent.connect() beforehand. Usage: node bench/connect-latency.mjs [trials=10]
// Each trial is a fresh initiator agent (a new connection): it loads the
// target's metadata, then (with connect) awaits connect(), then times its first
// 4 KiB WRITE and a second one. Prints the medians in ms.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { Agent } from '../dist/index.js';

if (process.argv[2] === 'target') {
  const agent = await Agent.create({ name: 'target' });
  agent.allocate(1 << 20, { name: 'kv' });
  process.send({ metadata: Buffer.from(agent.getLocalMetadata()).toString('base64') });
  process.on('disconnect', () => agent.close());
} else {
  const trials = Number(process.argv[2] ?? 10);
  const child = fork(fileURLToPath(import.meta.url), ['target']);
  const [{ metadata }] = await once(child, 'message');
  const blob = Buffer.from(metadata, 'base64');
  const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1].toFixed(3);
  const rows = [];
  for (const withConnect of [false, true]) {
    const connect = [];
    const first = [];
    const second = [];
    for (let i = 0; i < trials; i++) {
      const agent = await Agent.create({ name: `initiator-${withConnect}-${i}` });
      const src = agent.allocate(4096);
      const peer = agent.loadRemoteMetadata(blob);
      const kv = agent.remoteRegion(peer, 'kv');
      let t0 = performance.now();
      if (withConnect) {
        await agent.connect(peer, { timeoutMs: 10_000 });
        connect.push(performance.now() - t0);
      }
      const t = agent.createTransfer({ op: 'WRITE', peer, local: [src.desc()], remote: [{ addr: kv.addr, len: 4096 }] });
      t0 = performance.now();
      await t.run({ timeoutMs: 10_000 });
      first.push(performance.now() - t0);
      t0 = performance.now();
      await t.run({ timeoutMs: 10_000 });
      second.push(performance.now() - t0);
      await agent.close();
    }
    rows.push({ connect: withConnect, 'connect() ms': withConnect ? median(connect) : '-', 'first WRITE ms': median(first), 'second WRITE ms': median(second) });
  }
  console.table(rows);
  child.disconnect();
}
