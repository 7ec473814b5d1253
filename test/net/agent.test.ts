import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, info, MemoryRegion } from '../../lib/index.js';
import { decodeMetadata, encodeMetadata } from '../../lib/net/metadata.js';
import { agents, expectCode } from '../support/helpers.js';

describe('Agent.create', () => {
  it('binds tcp on loopback by default and reports what it uses', async () => {
    const a = await Agent.create({ name: 'solo' });
    expect(a.provider).toBe('tcp');
    expect(a.providerInfo.name).toBe('tcp;ofi_rxm');
    expect(a.providerInfo.domain).toBe('lo');
    expect(a.address[0]).toBe(2); // AF_INET
    expect([...a.address.subarray(4, 8)]).toEqual([127, 0, 0, 1]);
    await a.close();
    await a.close(); // idempotent
    expect(a.closed).toBe(true);
    await expectCode(() => a.allocate(10), 'ERR_NOT_ALLOWED');
    await expectCode(() => a.remoteRegions('solo'), 'ERR_NOT_ALLOWED');
    await expectCode(() => a.checkRemote('solo', []), 'ERR_NOT_ALLOWED');
  });

  it('a transfer made before close() is ERR_NOT_ALLOWED after it, network or file', async () => {
    const a = await Agent.create({ name: 'closing' });
    const m = a.allocate(4096);
    a.loadRemoteMetadata(a.getLocalMetadata());
    const t = a.createTransfer({ op: 'WRITE', peer: 'closing', local: [m.desc(0, 8)], remote: [m.desc(64, 8)] });
    const file = a.registerFile(path.join(os.tmpdir(), `ixfer-closing-${process.pid}`));
    const f = a.createFileTransfer({ op: 'WRITE', local: [m.desc(0, 8)], files: [file.desc(0, 8)] });
    await t.run({ timeoutMs: 10_000 });
    await a.close();
    await expectCode(() => t.run(), 'ERR_NOT_ALLOWED');
    await expectCode(() => f.run(), 'ERR_NOT_ALLOWED');
    fs.rmSync(file.path, { force: true });
  });

  it('binds an interface by name', async () => {
    const a = await Agent.create({ name: 'lo-agent', provider: 'tcp', iface: 'lo' });
    expect(a.providerInfo.domain).toBe('lo');
    await a.close();
  });

  it('refuses bad options with the field named', async () => {
    const e1 = await expectCode(() => Agent.create({ name: '' }), 'ERR_INVALID_PARAM');
    expect(e1.message).toContain('agent options.name');
    await expectCode(() => Agent.create({ name: 'x', bogus: 1 } as never), 'ERR_INVALID_PARAM');
    await expectCode(() => Agent.create({ name: 'x\n' }), 'ERR_INVALID_PARAM');
  });

  it('an unavailable provider is ERR_NOT_SUPPORTED listing the available ones', async () => {
    const e = await expectCode(() => Agent.create({ name: 'x', provider: 'cxi' }), 'ERR_NOT_SUPPORTED');
    expect(e.message).toContain("'cxi'");
    expect(e.message).toContain('tcp');
  });

  it('IXFER_PROVIDER fills in for provider auto; a provider named in code wins', async () => {
    process.env.IXFER_PROVIDER = 'bogus';
    try {
      const a = await Agent.create({ name: 'x', provider: 'tcp' });
      expect(a.provider).toBe('tcp');
      await a.close();
      const e = await expectCode(() => Agent.create({ name: 'x' }), 'ERR_NOT_SUPPORTED');
      expect(e.message).toContain("'bogus'");
      expect(e.message).toContain('IXFER_PROVIDER');
      // The variable is named even when the option is the one that failed.
      const e2 = await expectCode(() => Agent.create({ name: 'x', provider: 'cxi' }), 'ERR_NOT_SUPPORTED');
      expect(e2.message).toContain('IXFER_PROVIDER=bogus');
    } finally {
      delete process.env.IXFER_PROVIDER;
    }
    process.env.IXFER_PROVIDER = 'tcp';
    try {
      const a = await Agent.create({ name: 'x', provider: 'auto' });
      expect(a.provider).toBe('tcp');
      await a.close();
    } finally {
      delete process.env.IXFER_PROVIDER;
    }
  });

  it('an interface that does not exist is ERR_NOT_FOUND listing the ones that do', async () => {
    const e = await expectCode(() => Agent.create({ name: 'x', iface: 'eth9' }), 'ERR_NOT_FOUND');
    expect(e.message).toContain("interface 'eth9' does not exist");
    expect(e.message).toContain('lo');
    const a = await Agent.create({ name: 'after', iface: 'lo' });
    expect(a.providerInfo.domain).toBe('lo');
    await a.close();
  });
});

