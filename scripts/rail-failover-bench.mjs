#!/usr/bin/env node
// Measures a stream of WRITEs over two tcp rails, each on its own veth pair
// into a network namespace this script creates (root only; traffic stays on
// those links), while rail 1's link is taken down and its connections reset
// at both ends, then brought back. Prints GB/s per second of the stream, the
// rate with one rail left against the rate with two, failed transfers, and
// when rail 1 went and came back. Usage (after npm run compile):
//   node scripts/rail-failover-bench.mjs [seconds=9] [block bytes=1048576]
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import readline from 'node:readline';

import { Agent } from '../dist/index.js';

const [seconds = 9, block = 1 << 20] = process.argv.slice(2).map(Number);
const id = process.pid % 100_000;
const ns = `ixb${id}`;
const link = (i, side) => `ixb${id}${side}${i}`;
const subnet = (i) => `10.232.${(id % 100) * 2 + i}`;
const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });

if (process.argv[2] === '--child') {
  // Inside the namespace: a target agent with one rail per link.
  const agent = await Agent.create({ name: 'target', rails: [{ address: process.argv[3] }, { address: process.argv[4] }] });
  const mem = agent.allocate(64 << 20);
  console.log(JSON.stringify({ metadata: Buffer.from(agent.getLocalMetadata()).toString('base64'), addr: mem.addr }));
  process.stdin.resume();
  process.stdin.on('end', () => agent.close().then(() => process.exit(0)));
} else {
  ip('netns', 'add', ns);
  let child;
  try {
    for (const i of [0, 1]) {
      ip('link', 'add', link(i, 'a'), 'type', 'veth', 'peer', 'name', link(i, 'b'));
      ip('link', 'set', link(i, 'b'), 'netns', ns);
      ip('addr', 'add', `${subnet(i)}.1/24`, 'dev', link(i, 'a'));
      ip('link', 'set', link(i, 'a'), 'up');
      ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${subnet(i)}.2/24`, 'dev', link(i, 'b'));
      ip('netns', 'exec', ns, 'ip', 'link', 'set', link(i, 'b'), 'up');
    }
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
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
    a.on('rail', (e) => events.push(`${((Date.now() - start) / 1000).toFixed(2)} s: rail ${e.rail} ${e.up ? 'back' : `down (${e.error?.message})`}`));
    const perSecond = new Array(Math.ceil(seconds)).fill(0);
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
        ip('link', 'set', link(1, 'a'), 'down');
        execFileSync('ss', ['-K', 'dst', `${subnet(1)}.2`], { stdio: 'ignore' });
        execFileSync('ip', ['netns', 'exec', ns, 'ss', '-K', 'dst', `${subnet(1)}.1`], { stdio: 'ignore' });
      } else if (phase === 1 && t >= 2 * third) {
        phase = 2;
        ip('link', 'set', link(1, 'a'), 'up');
      }
      const tr = a.createTransfer({ op: 'WRITE', peer, local: [mem.desc(s * block, block)], remote: [{ addr: target.addr + s * block, len: block }] });
      const p = tr.run({ timeoutMs: 30_000 }).then(
        () => {
          const sec = Math.floor((Date.now() - start) / 1000);
          if (sec < perSecond.length) perSecond[sec] += block;
          done++;
        },
        () => failed++,
      );
      inflight.add(p);
      p.finally(() => inflight.delete(p));
      if (inflight.size >= 8) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    const gbs = perSecond.map((b) => b / 1e9);
    const avg = (from, to) => {
      const xs = gbs.slice(Math.ceil(from / 1000), Math.floor(to / 1000));
      return xs.reduce((x, y) => x + y, 0) / Math.max(1, xs.length);
    };
    const two = avg(0, third);
    const one = avg(third + 1000, 2 * third);
    console.log(`GB/s per second: ${gbs.map((g) => g.toFixed(2)).join(' ')}`);
    console.log(`two rails ${two.toFixed(2)} GB/s, one rail left ${one.toFixed(2)} GB/s (${((100 * one) / two).toFixed(0)}%)`);
    console.log(`transfers: ${done} done, ${failed} failed`);
    for (const e of events) console.log(e);
    console.log(JSON.stringify(a.rails.map(({ domain, ops, failed: f, reposted, downs, rejoins, up }) => ({ domain, ops, failed: f, reposted, downs, rejoins, up }))));
    await a.close();
  } finally {
    child?.stdin.end();
    if (child) await once(child, 'exit');
    for (const i of [0, 1]) {
      try {
        ip('link', 'del', link(i, 'a'));
      } catch {
        // gone already
      }
    }
    ip('netns', 'del', ns);
  }
}
