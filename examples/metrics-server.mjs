// Prometheus metrics of two agents moving data, served over HTTP on loopback.
//
//   node examples/metrics-server.mjs [port=9464] [rounds=100]
//   curl -s http://127.0.0.1:9464/metrics | grep ixfer_
//
// Needs prom-client (npm install prom-client). The agents WRITE and READ
// `rounds` times, print what moved as JSON, and keep serving until SIGINT/SIGTERM.
import http from 'node:http';

import { Agent } from 'ixfer';
import { Registry } from 'prom-client';

const port = Number(process.argv[2] ?? 9464);
const rounds = Number(process.argv[3] ?? 100);
const BLOCK = 64 << 10;
const BLOCKS = 8;

const registry = new Registry();
const initiator = await Agent.create({ name: 'prefill-0', metrics: { registry } });
const target = await Agent.create({ name: 'decode-0', metrics: { registry } });

const server = http.createServer(async (req, res) => {
  if (req.url !== '/metrics') return res.writeHead(404).end();
  res.setHeader('Content-Type', registry.contentType);
  res.end(await registry.metrics());
});
server.listen(port, '127.0.0.1');
await new Promise((resolve) => server.once('listening', resolve));
console.log(`metrics on http://127.0.0.1:${server.address().port}/metrics`);

const src = initiator.allocate(BLOCK * BLOCKS, { name: 'staging' });
target.allocate(BLOCK * BLOCKS * 4, { name: 'kv' });
const peer = initiator.loadRemoteMetadata(target.getLocalMetadata());
target.loadRemoteMetadata(initiator.getLocalMetadata());
const kv = initiator.remoteRegion(peer, 'kv');
const remote = Array.from({ length: BLOCKS }, (_, i) => ({ addr: kv.addr + i * BLOCK * 2, len: BLOCK }));
const write = initiator.createTransfer({ op: 'WRITE', peer, local: src.blocks(BLOCK, BLOCKS), remote });
const read = initiator.createTransfer({ op: 'READ', peer, local: src.blocks(BLOCK, BLOCKS), remote });
for (let i = 0; i < rounds; i++) {
  await write.run({ timeoutMs: 10_000 });
  await read.run({ timeoutMs: 10_000 });
}
await initiator.notify(peer, `moved ${rounds} rounds`);
await target.waitForNotification({ timeoutMs: 10_000 });
console.log(
  JSON.stringify({
    agent: initiator.name,
    peer,
    txBytes: rounds * write.bytes,
    rxBytes: rounds * read.bytes,
    txRequests: rounds,
    rxRequests: rounds,
    notificationsSent: 1,
    registeredBytes: { [initiator.name]: src.len, [target.name]: BLOCK * BLOCKS * 4 },
  }),
);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    server.close();
    await Promise.all([initiator.close(), target.close()]);
  });
}
