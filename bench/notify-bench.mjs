// Notification rate and latency between two agents in two processes (tcp on
// loopback). Usage: node bench/notify-bench.mjs [seconds-per-case]
//   rate:    standalone notifications/s at 64 B and 1 KiB: received, over the
//            time from the first send to the last arrival
//   latency: median time from posting a WRITE until the receiver holds its
//            notification, against the WRITE alone (post to done), at 4 KiB and 1 MiB
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { Agent } from '../dist/index.js';

const MiB = 1 << 20;
const seconds = Number(process.argv[2] ?? 2);
const now = () => performance.timeOrigin + performance.now();

if (process.argv[2] === 'receiver') {
  const agent = await Agent.create({ name: 'receiver' });
  const mem = agent.allocate(4 * MiB);
  process.on('message', async (msg) => {
    if (msg.type === 'metadata') {
      agent.loadRemoteMetadata(Buffer.from(msg.blob, 'base64'));
    } else if (msg.type === 'count') {
      // Counts notifications until 'end', which carries the number sent.
      let n = 0;
      for await (const note of agent.notifications()) {
        if (note.text.startsWith('end')) {
          process.send({ type: 'counted', n, expected: Number(note.text.slice(4)), at: now() });
          break;
        }
        n++;
      }
    } else if (msg.type === 'stamp') {
      // Replies with the arrival time of each notification.
      for (let i = 0; i < msg.count; i++) {
        await agent.waitForNotification({});
        process.send({ type: 'arrived', at: now() });
      }
    }
  });
  process.send({ type: 'ready', blob: Buffer.from(agent.getLocalMetadata()).toString('base64'), addr: mem.addr, len: mem.len });
  process.on('disconnect', () => agent.close().then(() => process.exit(0)));
} else {
  const child = fork(fileURLToPath(import.meta.url), ['receiver']);
  const next = (type) => new Promise((resolve) => {
    const on = (m) => { if (m.type === type) { child.off('message', on); resolve(m); } };
    child.on('message', on);
  });
  const ready = await next('ready');
  const agent = await Agent.create({ name: 'sender' });
  const src = agent.allocate(4 * MiB);
  const peer = agent.loadRemoteMetadata(Buffer.from(ready.blob, 'base64'));
  child.send({ type: 'metadata', blob: Buffer.from(agent.getLocalMetadata()).toString('base64') });

  const rows = [];
  for (const size of [64, 1024]) {
    const body = Buffer.alloc(size, 7);
    child.send({ type: 'count' });
    const counted = next('counted');
    const start = now();
    const until = start + seconds * 1000;
    let sent = 0;
    // Keep a window of sends outstanding; each resolves when handed over.
    const window = new Set();
    while (now() < until) {
      while (window.size < 256) {
        const p = agent.notify(peer, body).finally(() => window.delete(p));
        window.add(p);
        sent++;
      }
      await Promise.race(window);
    }
    await Promise.all(window);
    await agent.notify(peer, `end ${sent}`);
    const { n, expected, at } = await counted;
    const ms = at - start; // from the first send to the last arrival
    rows.push({ case: `rate ${size} B`, value: `${Math.round((n / ms) * 1000).toLocaleString('en-US')} msg/s`, note: `${n}/${expected} received` });
  }

  const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
  for (const size of [4096, MiB]) {
    const remote = [{ addr: ready.addr, len: size }];
    const t = agent.createTransfer({ op: 'WRITE', peer, local: [src.desc(0, size)], remote });
    const plain = [];
    const withNote = [];
    const iters = Math.max(50, Math.min(2000, Math.round((seconds * 1000) / (size > 65536 ? 2 : 0.3))));
    for (let i = 0; i < iters; i++) {
      const t0 = now();
      await t.run();
      plain.push(now() - t0);
    }
    child.send({ type: 'stamp', count: iters });
    for (let i = 0; i < iters; i++) {
      const arrived = next('arrived');
      const t0 = now();
      t.post('x');
      const { at } = await arrived;
      await t.done();
      withNote.push(at - t0);
    }
    const p = median(plain) * 1000;
    const w = median(withNote) * 1000;
    rows.push({ case: `WRITE ${size >= MiB ? '1 MiB' : '4 KiB'}`, value: `${p.toFixed(0)} µs alone, ${w.toFixed(0)} µs to the notification`, note: `+${(w - p).toFixed(0)} µs (median of ${iters})` });
  }
  console.table(rows);
  child.disconnect();
  await agent.close();
}
