// The README's main example, in the two processes it takes in real use: a
// target that owns a KV pool and publishes its metadata, and an initiator that
// loads that metadata, finds the pool by its name and WRITEs into it.
//
//   node examples/two-processes.mjs target              # prints the port it listens on
//   node examples/two-processes.mjs initiator <port>    # in another shell
//   node examples/two-processes.mjs                     # both: the target in a child process
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { Agent } from 'ixfer';

const BLOCK = 4096;
const BLOCKS = 16;
// What the initiator sends, reproducible on the target to check it.
const pattern = (i) => (i * 7 + 3) & 0xff;

const [role = 'both', port] = process.argv.slice(2);
if (role === 'target') await target();
else if (role === 'initiator') await initiator(Number(port));
else await both();

async function target() {
  const agent = await Agent.create({ name: 'decode-0' }); // tcp on 127.0.0.1 by default
  try {
    await serve(agent);
  } finally {
    await agent.close();
  }
}

async function serve(agent) {
  const kv = agent.allocate(64 << 20, { name: 'kv' }); // page-aligned, registered, named in the metadata
  const { port } = await agent.listen(); // serves our metadata on 127.0.0.1
  console.log(`listening ${port}`);
  // The notification travels with the WRITE: it arrives once every byte is in kv.
  const n = await agent.waitForNotification({ match: 'written', timeoutMs: 30_000 });
  const got = kv.bytes.subarray(0, BLOCK * BLOCKS);
  const ok = got.every((b, i) => b === pattern(i));
  console.log(`${n.peer} wrote ${got.length} bytes into 'kv': ${ok ? 'all correct' : 'WRONG BYTES'}`);
  process.exitCode = ok ? 0 : 1;
}

async function initiator(port) {
  const agent = await Agent.create({ name: 'prefill-0' });
  try {
    await send(agent, port);
  } finally {
    await agent.close();
  }
}

async function send(agent, port) {
  const src = agent.registerMemory(Buffer.alloc(BLOCK * BLOCKS, 0).map((_, i) => pattern(i)));
  const peer = await agent.fetchRemoteMetadata({ host: '127.0.0.1', port }); // 'decode-0'
  const kv = agent.remoteRegion(peer, 'kv'); // { name, addr, len, kind }
  await agent.connect(peer); // optional: the connection is set up now, not by the first transfer
  const t = agent.createTransfer({
    op: 'WRITE',
    peer,
    local: src.blocks(BLOCK, BLOCKS),
    remote: Array.from({ length: BLOCKS }, (_, i) => ({ addr: kv.addr + i * BLOCK, len: BLOCK })),
    notification: 'written',
  });
  await t.run({ timeoutMs: 5000 });
  console.log(`prefill-0 wrote ${t.bytes} bytes to ${peer}'s region '${kv.name}' in ${t.telemetry.transferDurationUs} µs`);
}

async function both() {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'target'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  child.stdout.setEncoding('utf8');
  let out = '';
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (s) => {
      out += s;
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`the target exited (${code}) before listening`)));
  });
  await initiator(port);
  const [code] = await exited;
  process.stdout.write(out.replace(/^listening \d+\n/, ''));
  process.exitCode = code ?? 1;
}
