import crypto from 'node:crypto';
import net from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { encodeFrame, FrameReader, FrameType, HEADER_BYTES, ID_BYTES, MAC_BYTES } from '../../lib/exchange/frame.js';
import { isLoopback, RemoteRefusedError } from '../../lib/exchange/tcp-channel.js';
import { Agent, type IxferError, type MemoryRegion, type SocketAddress } from '../../lib/index.js';
import { expectCode, MiB, random, runExample, sha } from '../support/helpers.js';
import { spawnPeer, type Peer } from '../support/peer.js';

const SECRET = 'exchange-test-secret-0123456789';

describe('TCP side channel between two processes', () => {
  let a: Agent;
  let mem: MemoryRegion;
  let child: Peer;
  let childAddress: SocketAddress;
  let parentAddress: SocketAddress;
  beforeAll(async () => {
    a = await Agent.create({ name: 'tcp-parent', metadata: { secret: SECRET } });
    mem = a.allocate(4 * MiB);
    child = await spawnPeer('tcp-child', { metadata: { secret: SECRET }, listen: true });
    childAddress = child.ready.address!;
  });
  afterAll(async () => {
    await child?.kill();
    await a?.close();
  });

  it('fetch loads the peer, and a transfer right after it lands', async () => {
    expect(childAddress.host).toBe('127.0.0.1');
    expect(await a.fetchRemoteMetadata(childAddress)).toBe('tcp-child');
    expect(a.peers).toContain('tcp-child');
    const data = random(MiB + 3);
    mem.bytes.set(data, 0);
    await a
      .createTransfer({ op: 'WRITE', peer: 'tcp-child', local: [mem.desc(0, data.length)], remote: [{ addr: child.ready.addr, len: data.length }] })
      .run({ timeoutMs: 30_000 });
    expect((await child.request({ type: 'hash', offset: 0, len: data.length })).hash).toBe(sha(data));

    const { hash } = await child.request({ type: 'fill', offset: 0, len: MiB });
    await a
      .createTransfer({ op: 'READ', peer: 'tcp-child', local: [mem.desc(0, MiB)], remote: [{ addr: child.ready.addr, len: MiB }] })
      .run({ timeoutMs: 30_000 });
    expect(sha(mem.bytes.subarray(0, MiB))).toBe(hash);
  });

  it('send makes the peer load ours: it writes into our memory', async () => {
    await a.sendLocalMetadata(childAddress);
    expect((await child.request({ type: 'peers' })).peers).toContain('tcp-parent');
    const { hash } = await child.request({ type: 'write', peer: 'tcp-parent', offset: 0, len: MiB, remoteAddr: mem.addr + MiB });
    expect(sha(mem.bytes.subarray(MiB, 2 * MiB))).toBe(hash);
  });

  it('the peer fetches from our listener', async () => {
    parentAddress = await a.listen();
    expect(parentAddress.port).toBeGreaterThan(0);
    expect((await child.request({ type: 'fetch', from: parentAddress })).peer).toBe('tcp-parent');
    await expectCode(() => a.listen(), 'ERR_NOT_ALLOWED'); // one listener per agent
  });

  it('invalidate makes the peers we sent to, and those named, drop ours', async () => {
    await a.invalidateLocalMetadata();
    expect((await child.request({ type: 'peers' })).peers).not.toContain('tcp-parent');
    const err = await child.request({ type: 'write', peer: 'tcp-parent', offset: 0, len: 64, remoteAddr: mem.addr }).catch((e: IxferError) => e);
    expect((err as IxferError).code).toBe('ERR_NOT_FOUND');

    // Loaded again by the peer's own fetch, not sent by us: only an invalidation naming it reaches it.
    await child.request({ type: 'fetch', from: parentAddress });
    await a.invalidateLocalMetadata();
    expect((await child.request({ type: 'peers' })).peers).toContain('tcp-parent');
    await a.invalidateLocalMetadata({ to: [childAddress] });
    expect((await child.request({ type: 'peers' })).peers).not.toContain('tcp-parent');
    // Invalidating an agent the peer does not know is not an error.
    await a.invalidateLocalMetadata({ to: [childAddress] });
    // And the peer keeps serving: fetch and transfer again.
    expect(await a.fetchRemoteMetadata(childAddress)).toBe('tcp-child');
    await a
      .createTransfer({ op: 'WRITE', peer: 'tcp-child', local: [mem.desc(0, 4096)], remote: [{ addr: child.ready.addr, len: 4096 }] })
      .run({ timeoutMs: 30_000 });
  });
});

