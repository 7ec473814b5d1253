// Disaggregated serving in miniature: a prefill process writes each request's
// KV pages into a decode process's KV pool, and the decode side learns that a
// request's pages are there from the notification that travels with them.
//
//   node examples/kv-handoff.mjs [requests]
//
// decode-0 (this process) owns the pool and listens on loopback. prefill-0 (this
// file in a child process) fetches decode-0's metadata from the listener and
// pushes its own, so that each can address the other. decode-0 then tells
// prefill-0, in a notification, which pool pages each request gets; prefill-0
// WRITEs the pages with a notification attached, and decode-0 checks every
// byte as soon as that notification is read.
import { fork } from 'node:child_process';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { Agent, deserializeDescriptors, serializeDescriptors } from 'ixfer';

const PAGE = 64 << 10; // one KV page (e.g. 16 tokens of a 8B-class model's layer slice)
const POOL_PAGES = 256;
const PAGES_PER_REQUEST = 24;
const requests = Number(process.argv[2] ?? 50);
// What prefill writes for page i of request r: reproducible on both sides.
const pageBytes = (r, i) => crypto.createHash('sha256').update(`${r}/${i}`).digest().subarray(0, 8);

if (process.send) await prefill(Number(process.argv[3]));
else await decode();

async function decode() {
  const agent = await Agent.create({ name: 'decode-0' });
  try {
    const pool = agent.allocate(PAGE * POOL_PAGES);
    const { port } = await agent.listen(); // 127.0.0.1, a free port
    const child = fork(fileURLToPath(import.meta.url), [String(requests), String(port)]);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // prefill-0 pushes its metadata to our listener before it asks for pages.
    const hello = await agent.waitForNotification({ match: 'hello', timeoutMs: 30_000 });

    let checked = 0;
    const started = performance.now();
    for (let r = 0; r < requests; r++) {
      // Pick free pages (here: a rotating window) and tell prefill-0 where to write.
      const pages = Array.from({ length: PAGES_PER_REQUEST }, (_, i) => (r * 7 + i * 5) % POOL_PAGES);
      const descs = pages.map((p) => pool.desc(p * PAGE, PAGE));
      await agent.notify(hello.peer, Buffer.concat([Buffer.from(`pages ${r} `), serializeDescriptors(descs)]));
      const done = await agent.waitForNotification({ peer: hello.peer, match: `kv ${r} `, timeoutMs: 30_000 });
      // The notification arrives only once every byte of its WRITE is in the pool.
      pages.forEach((p, i) => {
        const expect = pageBytes(r, i);
        if (!Buffer.from(pool.bytes.subarray(p * PAGE, p * PAGE + expect.length)).equals(expect)) {
          throw new Error(`request ${r}: page ${p} had not landed when '${done.text.trim()}' arrived`);
        }
      });
      checked += pages.length;
    }
    const ms = performance.now() - started;
    const mb = (checked * PAGE) / 1e6;
    console.log(
      `decode-0: ${requests} requests, ${checked} pages of ${PAGE >> 10} KiB, every page checked when its notification ` +
        `arrived (${(mb / (ms / 1000) / 1000).toFixed(2)} GB/s, ${(ms / requests).toFixed(2)} ms per request)`,
    );
    await agent.notify(hello.peer, 'bye');
    await exited;
  } finally {
    await agent.close();
  }
}

async function prefill(port) {
  const agent = await Agent.create({ name: 'prefill-0' });
  try {
    const decodePeer = await agent.fetchRemoteMetadata({ host: '127.0.0.1', port }, { timeoutMs: 10_000 });
    await agent.sendLocalMetadata({ host: '127.0.0.1', port }, { timeoutMs: 10_000 });
    const staging = agent.allocate(PAGE * PAGES_PER_REQUEST); // this request's KV, as the model left it
    await agent.notify(decodePeer, 'hello');
    for (let r = 0; r < requests; r++) {
      const ask = await agent.waitForNotification({ peer: decodePeer, match: `pages ${r} `, timeoutMs: 30_000 });
      const remote = deserializeDescriptors(ask.bytes.subarray(`pages ${r} `.length));
      remote.forEach((_, i) => staging.bytes.set(pageBytes(r, i), i * PAGE));
      await agent
        .createTransfer({
          op: 'WRITE',
          peer: decodePeer,
          local: staging.blocks(PAGE, remote.length),
          remote,
          notification: `kv ${r} ready`,
        })
        .run({ timeoutMs: 30_000 });
    }
    await agent.waitForNotification({ peer: decodePeer, match: 'bye', timeoutMs: 30_000 });
  } finally {
    await agent.close();
  }
}
