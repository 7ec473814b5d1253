#!/usr/bin/env node
// Measures a stream of WRITEs over two tcp rails, each on its own veth pair
// into a network namespace this script creates (root only; traffic stays on
// those links), while rail 1's link goes for the middle third of the run and
// comes back (the namespace's end goes down: ours keeps its routes, so
// nothing goes out another way): `reset` also resets its connections at both
// ends; `silent` does not (a pulled cable), and only the link timeout
// (linkTimeoutMs) turns it into a connection error. Prints GB/s per second of the stream, the
// rate over the whole outage and once rail 1 was out against the rate with
// two rails, failed transfers, and when rail 1 went and came back. Usage
// (after npm run compile):
//   node scripts/rail-failover-bench.mjs [seconds=9] [block bytes=1048576] [reset|silent]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import readline from 'node:readline';

import { Agent } from '../dist/index.js';
import { vethNamespace } from '../test/support/netns.mjs';

const seconds = Number(process.argv[2] ?? 9);
const block = Number(process.argv[3] ?? 1 << 20);
const silent = process.argv[4] === 'silent';
const id = process.pid % 100_000;
const { ns, link, subnet, make, remove, setLink, reset } = vethNamespace(`ixb${id}`, 232, (id % 100) * 2);

if (process.argv[2] === '--child') {
  // Inside the namespace: a target agent with one rail per link.
  const agent = await Agent.create({ name: 'target', rails: [{ address: process.argv[3] }, { address: process.argv[4] }] });
  const mem = agent.allocate(64 << 20);
  console.log(JSON.stringify({ metadata: Buffer.from(agent.getLocalMetadata()).toString('base64'), addr: mem.addr }));
  process.stdin.resume();
  process.stdin.on('end', () => agent.close().then(() => process.exit(0)));
} else {
  const unavailable = make();
  if (unavailable) {
    console.error(unavailable);
    process.exit(2);
  }
  let child;
  try {
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, new URL(import.meta.url).pathname, '--child', `${subnet(0)}.2`, `${subnet(1)}.2`], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const [line] = await once(readline.createInterface({ input: child.stdout }), 'line');
    const target = JSON.parse(line);
    const a = await Agent.create({ name: 'initiator', rails: [{ iface: link(0, 'a') }, { iface: link(1, 'a') }], railCooldownMs: 500 });
    const mem = a.allocate(64 << 20);
    const peer = a.loadRemoteMetadata(Buffer.from(target.metadata, 'base64'));
    const start = Date.now();
    const events = [];
    let outAt;
    a.on('rail', (e) => {
      if (!e.up && outAt === undefined) outAt = Date.now() - start;
      events.push(`${((Date.now() - start) / 1000).toFixed(2)} s: rail ${e.rail} ${e.up ? 'back' : `down (${e.error?.message})`}`);
    });
    const tenths = new Array(Math.ceil(seconds * 10)).fill(0); // bytes done per 100 ms
    let failed = 0;
    let done = 0;
    const third = (seconds * 1000) / 3;
    let phase = 0;
    const slots = 32;
    const inflight = new Set();
    for (let s = 0; Date.now() - start < seconds * 1000; s = (s + 1) % slots) {
      const t = Date.now() - start;
      if (phase === 0 && t >= third) {
        phase = 1;
        setLink(1, 'down');
        if (!silent) reset(1);
      } else if (phase === 1 && t >= 2 * third) {
        phase = 2;
        setLink(1, 'up');
      }
      const tr = a.createTransfer({ op: 'WRITE', peer, local: [mem.desc(s * block, block)], remote: [{ addr: target.addr + s * block, len: block }] });
      const p = tr.run({ timeoutMs: 30_000 }).then(
        () => {
          const tenth = Math.floor((Date.now() - start) / 100);
          if (tenth < tenths.length) tenths[tenth] += block;
          done++;
        },
        () => failed++,
      );
      inflight.add(p);
      p.finally(() => inflight.delete(p));
      if (inflight.size >= 8) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    /** GB/s over [from, to) ms of the run. */
    const rate = (from, to) => {
      const xs = tenths.slice(Math.ceil(from / 100), Math.floor(to / 100));
      return xs.reduce((x, y) => x + y, 0) / 1e9 / Math.max(0.1, xs.length / 10);
    };
    const two = rate(500, third); // after the connections are made
    const outage = rate(third, 2 * third);
    const pct = (x) => `${((100 * x) / two).toFixed(0)}%`;
    const perSecond = Array.from({ length: Math.ceil(seconds) }, (_, i) => rate(i * 1000, (i + 1) * 1000));
    console.log(`GB/s per second: ${perSecond.map((g) => g.toFixed(2)).join(' ')}`);
    console.log(`${silent ? 'silent' : 'reset'} link: two rails ${two.toFixed(2)} GB/s; over the whole outage ${outage.toFixed(2)} GB/s (${pct(outage)})`);
    if (outAt !== undefined && outAt < 2 * third) {
      const one = rate(outAt, 2 * third);
      console.log(`rail 1 out ${((outAt - third) / 1000).toFixed(2)} s after its link went; then one rail ${one.toFixed(2)} GB/s (${pct(one)})`);
    }
    console.log(`transfers: ${done} done, ${failed} failed`);
    for (const e of events) console.log(e);
    console.log(JSON.stringify(a.rails.map(({ domain, ops, failed: f, reposted, downs, rejoins, up }) => ({ domain, ops, failed: f, reposted, downs, rejoins, up }))));
    await a.close();
  } finally {
    child?.stdin.end();
    if (child) await once(child, 'exit');
    remove();
  }
}