describe("a throwing 'peer' listener", () => {
  it('is an uncaught error of its own: pushes and invalidations are still answered OK', async () => {
    const child = await spawnPeer('tcp-throwing', { listen: true, throwOnPeer: true });
    try {
      await using a = await Agent.create({ name: 'tcp-pusher' });
      const to = child.ready.address!;
      await a.sendLocalMetadata(to, { timeoutMs: 2000 });
      expect((await child.request({ type: 'peers' })).peers).toContain('tcp-pusher');
      await a.invalidateLocalMetadata({ timeoutMs: 2000 });
      expect((await child.request({ type: 'peers' })).peers).not.toContain('tcp-pusher');
      expect((await child.request({ type: 'uncaught' })).errors).toEqual([
        'peer listener failed on tcp-pusher loaded',
        'peer listener failed on tcp-pusher dropped',
      ]);
      expect((await child.request({ type: 'stats' })).stats).toMatchObject({ served: 2, loadFailures: 0 });
      expect(await a.fetchRemoteMetadata(to)).toBe('tcp-throwing');
    } finally {
      await child.kill();
    }
  });
});

/** Opens a connection that sends nothing; resolves once connected. */
function idle(address: SocketAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(address);
    socket.once('error', reject);
    socket.once('connect', () => resolve(socket));
  });
}

/** Sends raw bytes to a listener; resolves with what came back once the listener closes the connection. */
function raw(address: SocketAddress, bytes: Buffer, opts: { end?: boolean } = {}): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = net.connect(address);
    const got: Buffer[] = [];
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('error', () => {}); // a reset while we still write is the listener closing on us
    socket.on('close', () => resolve(Buffer.concat(got)));
    socket.once('connect', () => {
      socket.write(bytes);
      if (opts.end) socket.end();
    });
  });
}

const newId = () => crypto.randomBytes(ID_BYTES);

