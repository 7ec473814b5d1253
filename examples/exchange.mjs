// Two processes find each other without carrying metadata blobs by hand, then
// move a buffer both ways and check it.
//
//   node examples/exchange.mjs tcp                          # TCP side channel, with a shared secret
//   node examples/exchange.mjs etcd http://127.0.0.1:2379   # through etcd
//
// The target ('decode-0') owns a KV buffer. The initiator ('prefill-0') is this
// same file in a child process: it finds the target, READs the buffer, checks
// it, and WRITEs its own data back, which the target checks. Which memory to
// use is application data (the descriptors): here it travels on the command line.
import { fork } from 'node:child_process';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { Agent, deserializeDescriptors, serializeDescriptors } from 'ixfer';

const SIZE = 8 << 20;
const [via, endpoint] = process.argv.slice(2);
const sha = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
if (via !== 'tcp' && !(via === 'etcd' && endpoint)) {
  console.error('usage: node examples/exchange.mjs tcp | etcd <etcd client URL>');
  process.exit(2);
}
const metadata =
  via === 'etcd'
    ? { etcd: { endpoints: [endpoint], namespace: 'ixfer-example' } }
    : { secret: process.env.IXFER_EXAMPLE_SECRET ?? crypto.randomBytes(32).toString('hex') };

if (process.send) await initiator(JSON.parse(process.argv[4]));
else await target();

async function target() {
  const agent = await Agent.create({ name: 'decode-0', metadata });
  try {
    const kv = agent.allocate(SIZE);
    kv.bytes.set(crypto.randomBytes(SIZE));
    const address = via === 'tcp' ? await agent.listen() : undefined; // 127.0.0.1, a free port
    if (via === 'etcd') await agent.sendLocalMetadata(); // the entry now lists kv (changes are otherwise republished in the background)
    console.log(`decode-0: published through ${address ? `a listener at ${address.host}:${address.port}` : `etcd at ${endpoint}`}`);

    const job = { descriptors: Buffer.from(serializeDescriptors([kv.desc()])).toString('base64'), hash: sha(kv.bytes), address };
    const env = { ...process.env, ...(metadata.secret ? { IXFER_EXAMPLE_SECRET: metadata.secret } : {}) };
    const child = fork(fileURLToPath(import.meta.url), [via, endpoint ?? '', JSON.stringify(job)], { env });
    const written = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`prefill-0 exited with ${code}`)));
    });
    const ok = written.hash === sha(kv.bytes);
    console.log(`decode-0: prefill-0 wrote ${SIZE} bytes into kv: ${ok ? 'checked' : 'MISMATCH'}`);
    child.disconnect();
    process.exitCode = ok ? 0 : 1;
  } finally {
    await agent.close();
  }
}

async function initiator(job) {
  const agent = await Agent.create({ name: 'prefill-0', metadata });
  try {
    let started = performance.now();
    const peer = await agent.fetchRemoteMetadata(via === 'etcd' ? 'decode-0' : job.address, { timeoutMs: 10_000 });
    console.log(`prefill-0: found '${peer}' through ${via} in ${(performance.now() - started).toFixed(1)} ms`);

    const remote = deserializeDescriptors(Buffer.from(job.descriptors, 'base64'));
    const local = agent.allocate(SIZE);
    started = performance.now();
    await agent.createTransfer({ op: 'READ', peer, local: [local.desc()], remote }).run({ timeoutMs: 10_000 });
    const ms = performance.now() - started;
    if (sha(local.bytes) !== job.hash) throw new Error('READ brought back other bytes');
    console.log(`prefill-0: READ ${SIZE} bytes in ${ms.toFixed(1)} ms (the first transfer to a peer includes connecting): checked`);

    local.bytes.set(crypto.randomBytes(SIZE));
    await agent.createTransfer({ op: 'WRITE', peer, local: [local.desc()], remote }).run({ timeoutMs: 10_000 });
    process.send({ hash: sha(local.bytes) });
    await new Promise((resolve) => process.once('disconnect', resolve));
  } finally {
    await agent.close();
  }
}
