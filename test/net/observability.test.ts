import diagnostics from 'node:diagnostics_channel';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { Agent, type MemoryRegion } from '../../lib/index.js';
import { decodeMetadata, encodeMetadata, FLAG_NAMES } from '../../lib/net/metadata.js';
import { agents, connectAll, expectCode, MiB, random, root, runExample, sha } from '../support/helpers.js';
import { spawnPeer } from '../support/peer.js';

/** A metric's value for labels, from the registry (undefined when never set); field picks a histogram's _count or _sum. */
async function value(registry: Registry, name: string, labels: Record<string, string>, field = name): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const hit = values.find(
    (v) => ((v as { metricName?: string }).metricName ?? name) === field && Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return hit?.value;
}

describe('metrics (prom-client)', () => {
  let registry: Registry;
  let a: Agent;
  let b: Agent;
  beforeAll(async () => {
    registry = new Registry();
    a = await Agent.create({ name: 'm-a', metrics: { registry, maxPeerLabels: 1 } });
    b = await Agent.create({ name: 'm-b', metrics: { registry } });
    connectAll([a, b]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('counts the bytes and runs that moved, times them, and gauges registered memory', async () => {
    const src = a.allocate(MiB);
    const dst = b.allocate(2 * MiB);
    a.loadRemoteMetadata(b.getLocalMetadata());
    const w = a.createTransfer({ op: 'WRITE', peer: 'm-b', local: src.blocks(4096, 3), remote: dst.blocks(4096, 3) });
    const r = a.createTransfer({ op: 'READ', peer: 'm-b', local: [src.desc(0, 1000)], remote: [dst.desc(MiB, 1000)] });
    for (let i = 0; i < 3; i++) await w.run({ timeoutMs: 10_000 });
    await r.run({ timeoutMs: 10_000 });
    const labels = { agent: 'm-a', peer: 'm-b' };
    expect(await value(registry, 'ixfer_agent_tx_bytes', labels)).toBe(3 * 3 * 4096);
    expect(await value(registry, 'ixfer_agent_tx_requests', labels)).toBe(3);
    expect(await value(registry, 'ixfer_agent_rx_bytes', labels)).toBe(1000);
    expect(await value(registry, 'ixfer_agent_rx_requests', labels)).toBe(1);
    expect(await value(registry, 'ixfer_agent_xfer_time_us', labels, 'ixfer_agent_xfer_time_us_count')).toBe(4);
    expect(await value(registry, 'ixfer_agent_xfer_post_time_us', labels, 'ixfer_agent_xfer_post_time_us_count')).toBe(4);
    expect(await value(registry, 'ixfer_agent_memory_registered_bytes', { agent: 'm-a' })).toBe(MiB);
    expect(await value(registry, 'ixfer_agent_memory_registered_bytes', { agent: 'm-b' })).toBe(2 * MiB);
    // The target side moved nothing itself.
    expect(await value(registry, 'ixfer_agent_tx_bytes', { agent: 'm-b', peer: 'm-a' })).toBeUndefined();
    src.deregister();
    dst.deregister();
  });

  it('counts errors by code, notifications, and folds peers past maxPeerLabels into other', async () => {
    const dst = b.allocate(4096);
    const src = a.allocate(4096);
    a.loadRemoteMetadata(b.getLocalMetadata());
    const t = a.createTransfer({ op: 'WRITE', peer: 'm-b', local: [src.desc()], remote: [dst.desc()] });
    dst.deregister();
    a.loadRemoteMetadata(b.getLocalMetadata()); // the region is gone: posting fails
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
    expect(await value(registry, 'ixfer_agent_errors', { agent: 'm-a', code: 'ERR_NOT_FOUND' })).toBe(1);

    await a.notify('m-b', 'hello');
    await b.waitForNotification({ match: 'hello', timeoutMs: 10_000 });
    expect(await value(registry, 'ixfer_agent_notifications_sent', { agent: 'm-a', peer: 'm-b' })).toBe(1);
    expect(await value(registry, 'ixfer_agent_notifications_received', { agent: 'm-b', peer: 'm-a' })).toBe(1);

    // m-a's one peer label is m-b: itself is the second peer, counted as other.
    a.loadRemoteMetadata(a.getLocalMetadata());
    const self = a.createTransfer({ op: 'WRITE', peer: 'm-a', local: [src.desc(0, 100)], remote: [src.desc(200, 100)] });
    await self.run({ timeoutMs: 10_000 });
    expect(await value(registry, 'ixfer_agent_tx_bytes', { agent: 'm-a', peer: 'other' })).toBe(100);
    expect(await value(registry, 'ixfer_agent_tx_bytes', { agent: 'm-a', peer: 'm-a' })).toBeUndefined();
    src.deregister();
  });

  it('refuses a registry that is not one, and a closed agent leaves the registry: gauges, counters, histograms', async () => {
    await expectCode(() => Agent.create({ name: 'm-x', metrics: { registry: {} as Registry } }), 'ERR_INVALID_PARAM');
    const c = await Agent.create({ name: 'm-c', metrics: { registry } });
    const src = c.allocate(4096);
    const dst = c.allocate(4096);
    expect(await value(registry, 'ixfer_agent_memory_registered_bytes', { agent: 'm-c' })).toBe(8192);
    c.loadRemoteMetadata(c.getLocalMetadata());
    await c.createTransfer({ op: 'WRITE', peer: 'm-c', local: [src.desc(0, 100)], remote: [dst.desc(0, 100)] }).run({ timeoutMs: 10_000 });
    const t = c.createTransfer({ op: 'WRITE', peer: 'm-c', local: [src.desc(0, 100)], remote: [dst.desc(0, 100)] });
    dst.deregister();
    c.loadRemoteMetadata(c.getLocalMetadata());
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
    expect(await value(registry, 'ixfer_agent_tx_bytes', { agent: 'm-c', peer: 'm-c' })).toBe(100);
    expect(await value(registry, 'ixfer_agent_errors', { agent: 'm-c', code: 'ERR_NOT_FOUND' })).toBe(1);
    await c.close();
    // An agent made and closed under new names again and again must not pile up series.
    const left = (await registry.getMetricsAsJSON()).flatMap((m) => m.values.filter((v) => v.labels.agent === 'm-c').map(() => m.name));
    expect(left).toEqual([]);
  });

  it('prom-client is loaded only by an agent created with metrics', async () => {
    // Module._cache holds CommonJS modules (prom-client is one), also when imported from ESM.
    const script = (metrics: string) => `
      import Module from 'node:module';
      import { Agent } from './dist/index.js';
      const loaded = () => Object.keys(Module._cache).some((k) => k.includes('/prom-client/'));
      const before = loaded();
      const a = await Agent.create({ name: 'plain', ${metrics} });
      await a.close();
      console.log(JSON.stringify([before, loaded()]));
    `;
    const run = async (metrics: string) =>
      JSON.parse((await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script(metrics)], { cwd: root })).stdout);
    expect(await run('')).toEqual([false, false]);
    expect(await run('metrics: { registry: { registerMetric() {}, getSingleMetric() {} } }')).toEqual([false, true]);
  });
});

describe('metrics without prom-client', () => {
  it('is ERR_LIBRARY_MISSING saying what to install; the agent works without metrics', async () => {
    // A copy of the package whose node_modules lacks prom-client.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ixfer-noprom-'));
    try {
      await fs.cp(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
      await fs.copyFile(path.join(root, 'package.json'), path.join(dir, 'package.json'));
      await fs.symlink(path.join(root, 'prebuilds'), path.join(dir, 'prebuilds'));
      await fs.mkdir(path.join(dir, 'node_modules'));
      for (const name of await fs.readdir(path.join(root, 'node_modules'))) {
        if (name !== 'prom-client') await fs.symlink(path.join(root, 'node_modules', name), path.join(dir, 'node_modules', name));
      }
      const script = `
        import { Agent } from './dist/index.js';
        const registry = { registerMetric() {}, getSingleMetric() {} };
        const err = await Agent.create({ name: 'np', metrics: { registry } }).catch((e) => e);
        const a = await Agent.create({ name: 'np' });
        a.allocate(4096);
        await a.close();
        console.log(JSON.stringify({ code: err.code, message: err.message }));
      `;
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: dir });
      const { code, message } = JSON.parse(stdout);
      expect(code).toBe('ERR_LIBRARY_MISSING');
      expect(message).toContain('npm install prom-client');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('per-transfer telemetry and diagnostics_channel', () => {
  let a: Agent;
  let b: Agent;
  let src: MemoryRegion;
  let dst: MemoryRegion;
  const seen: { channel: string; msg: any }[] = [];
  const names = [
    'ixfer:transfer:start',
    'ixfer:transfer:end',
    'ixfer:transfer:error',
    'ixfer:notification:sent',
    'ixfer:notification:received',
    'ixfer:peer:change',
  ];
  const listeners = names.map((channel) => [channel, (msg: unknown) => seen.push({ channel, msg })] as const);
  beforeAll(async () => {
    [a, b] = await agents('t-a', 't-b');
    src = a.allocate(MiB);
    dst = b.allocate(MiB);
    for (const [name, fn] of listeners) diagnostics.subscribe(name, fn);
  });
  afterEach(() => {
    seen.length = 0;
  });
  afterAll(async () => {
    for (const [name, fn] of listeners) diagnostics.unsubscribe(name, fn);
    await a?.close();
    await b?.close();
  });

  it('a Transfer reports start, post and transfer time, bytes and descriptors of its last run', async () => {
    const peer = a.loadRemoteMetadata(b.getLocalMetadata());
    expect(seen).toEqual([{ channel: 'ixfer:peer:change', msg: { agent: 't-a', peer: 't-b', action: 'loaded' } }]);
    const data = random(8192);
    src.bytes.set(data);
    const t = a.createTransfer({ op: 'WRITE', peer, local: src.blocks(4096, 2), remote: dst.blocks(4096, 2) });
    expect(t.telemetry).toBeUndefined();
    const before = Date.now();
    await t.run({ timeoutMs: 10_000 });
    expect(Buffer.from(dst.bytes.subarray(0, 8192)).equals(data)).toBe(true);
    const tm = t.telemetry!;
    expect(tm).toMatchObject({ bytes: 8192, descriptors: 2 });
    expect(tm.startTime).toBeGreaterThanOrEqual(before - 1);
    expect(tm.startTime).toBeLessThanOrEqual(Date.now() + 1);
    expect(tm.postDurationUs).toBeGreaterThanOrEqual(0);
    expect(tm.transferDurationUs).toBeGreaterThanOrEqual(tm.postDurationUs);
    const ch = seen.map((s) => s.channel);
    expect(ch).toEqual(['ixfer:peer:change', 'ixfer:transfer:start', 'ixfer:transfer:end']);
    expect(seen[1]!.msg).toMatchObject({ agent: 't-a', op: 'WRITE', peer: 't-b', bytes: 8192, descriptors: 2, transfer: t });
    expect(seen[2]!.msg.transfer.telemetry).toBe(tm);
  });

  it('a run that fails publishes ixfer:transfer:error with the error; notifications are published', async () => {
    const c = await Agent.create({ name: 't-c' });
    const mem = c.allocate(64 * MiB);
    const peer = c.loadRemoteMetadata(b.getLocalMetadata());
    const big = b.allocate(64 * MiB);
    c.loadRemoteMetadata(b.getLocalMetadata());
    const t = c.createTransfer({ op: 'WRITE', peer, local: [mem.desc()], remote: [big.desc()] }).post();
    await c.close(); // in flight: ends as canceled
    expect(t.status).toBe('error');
    const err = seen.find((s) => s.channel === 'ixfer:transfer:error');
    expect(err?.msg).toMatchObject({ agent: 't-c', op: 'WRITE', bytes: 64 * MiB });
    expect(err?.msg.error.code).toBe('ERR_CANCELED');
    big.deregister();

    b.loadRemoteMetadata(a.getLocalMetadata());
    seen.length = 0;
    await b.notify('t-a', 'ping');
    await a.waitForNotification({ match: 'ping', timeoutMs: 10_000 });
    // Either may come first: the receiver can hold it before the sender's completion is drained.
    const notes = seen.filter((s) => s.channel.startsWith('ixfer:notification'));
    expect(notes).toHaveLength(2);
    expect(notes).toEqual(
      expect.arrayContaining([
        { channel: 'ixfer:notification:sent', msg: { agent: 't-b', peer: 't-a', bytes: 4 } },
        { channel: 'ixfer:notification:received', msg: { agent: 't-a', peer: 't-b', bytes: 4 } },
      ]),
    );
  });

  it('NODE_DEBUG=ixfer logs the lifecycle to stderr', async () => {
    const script = `
      import { Agent } from './dist/index.js';
      const a = await Agent.create({ name: 'dbg' });
      a.loadRemoteMetadata(a.getLocalMetadata());
      await a.close();
    `;
    const { stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      cwd: root,
      env: { ...process.env, NODE_DEBUG: 'ixfer' },
    });
    expect(stderr).toMatch(/IXFER \d+: agent dbg: open on tcp/);
    expect(stderr).toMatch(/agent dbg: peer dbg loaded/);
    expect(stderr).toMatch(/agent dbg: closed/);
  });
});

describe('named regions', () => {
  let a: Agent;
  let b: Agent;
  beforeAll(async () => {
    [a, b] = await agents('n-a', 'n-b');
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('names travel in the metadata; the peer finds a region by name and writes into it', async () => {
    const kv = b.allocate(MiB, { name: 'kv' });
    const buf = Buffer.alloc(4096);
    const scratch = b.registerMemory(buf, { name: 'scratch' });
    const plain = b.allocate(4096);
    expect([kv.name, scratch.name, plain.name]).toEqual(['kv', 'scratch', undefined]);
    const peer = a.loadRemoteMetadata(b.getLocalMetadata());
    const regions = a.remoteRegions(peer);
    expect(regions.map((r) => r.name).sort()).toEqual(['kv', 'scratch', undefined].sort());
    const found = a.remoteRegion(peer, 'kv');
    expect(found).toEqual({ name: 'kv', addr: kv.addr, len: MiB, kind: 'DRAM', devId: 0, path: undefined });
    const src = a.registerMemory(random(4096));
    await a.createTransfer({ op: 'WRITE', peer, local: [src.desc()], remote: [{ addr: found.addr + 8192, len: 4096 }] }).run({ timeoutMs: 10_000 });
    expect(Buffer.from(kv.bytes.subarray(8192, 12288)).equals(Buffer.from(src.bytes))).toBe(true);
    await expectCode(() => a.remoteRegion(peer, 'nope'), 'ERR_NOT_FOUND');
    await expectCode(() => a.remoteRegions('nobody'), 'ERR_NOT_FOUND');
    // Gone from the peer's next metadata, gone here.
    scratch.deregister();
    a.loadRemoteMetadata(b.getLocalMetadata());
    await expectCode(() => a.remoteRegion(peer, 'scratch'), 'ERR_NOT_FOUND');
    kv.deregister();
    plain.deregister();
    src.deregister();
  });

  it('refuses a name used twice, and names that are not short clean text', async () => {
    const one = a.allocate(4096, { name: 'dup' });
    const e = await expectCode(() => a.allocate(4096, { name: 'dup' }), 'ERR_INVALID_PARAM');
    expect(e.message).toContain("'dup'");
    await expectCode(() => a.registerMemory(Buffer.alloc(10), { name: '' }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.registerMemory(Buffer.alloc(10), { name: 'x'.repeat(256) }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.allocate(4096, { name: 'a\nb' }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.allocate(4096, { bogus: 1 } as never), 'ERR_INVALID_PARAM');
    expect(a.regions).toEqual([one]);
    one.deregister();
    a.allocate(4096, { name: 'dup' }).deregister(); // free again once deregistered
  });

  it('metadata without names carries no name section; malformed names are ERR_INVALID_PARAM', async () => {
    const base = { name: 'x', instance: '00'.repeat(16), sequence: 1n, provider: 'tcp', mrModeBits: 0, addrFormat: 2, complete: true };
    const region = { addr: 4096, len: 4096, key: 1n, devId: 0, kind: 0 };
    const plain = encodeMetadata({ ...base, regions: [region] });
    expect(Buffer.from(plain).readUInt16LE(6) & FLAG_NAMES).toBe(0);
    expect(plain.length).toBe(4 + 4 + 16 + 8 + 2 + 1 + 2 + 3 + 4 + 4 + 2 + 4 + 32);
    const named = encodeMetadata({ ...base, regions: [{ ...region, name: 'kv' }, { ...region, addr: 16384 }] });
    expect(decodeMetadata(named).regions.map((r) => r.name)).toEqual(['kv', undefined]);
    await expectCode(() => decodeMetadata(named.subarray(0, named.length - 1)), 'ERR_INVALID_PARAM');
    await expectCode(() => decodeMetadata(Buffer.concat([named, Buffer.from([0])])), 'ERR_INVALID_PARAM');
    const twice = encodeMetadata({ ...base, regions: [{ ...region, name: 'kv' }, { ...region, addr: 16384, name: 'kv' }] });
    const e = await expectCode(() => decodeMetadata(twice), 'ERR_INVALID_PARAM');
    expect(e.message).toContain("'kv' appears twice");
  });
});

describe('connect', () => {
  it('sets up the connection to a peer in another process; transfers then work; a dead peer fails within the deadline', async () => {
    const a = await Agent.create({ name: 'c-parent' });
    const child = await spawnPeer('c-child', { size: MiB });
    try {
      await expectCode(() => a.connect('c-child'), 'ERR_NOT_FOUND'); // not loaded yet
      const peer = a.loadRemoteMetadata(child.ready.metadata);
      await a.connect(peer, { timeoutMs: 10_000 });
      await a.connect(peer); // again: harmless
      const mem = a.allocate(MiB);
      const data = random(MiB);
      mem.bytes.set(data);
      await a.createTransfer({ op: 'WRITE', peer, local: [mem.desc()], remote: [{ addr: child.ready.addr, len: MiB }] }).run({ timeoutMs: 10_000 });
      expect((await child.request({ type: 'hash', offset: 0, len: MiB })).hash).toBe(sha(data));
      expect(a.regions).toEqual([mem]); // connect's landing place is not a region of ours

      await child.kill('SIGKILL');
      const b = await Agent.create({ name: 'c-gone' });
      b.allocate(4096);
      const gone = a.loadRemoteMetadata(b.getLocalMetadata());
      await b.close();
      const started = Date.now();
      const err = await a.connect(gone, { timeoutMs: 3000 }).then(
        () => undefined,
        (e: unknown) => e as { code: string },
      );
      expect(Date.now() - started).toBeLessThan(3000 + 2000);
      expect(['ERR_TIMEOUT', 'ERR_REMOTE_DISCONNECT']).toContain(err?.code);
      // The agent still works.
      a.loadRemoteMetadata(a.getLocalMetadata());
      await a.connect('c-parent', { timeoutMs: 10_000 });
    } finally {
      await child.kill();
      await a.close();
    }
  });

  it('a peer whose metadata lists no region cannot be connected to (ERR_NOT_FOUND)', async () => {
    const [a, b] = await agents('c-a', 'c-b');
    try {
      const peer = a.loadRemoteMetadata(b.getLocalMetadata());
      const e = await expectCode(() => a.connect(peer), 'ERR_NOT_FOUND');
      expect(e.message).toContain('no registered region');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('examples', () => {
  it('two-processes.mjs: the target publishes, the initiator finds the region by name and writes into it', async () => {
    const stdout = await runExample('two-processes.mjs');
    expect(stdout).toMatch(/prefill-0 wrote 65536 bytes to decode-0's region 'kv'/);
    expect(stdout).toContain("prefill-0 wrote 65536 bytes into 'kv': all correct");
  });

  it('metrics-server.mjs serves /metrics on loopback with the values of what moved', async () => {
    const child = spawn(process.execPath, [path.join(root, 'examples', 'metrics-server.mjs'), '0', '7'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      child.stdout.setEncoding('utf8');
      let out = '';
      const lines = await new Promise<string[]>((resolve, reject) => {
        child.stdout.on('data', (s: string) => {
          out += s;
          const l = out.split('\n');
          if (l.length >= 3) resolve(l);
        });
        child.once('exit', (code) => reject(new Error(`metrics-server exited (${code}): ${out}`)));
      });
      const url = /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(lines[0]!)![1]!;
      const moved = JSON.parse(lines[1]!);
      const text = await (await fetch(url)).text();
      const metric = (name: string, labels: string) => {
        const m = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(text);
        return m ? Number(m[1]) : undefined;
      };
      const l = `agent="${moved.agent}",peer="${moved.peer}"`;
      expect(metric('ixfer_agent_tx_bytes', l)).toBe(moved.txBytes);
      expect(metric('ixfer_agent_rx_bytes', l)).toBe(moved.rxBytes);
      expect(metric('ixfer_agent_tx_requests', l)).toBe(moved.txRequests);
      expect(metric('ixfer_agent_rx_requests', l)).toBe(moved.rxRequests);
      expect(metric('ixfer_agent_xfer_time_us_count', l)).toBe(moved.txRequests + moved.rxRequests);
      expect(metric('ixfer_agent_notifications_sent', l)).toBe(moved.notificationsSent);
      expect(metric('ixfer_agent_notifications_received', `agent="${moved.peer}",peer="${moved.agent}"`)).toBe(1);
      for (const [agent, bytes] of Object.entries(moved.registeredBytes)) {
        expect(metric('ixfer_agent_memory_registered_bytes', `agent="${agent}"`)).toBe(bytes);
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