describe('a listener refuses bad frames and keeps serving', () => {
  let listener: Agent;
  let client: Agent;
  let target: MemoryRegion;
  let address: SocketAddress;
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  const secret = Buffer.from(SECRET);
  const maxFrameBytes = 64 * 1024;

  beforeAll(async () => {
    process.on('warning', onWarning);
    listener = await Agent.create({ name: 'tcp-listener', metadata: { secret: SECRET, maxFrameBytes, timeoutMs: 1000 } });
    target = listener.allocate(MiB);
    client = await Agent.create({ name: 'tcp-client', metadata: { secret: SECRET } });
    address = await listener.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    process.off('warning', onWarning);
    await client?.close();
    await listener?.close();
  });

  /** A good fetch and a transfer still work. */
  async function stillServes(): Promise<void> {
    expect(await client.fetchRemoteMetadata(address)).toBe('tcp-listener');
    const data = random(4096);
    const src = client.registerMemory(Buffer.from(data));
    await client.createTransfer({ op: 'WRITE', peer: 'tcp-listener', local: [src.desc()], remote: [target.desc(0, 4096)] }).run({ timeoutMs: 10_000 });
    expect(Buffer.compare(target.bytes.subarray(0, 4096), data)).toBe(0);
    src.deregister();
  }

  async function refused(bytes: Buffer, counter: keyof Agent['exchangeStats'], opts?: { end?: boolean }): Promise<void> {
    const before = listener.exchangeStats[counter];
    const warned = warnings.length;
    expect((await raw(address, bytes, opts)).length).toBe(0); // closed, no answer
    expect(listener.exchangeStats[counter]).toBe(before + 1);
    expect(warnings.slice(warned).join('\n')).toMatch(/metadata listener refused a frame from 127\.0\.0\.1:\d+/);
    await stillServes();
  }

  const good = () => encodeFrame(FrameType.FETCH, newId(), Buffer.alloc(0), secret);

  it('answers a frame that arrives one byte at a time', async () => {
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const socket = net.connect(address);
      const reader = new FrameReader(16 * MiB, secret);
      socket.on('error', reject);
      socket.on('data', (c: Buffer) => {
        const frame = reader.push(c);
        if (frame) {
          socket.destroy();
          resolve(frame.payload);
        }
      });
      socket.once('connect', async () => {
        for (const b of good()) {
          socket.write(Buffer.from([b]));
          await new Promise((r) => setTimeout(r, 1));
        }
      });
    });
    expect(client.loadRemoteMetadata(answer)).toBe('tcp-listener');
  });

  it('one request per connection: a second frame on it gets no answer', async () => {
    const before = listener.exchangeStats.served;
    const answer = await raw(address, Buffer.concat([good(), good()]));
    const frame = new FrameReader(MiB, secret).push(answer)!;
    expect(frame.type).toBe(FrameType.OK);
    expect(answer.length).toBe(HEADER_BYTES + frame.payload.length + MAC_BYTES); // nothing after the one answer
    expect(listener.exchangeStats.served).toBe(before + 1);
    await stillServes();
  });

  it('at maxConnections, a request closes the oldest idle connection (counted in timedOut) instead of being refused', async () => {
    await using capped = await Agent.create({ name: 'tcp-capped', metadata: { secret: SECRET, maxConnections: 2, timeoutMs: 1000 } });
    const at = await capped.listen();
    const held = [await idle(at), await idle(at)];
    const oldestClosed = new Promise((r) => held[0]!.once('close', r));
    const warned = warnings.length;
    expect(await client.fetchRemoteMetadata(at)).toBe('tcp-capped');
    await oldestClosed;
    expect(held[1]!.destroyed).toBe(false);
    expect(capped.exchangeStats.timedOut).toBe(1);
    expect(capped.exchangeStats.dropped).toBe(0);
    expect(warnings.slice(warned).join('\n')).toMatch(/closed a connection that sent no complete request/);
  });

  it('garbage', () => refused(random(64), 'malformed'));

  it('a truncated frame', () => {
    const frame = encodeFrame(FrameType.PUSH, newId(), client.getLocalMetadata(), secret);
    return refused(frame.subarray(0, frame.length - 10), 'malformed', { end: true });
  });

  it('another frame version', () => {
    const frame = good();
    frame[4] = 2;
    return refused(frame, 'malformed');
  });

  it('an answer sent as a request', () => refused(encodeFrame(FrameType.OK, newId(), Buffer.alloc(0), secret), 'malformed'));

  it('an oversized frame is refused from its header, without reading the payload', async () => {
    const header = encodeFrame(FrameType.PUSH, newId(), Buffer.alloc(0), secret).subarray(0, HEADER_BYTES);
    header.writeUInt32LE(maxFrameBytes + 1, 24);
    await refused(Buffer.from(header), 'oversized');
    await refused(encodeFrame(FrameType.PUSH, newId(), random(maxFrameBytes + 1), secret), 'oversized');
  });

  it('a wrong MAC, a missing MAC and a tampered payload', async () => {
    await refused(encodeFrame(FrameType.FETCH, newId(), Buffer.alloc(0), Buffer.from('some-other-secret-of-16-bytes')), 'unauthenticated');
    await refused(encodeFrame(FrameType.FETCH, newId(), Buffer.alloc(0)), 'unauthenticated');
    const frame = encodeFrame(FrameType.PUSH, newId(), client.getLocalMetadata(), secret);
    frame[HEADER_BYTES + 5] ^= 1;
    await refused(frame, 'unauthenticated');
    expect(listener.peers).not.toContain('tcp-client-evil');
  });

  it('an agent without the secret cannot load metadata into the listener, nor fetch from it', async () => {
    await using outsider = await Agent.create({ name: 'tcp-outsider' });
    const before = listener.exchangeStats.unauthenticated;
    const err = await expectCode(() => outsider.sendLocalMetadata(address), 'ERR_REMOTE_DISCONNECT');
    expect(err.message).toContain(`127.0.0.1:${address.port}`);
    await expectCode(() => outsider.fetchRemoteMetadata(address), 'ERR_REMOTE_DISCONNECT');
    expect(listener.exchangeStats.unauthenticated).toBe(before + 2);
    expect(listener.peers).not.toContain('tcp-outsider');
    // With a different secret, the answer is refused on the way back as well: no answer at all.
    await using other = await Agent.create({ name: 'tcp-other', metadata: { secret: 'a-different-secret-of-16+' } });
    await expectCode(() => other.fetchRemoteMetadata(address), 'ERR_REMOTE_DISCONNECT');
    await stillServes();
  });

  it('a connection that stalls inside a frame is closed after the read timeout', async () => {
    const started = Date.now();
    await refused(good().subarray(0, 10), 'timedOut');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('a well-formed frame with a bad blob gets an ERR_INVALID_PARAM answer', async () => {
    const before = listener.exchangeStats.loadFailures;
    const answer = await raw(address, encodeFrame(FrameType.PUSH, newId(), Buffer.from('not metadata'), secret), { end: true });
    const frame = new FrameReader(MiB, secret).push(answer);
    expect(frame!.type).toBe(FrameType.ERROR);
    expect(frame!.payload.toString()).toMatch(/^ERR_INVALID_PARAM\ninvalid metadata/);
    expect(listener.exchangeStats.loadFailures).toBe(before + 1);
    await stillServes();
  });

  it('bad connections at the same time as good fetches harm only themselves', async () => {
    const bad = Array.from({ length: 20 }, (_, i) => raw(address, i % 2 ? random(200) : good().subarray(0, 5), { end: true }));
    const fine = Array.from({ length: 10 }, () => client.fetchRemoteMetadata(address));
    expect(await Promise.all(fine)).toEqual(Array(10).fill('tcp-listener'));
    await Promise.all(bad);
    await stillServes();
  });
});