describe('memory registration', () => {
  let a: Agent;
  beforeAll(async () => {
    [a] = await agents('mem');
  });
  afterAll(() => a.close());

  it('registers Buffers, TypedArrays, ArrayBuffers and raw native memory', () => {
    const buf = Buffer.alloc(4096);
    const r1 = a.registerMemory(buf);
    expect(r1.len).toBe(4096);
    expect(r1.bytes.buffer).toBe(buf.buffer);
    const f = new Float32Array(100);
    const r2 = a.registerMemory(f);
    expect(r2.len).toBe(400);
    const ab = new ArrayBuffer(1000);
    const r3 = a.registerMemory(ab);
    expect(r3.len).toBe(1000);
    const owned = a.allocate(8192);
    expect(owned.addr % 4096).toBe(0);
    expect(owned.bytes.every((b) => b === 0)).toBe(true);
    for (const r of [r1, r2, r3, owned]) r.deregister();
    expect(r1.registered).toBe(false);
    // native memory by address (here the Buffer's, which this test keeps alive)
    const r4 = a.registerMemory({ addr: r1.addr, len: 4096 });
    expect(r4.len).toBe(4096);
    expect(() => r4.bytes).toThrow(/registered by address/);
    r4.deregister();
  });

  it('remote keys are not guessable small numbers (on providers where ixfer picks them)', () => {
    const regions = Array.from({ length: 8 }, () => a.allocate(4096));
    const keys = regions.map((r) => r.key);
    expect(new Set(keys).size).toBe(keys.length);
    if (!a.providerInfo.mrMode.includes('PROV_KEY')) {
      // FI_MR_PROV_KEY unset: 1, 2, 3... would let any peer that reaches the endpoint guess them.
      for (const k of keys) expect(k > 1n << 24n).toBe(true);
    }
    for (const r of regions) r.deregister();
  });

  it('descriptors are made by the region and checked against it', async () => {
    const r = a.allocate(1024);
    expect(r.desc(16, 32)).toEqual({ addr: r.addr + 16, len: 32, devId: 0 });
    expect(r.desc()).toEqual({ addr: r.addr, len: 1024, devId: 0 });
    expect(r.blocks(256, 4).map((d) => d.addr - r.addr)).toEqual([0, 256, 512, 768]);
    await expectCode(() => r.desc(1000, 100), 'ERR_INVALID_PARAM');
    await expectCode(() => r.desc(-1, 1), 'ERR_INVALID_PARAM');
    r.deregister();
  });

  it('refuses zero length, detached buffers, overlaps and junk, and keeps working', async () => {
    await expectCode(() => a.registerMemory(Buffer.alloc(0)), 'ERR_INVALID_PARAM');
    await expectCode(() => a.registerMemory({ addr: 4096, len: 0 }), 'ERR_INVALID_PARAM');
    const ab = new ArrayBuffer(64);
    structuredClone(ab, { transfer: [ab] }); // detaches ab
    const e = await expectCode(() => a.registerMemory(ab), 'ERR_INVALID_PARAM');
    expect(e.message).toContain('detached');
    await expectCode(() => a.registerMemory('hello' as never), 'ERR_INVALID_PARAM');
    const big = Buffer.alloc(4096);
    const r = a.registerMemory(big);
    const e2 = await expectCode(() => a.registerMemory(big.subarray(100, 200)), 'ERR_INVALID_PARAM');
    expect(e2.message).toContain('overlaps');
    r.deregister();
    // after all of that, registration still works
    const again = a.registerMemory(big.subarray(100, 200));
    expect(again).toBeInstanceOf(MemoryRegion);
    again.deregister();
  });

  it('is disposable', () => {
    let addr = 0;
    {
      using r = a.allocate(4096);
      addr = r.addr;
      expect(a.regions.some((x) => x.addr === addr)).toBe(true);
    }
    expect(a.regions.some((x) => x.addr === addr)).toBe(false);
  });
});