describe('timeouts and unreachable listeners', () => {
  let a: Agent;
  let silent: net.Server;
  let silentAddress: SocketAddress;
  const held: net.Socket[] = [];
  beforeAll(async () => {
    a = await Agent.create({ name: 'tcp-waiter' });
    // Accepts connections and never answers.
    silent = net.createServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentAddress = { host: '127.0.0.1', port: (silent.address() as net.AddressInfo).port };
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    silent?.close();
    await a?.close();
  });

  it('a peer that accepts and never answers: ERR_TIMEOUT naming its address', async () => {
    const started = Date.now();
    const err = await expectCode(() => a.fetchRemoteMetadata(silentAddress, { timeoutMs: 500 }), 'ERR_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(err.message).toContain(`127.0.0.1:${silentAddress.port}`);
    expect(err.message).toContain('waiting for the answer');
    const sent = await expectCode(() => a.sendLocalMetadata(silentAddress, { timeoutMs: 500 }), 'ERR_TIMEOUT');
    expect(sent.message).toContain(`127.0.0.1:${silentAddress.port}`);
    const inv = await expectCode(() => a.invalidateLocalMetadata({ to: [silentAddress], timeoutMs: 500 }), 'ERR_TIMEOUT');
    expect(inv.message).toContain(`127.0.0.1:${silentAddress.port}`);
  });

  it('a closed port: ERR_REMOTE_DISCONNECT naming it; an aborted signal: ERR_CANCELED', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const err = await expectCode(() => a.fetchRemoteMetadata({ host: '127.0.0.1', port }), 'ERR_REMOTE_DISCONNECT');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).toContain('ECONNREFUSED');

    const ctl = new AbortController();
    const waiting = a.fetchRemoteMetadata(silentAddress, { timeoutMs: 60_000, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 50);
    await expectCode(() => waiting, 'ERR_CANCELED');
    const ctl2 = new AbortController();
    const invalidating = a.invalidateLocalMetadata({ to: [silentAddress], timeoutMs: 60_000, signal: ctl2.signal });
    setTimeout(() => ctl2.abort(), 50);
    await expectCode(() => invalidating, 'ERR_CANCELED');
  });

  it('a listener we pushed to that went away holds nothing: invalidating is not an error; the live ones drop us', async () => {
    await using gone = await Agent.create({ name: 'tcp-gone' });
    await using live = await Agent.create({ name: 'tcp-live' });
    const goneAddress = await gone.listen();
    await a.sendLocalMetadata(goneAddress, { timeoutMs: 2000 });
    await a.sendLocalMetadata(await live.listen(), { timeoutMs: 2000 });
    expect(live.peers).toContain('tcp-waiter');
    await gone.close(); // its port now refuses connections
    await a.invalidateLocalMetadata({ timeoutMs: 2000 });
    expect(live.peers).not.toContain('tcp-waiter');
    await a.invalidateLocalMetadata({ to: [goneAddress], timeoutMs: 2000 });
  });

  it('a signal aborted before the call: ERR_CANCELED at once, without connecting', async () => {
    const heldBefore = held.length;
    const signal = AbortSignal.abort();
    const wait = { timeoutMs: 60_000, signal };
    const started = Date.now();
    await expectCode(() => a.fetchRemoteMetadata(silentAddress, wait), 'ERR_CANCELED');
    await expectCode(() => a.sendLocalMetadata(silentAddress, wait), 'ERR_CANCELED');
    await expectCode(() => a.invalidateLocalMetadata({ to: [silentAddress], ...wait }), 'ERR_CANCELED');
    expect(Date.now() - started).toBeLessThan(1000);
    await new Promise((r) => setTimeout(r, 100)); // a connection, had one been made, would be accepted by now
    expect(held.length).toBe(heldBefore);
  });

  it("an ERROR answer is ERR_REMOTE_DISCONNECT with the peer's code as remoteCode, whatever that code", async () => {
    // A listener that refuses every request with a code that would mean something else here.
    const refuser = net.createServer((s) => {
      const reader = new FrameReader(MiB, undefined);
      s.on('data', (c: Buffer) => {
        const frame = reader.push(c);
        if (frame) s.end(encodeFrame(FrameType.ERROR, frame.id, Buffer.from('ERR_TIMEOUT\nnot really')));
      });
    });
    await new Promise<void>((r) => refuser.listen(0, '127.0.0.1', r));
    try {
      const at = { host: '127.0.0.1', port: (refuser.address() as net.AddressInfo).port };
      const err = await expectCode(() => a.fetchRemoteMetadata(at), 'ERR_REMOTE_DISCONNECT');
      expect(err).toBeInstanceOf(RemoteRefusedError);
      expect((err as RemoteRefusedError).remoteCode).toBe('ERR_TIMEOUT');
      expect(err.message).toBe(`127.0.0.1:${at.port} refused the request with ERR_TIMEOUT: not really`);
    } finally {
      refuser.close();
    }
  });

  it('the agent still works after: IPv6 loopback listener, fetch and transfer', async () => {
    await using b = await Agent.create({ name: 'tcp-v6' });
    const bmem = b.allocate(MiB);
    const address = await b.listen({ host: '::1' });
    expect(await a.fetchRemoteMetadata(address)).toBe('tcp-v6');
    const data = random(MiB);
    const src = a.registerMemory(data);
    await a.createTransfer({ op: 'WRITE', peer: 'tcp-v6', local: [src.desc()], remote: [bmem.desc()] }).run({ timeoutMs: 10_000 });
    expect(Buffer.compare(bmem.bytes, data)).toBe(0);
  });

  it('bad arguments are ERR_INVALID_PARAM', async () => {
    const heldBefore = held.length;
    await expectCode(() => a.fetchRemoteMetadata({ host: '127.0.0.1', port: 0 }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.fetchRemoteMetadata('somebody'), 'ERR_INVALID_PARAM'); // by name needs etcd
    await expectCode(() => a.sendLocalMetadata(), 'ERR_INVALID_PARAM');
    await expectCode(() => Agent.create({ name: 'x', metadata: { secret: 'short' } }), 'ERR_INVALID_PARAM');
    // Beyond 2^31 - 1 ms setTimeout would fire at once.
    await expectCode(() => Agent.create({ name: 'x', metadata: { timeoutMs: 2 ** 31 } }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.fetchRemoteMetadata(silentAddress, { timeoutMs: 2 ** 31 }), 'ERR_INVALID_PARAM');
    await expectCode(() => a.invalidateLocalMetadata({ timeoutMs: 2 ** 31 }), 'ERR_INVALID_PARAM');
    await expectCode(() => Agent.create({ name: 'x', metadata: { maxConnections: 0 } }), 'ERR_INVALID_PARAM');
    // Metadata over our own frame cap is refused before connecting.
    await using small = await Agent.create({ name: 'tcp-small', metadata: { maxFrameBytes: 1024 } });
    for (let i = 0; i < 40; i++) small.allocate(4096);
    const err = await expectCode(() => small.sendLocalMetadata(silentAddress), 'ERR_INVALID_PARAM');
    expect(err.message).toContain('maxFrameBytes');
    expect(held.length).toBe(heldBefore);
  });
});

it('a listener counts as loopback only on 127.0.0.0/8 and ::1', () => {
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) expect(isLoopback(host)).toBe(true);
  for (const host of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', 'fe80::1']) expect(isLoopback(host)).toBe(false);
});

it('examples/exchange.mjs tcp: two processes find each other and check the bytes', async () => {
  const stdout = await runExample('exchange.mjs', 'tcp');
  expect(stdout).toMatch(/prefill-0: found 'decode-0' through tcp/);
  expect(stdout).toMatch(/prefill-0: READ 8388608 bytes .*: checked/);
  expect(stdout).toMatch(/decode-0: prefill-0 wrote 8388608 bytes into kv: checked/);
});