// These pick providers themselves, which IXFER_PROVIDER would override.
describe.skipIf(Boolean(process.env.IXFER_PROVIDER))('providers and libfabric versions', () => {
  it('info() names the libfabric loaded and the API version asked for', () => {
    const lf = info().libfabric;
    expect(lf.available).toBe(true);
    expect(lf.apiVersion).toBe('1.17');
    const [major, minor] = lf.version!.split('.').map(Number);
    expect(major! > 1 || (major === 1 && minor! >= 17)).toBe(true);
    expect(lf.providers.find((p) => p.name === 'tcp;ofi_rxm')?.addrFormat).toBe('FI_SOCKADDR_IN');
  });

  it('a peer on another provider is refused by its full name, and the agent keeps working', async () => {
    const rxm = await Agent.create({ name: 'on-rxm', provider: 'tcp;ofi_rxm' });
    const sock = await Agent.create({ name: 'on-sockets', provider: 'sockets' });
    try {
      expect(rxm.providerInfo.name).toBe('tcp;ofi_rxm');
      expect(sock.providerInfo.name).toBe('sockets');
      const e = await expectCode(() => rxm.loadRemoteMetadata(sock.getLocalMetadata()), 'ERR_INVALID_PARAM');
      expect(e.message).toContain("'sockets'");
      expect(e.message).toContain("'tcp;ofi_rxm'");
      const twin = await Agent.create({ name: 'rxm-twin', provider: 'tcp;ofi_rxm' });
      expect(rxm.loadRemoteMetadata(twin.getLocalMetadata())).toBe('rxm-twin');
      await twin.close();
    } finally {
      await rxm.close();
      await sock.close();
    }
  });

  it('a peer address is checked by the address format of the provider', async () => {
    const [a, b] = await agents('fmt-a', 'fmt-b');
    try {
      const md = decodeMetadata(b.getLocalMetadata());
      const e1 = await expectCode(() => a.loadRemoteMetadata(encodeMetadata({ ...md, addrFormat: 9 })), 'ERR_INVALID_PARAM');
      expect(e1.message).toContain('FI_ADDR_STR');
      const short = md.address!.subarray(0, 12);
      const e2 = await expectCode(() => a.loadRemoteMetadata(encodeMetadata({ ...md, address: short })), 'ERR_INVALID_PARAM');
      expect(e2.message).toContain('not a sockaddr');
      const mem = b.allocate(64);
      mem.bytes.fill(7);
      expect(a.loadRemoteMetadata(b.getLocalMetadata())).toBe('fmt-b');
      const local = a.allocate(64);
      await a.createTransfer({ op: 'READ', peer: 'fmt-b', local: [local.desc()], remote: [mem.desc()] }).run({ timeoutMs: 5000 });
      expect(local.bytes.every((x) => x === 7)).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('shm: refused before libfabric 1.18 with the reason, else text addresses and no bound node', async () => {
    const shm = info().libfabric.providers.find((p) => p.name === 'shm');
    if (!shm) return expect.fail('this host offers no shm provider');
    if (shm.unsupported) {
      const e = await expectCode(() => Agent.create({ name: 'x', provider: 'shm', address: '127.0.0.1' }), 'ERR_NOT_SUPPORTED');
      expect(e.message).toContain('1.18');
      return;
    }
    // `address` is ignored: two shm agents given the same one must not collide.
    const [a, b] = [await Agent.create({ name: 's1', provider: 'shm', address: '127.0.0.1' }), await Agent.create({ name: 's2', provider: 'shm', address: '127.0.0.1' })];
    try {
      expect(a.providerInfo.addrFormat).toBe('FI_ADDR_STR');
      expect(a.address[a.address.length - 1]).toBe(0);
      expect(Buffer.from(a.address).equals(Buffer.from(b.address))).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
