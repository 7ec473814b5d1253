/**
 * Memory <-> file transfers with the POSIX engine on real files: round trips
 * of random data, many and unaligned descriptors, files larger than a chunk,
 * concurrent requests, wait semantics, every typed error, and BlockStore.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, BlockStore, type ErrorCode, type FileRegion, type MemoryRegion } from '../../lib/index.js';
import { connectAll, expectCode, MiB, random } from '../support/helpers.js';
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

let dir: string;
let agent: Agent;
let mem: MemoryRegion;
let back: MemoryRegion;
let n = 0;
const tmpFile = () => path.join(dir, `f${n++}.bin`);

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-files-'));
  // A small chunk, so that ordinary sizes already span many chunks and threads.
  agent = await Agent.create({ name: 'files', files: { threads: 3, chunkBytes: 64 * 1024 } });
  mem = agent.allocate(32 * MiB);
  back = agent.allocate(32 * MiB);
});
afterAll(async () => {
  await agent.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** After a failure: a good round trip on the same agent. */
async function stillWorks(): Promise<void> {
  const f = agent.registerFile(tmpFile());
  const data = random(100_000);
  mem.bytes.set(data, 0);
  await agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, data.length)], files: [f.desc(0, data.length)] }).run({ timeoutMs: 10_000 });
  await agent.createFileTransfer({ op: 'READ', local: [back.desc(0, data.length)], files: [f.desc(0, data.length)] }).run({ timeoutMs: 10_000 });
  expect(same(back.bytes.subarray(0, data.length), data)).toBe(true);
  f.deregister();
}

describe('round trips', () => {
  it('many descriptors of random sizes at unaligned offsets, scattered in the file', async () => {
    const f = agent.registerFile(tmpFile(), { truncate: true });
    const count = 600;
    const lens = Array.from({ length: count }, (_, i) => 1 + ((i * 7919) % 20_000));
    const total = lens.reduce((a, b) => a + b, 0);
    const data = random(total);
    mem.bytes.set(data, 3);
    // Memory in order from offset 3; the file in reverse order from offset 1001.
    const local = [];
    const files = [];
    let m = 3;
    let fo = 1001 + total;
    for (const len of lens) {
      local.push(mem.desc(m, len));
      files.push(f.desc((fo -= len), len));
      m += len;
    }
    const w = agent.createFileTransfer({ op: 'WRITE', local, files });
    expect(w.engine).toBe('posix');
    expect(w.count).toBe(count);
    expect(w.bytes).toBe(total);
    await w.run({ timeoutMs: 30_000 });
    expect(w.status).toBe('done');
    expect(f.size).toBe(1001 + total);

    const disk = fs.readFileSync(f.path);
    expect(same(disk.subarray(1001 + total - lens[0]!, 1001 + total), data.subarray(0, lens[0]))).toBe(true);
    let at = 1001 + total;
    let src = 0;
    for (const len of lens) {
      at -= len;
      expect(same(disk.subarray(at, at + len), data.subarray(src, src + len))).toBe(true);
      src += len;
    }

    back.bytes.fill(0);
    const r = agent.createFileTransfer({ op: 'READ', local: local.map((d) => ({ ...d, addr: d.addr - mem.addr + back.addr + 5 })), files });
    await r.run({ timeoutMs: 30_000 });
    expect(same(back.bytes.subarray(8, 8 + total), data)).toBe(true);
    f.deregister();
  });

  it('a descriptor far larger than a chunk, and a file of 24 MiB', async () => {
    const size = 24 * MiB + 333;
    const data = random(size);
    mem.bytes.set(data, 0);
    const f = agent.registerFile(tmpFile());
    await agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, size)], files: [f.desc(77, size)] }).run({ timeoutMs: 30_000 });
    expect(same(fs.readFileSync(f.path).subarray(77), data)).toBe(true);
    back.bytes.fill(0);
    await agent.createFileTransfer({ op: 'READ', local: [back.desc(1, size)], files: [f.desc(77, size)] }).run({ timeoutMs: 30_000 });
    expect(same(back.bytes.subarray(1, 1 + size), data)).toBe(true);
    f.deregister();
  });

  it('concurrent requests on several files', async () => {
    const files = Array.from({ length: 8 }, () => agent.registerFile(tmpFile()));
    const block = 512 * 1024 + 17;
    const data = random(block * 16);
    mem.bytes.set(data, 0);
    const writes = Array.from({ length: 16 }, (_, i) =>
      agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(i * block, block)], files: [files[i % 8]!.desc(Math.floor(i / 8) * block, block)] }),
    );
    await Promise.all(writes.map((t) => t.run({ timeoutMs: 30_000 })));
    back.bytes.fill(0);
    const reads = Array.from({ length: 16 }, (_, i) =>
      agent.createFileTransfer({ op: 'READ', local: [back.desc(i * block, block)], files: [files[i % 8]!.desc(Math.floor(i / 8) * block, block)] }),
    );
    await Promise.all(reads.map((t) => t.run({ timeoutMs: 30_000 })));
    expect(same(back.bytes.subarray(0, block * 16), data)).toBe(true);
    for (const f of files) f.deregister();
  });

  it('JavaScript memory and a descriptor the caller opened', async () => {
    const p = tmpFile();
    const fd = fs.openSync(p, 'w+');
    const f = agent.registerFile(fd);
    expect(f.path).toBe(`fd ${fd}`);
    const js = agent.registerMemory(random(70_000));
    await agent.createFileTransfer({ op: 'WRITE', local: [js.desc()], files: [f.desc(0, 70_000)] }).run({ timeoutMs: 10_000 });
    f.deregister();
    expect(fs.fstatSync(fd).size).toBe(70_000); // still open: it is the caller's
    fs.closeSync(fd);
    expect(same(fs.readFileSync(p), js.bytes)).toBe(true);
    js.deregister();
  });

  it('reposts, refuses a repost in flight, and holds files and memory while in use', async () => {
    const f = agent.registerFile(tmpFile());
    const t = agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 8 * MiB)], files: [f.desc(0, 8 * MiB)] });
    expect(t.status).toBe('idle');
    t.post();
    expect(t.status).toBe('pending');
    await expectCode(() => t.post(), 'ERR_REPOST_ACTIVE');
    expectCode(() => f.deregister(), 'ERR_NOT_ALLOWED');
    await t.done({ timeoutMs: 10_000 });
    await t.run({ timeoutMs: 10_000 });
    expect(t.status).toBe('done');
    f.deregister();
    await expectCode(() => t.post(), 'ERR_NOT_FOUND');
  });

  it('a timeout and an abort reject at once; the transfer ends once its I/O under way has', async () => {
    const f = agent.registerFile(tmpFile());
    const t = agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 32 * MiB)], files: [f.desc(0, 32 * MiB)] });
    for (const how of ['timeout', 'abort'] as const) {
      t.post();
      const ac = new AbortController();
      const wait = how === 'timeout' ? t.done({ timeoutMs: 1 }) : t.done({ signal: ac.signal });
      ac.abort();
      await expectCode(() => wait, how === 'timeout' ? 'ERR_TIMEOUT' : 'ERR_CANCELED');
      const end = await t.done().then(
        () => 'done',
        (err: { code: string }) => err.code,
      );
      expect(['done', how === 'timeout' ? 'ERR_TIMEOUT' : 'ERR_CANCELED']).toContain(end);
      expect(t.status).not.toBe('pending');
    }
    f.deregister();
    await stillWorks();
  });
});

describe('typed errors', () => {
  it('missing file: ERR_NOT_FOUND', async () => {
    await expectCode(() => agent.registerFile(path.join(dir, 'no/such/dir/x.bin')), 'ERR_NOT_FOUND');
    await expectCode(() => agent.registerFile(path.join(dir, 'missing.bin'), { write: false }), 'ERR_NOT_FOUND');
  });

  it('reading past the end of the file: ERR_END_OF_FILE, naming the descriptor', async () => {
    const f = agent.registerFile(tmpFile());
    await agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10_000)], files: [f.desc(0, 10_000)] }).run({ timeoutMs: 10_000 });
    const t = agent.createFileTransfer({ op: 'READ', local: [back.desc(0, 5000), back.desc(5000, 6000)], files: [f.desc(0, 5000), f.desc(9000, 6000)] });
    const err = await expectCode(() => t.run({ timeoutMs: 10_000 }), 'ERR_END_OF_FILE');
    expect(err.message).toContain(`${f.path} [9000, +6000) reaches past the end of the file (10000 bytes)`);
    expect(t.status).toBe('error');
    f.deregister();
    await stillWorks();
  });

  it('permission denied: ERR_NOT_ALLOWED', async () => {
    const p = tmpFile();
    fs.writeFileSync(p, 'secret');
    fs.chmodSync(p, 0o000);
    // Root reads anything: drop to nobody's effective uid around the open.
    const root = process.geteuid?.() === 0;
    if (root) process.seteuid!(65534);
    try {
      await expectCode(() => agent.registerFile(p), 'ERR_NOT_ALLOWED');
    } finally {
      if (root) process.seteuid!(0);
    }
    // A file opened read-only takes no WRITE.
    fs.chmodSync(p, 0o644);
    const ro = agent.registerFile(p, { write: false });
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 6)], files: [ro.desc(0, 6)] }), 'ERR_NOT_ALLOWED');
    ro.deregister();
  });

  it('disk full (/dev/full): ERR_NO_SPACE, not success', async () => {
    const full = agent.registerFile('/dev/full', { read: false, create: false });
    const t = agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, MiB)], files: [full.desc(0, MiB)] });
    const err = await expectCode(() => t.run({ timeoutMs: 10_000 }), 'ERR_NO_SPACE');
    expect(err.message).toMatch(/ENOSPC/);
    expect(t.status).toBe('error');
    full.deregister();
    await stillWorks();
  });

  it('disk full on a 256 KiB filesystem: the partly written transfer fails with ERR_NO_SPACE', async (ctx) => {
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-tiny-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { stdio: 'ignore' });
    } catch {
      fs.rmdirSync(mnt);
      ctx.skip('cannot mount a tiny tmpfs here (needs root): covered by /dev/full only');
      return;
    }
    try {
      const f = agent.registerFile(path.join(mnt, 'big.bin'));
      const t = agent.createFileTransfer({ op: 'WRITE', local: mem.blocks(128 * 1024, 4), files: f.blocks(128 * 1024, 4) });
      await expectCode(() => t.run({ timeoutMs: 10_000 }), 'ERR_NO_SPACE');
      expect(f.size).toBeLessThan(512 * 1024);
      f.deregister();
    } finally {
      execFileSync('umount', [mnt]);
      fs.rmdirSync(mnt);
    }
    await stillWorks();
  });

  it('unaligned O_DIRECT: ERR_INVALID_PARAM saying what to align', async () => {
    const f = agent.registerFile(tmpFile(), { direct: true });
    expect(f.direct).toBe(true);
    expect(f.offsetAlign).toBeGreaterThanOrEqual(512);
    const err = await expectCode(
      () => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 4096)], files: [f.desc(100, 4096)] }),
      'ERR_INVALID_PARAM',
    );
    expect(err.message).toMatch(/O_DIRECT.*multiples of \d+ bytes.*file offset 100/);
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(1, 4096)], files: [f.desc(0, 4096)] }), 'ERR_INVALID_PARAM');
    // Aligned, it works.
    const data = random(64 * 1024);
    mem.bytes.set(data, 0);
    await agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 65536)], files: [f.desc(4096, 65536)] }).run({ timeoutMs: 10_000 });
    await agent.createFileTransfer({ op: 'READ', local: [back.desc(8192, 65536)], files: [f.desc(4096, 65536)] }).run({ timeoutMs: 10_000 });
    expect(same(back.bytes.subarray(8192, 8192 + 65536), data)).toBe(true);
    f.deregister();
  });

  it('unregistered memory or file, and mismatched lists: refused before anything moves', async () => {
    const f = agent.registerFile(tmpFile());
    const stray = Buffer.alloc(4096);
    await expectCode(
      () => agent.createFileTransfer({ op: 'WRITE', local: [{ addr: Number(stray.byteOffset) + 4096, len: 4096 }], files: [f.desc(0, 4096)] }),
      'ERR_NOT_FOUND',
    );
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [f.desc(0, 11)] }), 'ERR_MISMATCH');
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [] }), 'ERR_MISMATCH');
    const other = await Agent.create({ name: 'other' });
    const foreign = other.registerFile(tmpFile());
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [foreign.desc(0, 10)] }), 'ERR_NOT_FOUND');
    await other.close();
    f.deregister();
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [f.desc(0, 10)] }), 'ERR_NOT_FOUND');
    await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [{ file: 'x' as unknown as FileRegion, offset: 0, len: 10 }] }), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.registerFile(''), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.registerFile(tmpFile(), { read: false, write: false }), 'ERR_INVALID_PARAM');
  });

  it('bad sources, directions, descriptors and notes: each refused with its code, nothing moved', async () => {
    await expectCode(() => agent.registerFile(-1), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.registerFile(1.5), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.registerFile({} as unknown as string), 'ERR_INVALID_PARAM');
    const ro = agent.registerFile(tmpFile(), { write: true });
    ro.deregister();
    const readOnly = agent.registerFile(ro.path, { write: false });
    const e = await expectCode(
      () => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [readOnly.desc(0, 10)] }),
      'ERR_NOT_ALLOWED',
    );
    expect(e.message).toContain('not open for writing');
    // Malformed descriptors are named by zod's message, after the fast path passes them on.
    for (const bad of [{ file: readOnly, offset: -1, len: 10 }, { file: readOnly, offset: 0, len: 10, extra: 1 }]) {
      const err = await expectCode(
        () => agent.createFileTransfer({ op: 'READ', local: [mem.desc(0, 10)], files: [bad as never] }),
        'ERR_INVALID_PARAM',
      );
      expect(err.message).toContain('file transfer.files.0');
    }
    await expectCode(() => agent.createFileTransfer({ op: 'READ', local: 'x' as never, files: [] }), 'ERR_INVALID_PARAM');
    const t = agent.createFileTransfer({ op: 'READ', local: [mem.desc(0, 10)], files: [readOnly.desc(0, 10)] });
    await expectCode(() => t.post('a note'), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.allocateVram(0), 'ERR_INVALID_PARAM');
    await expectCode(() => agent.allocateVram(4096, -1), 'ERR_INVALID_PARAM');
    readOnly.deregister();
    await stillWorks();
  });

  it('an unknown engine is ERR_INVALID_PARAM; VRAM is not there without CUDA', async () => {
    const f = agent.registerFile(tmpFile());
    process.env.IXFER_FILE_ENGINE = 'fast';
    try {
      await expectCode(() => agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [f.desc(0, 10)] }), 'ERR_INVALID_PARAM');
    } finally {
      delete process.env.IXFER_FILE_ENGINE;
    }
    // Host memory under an explicit cuFile engine moves with pread/pwrite, and says so.
    const t = agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 10)], files: [f.desc(0, 10)], engine: 'gds_mt' });
    expect(t.engine).toBe('posix');
    expect(t.engineReason).toMatch(/gds_mt asked for, but host memory always moves with pread\/pwrite/);
    await t.run({ timeoutMs: 10_000 });
    f.deregister();
  });

  it('network transfers still work on the agent after all of this', async () => {
    connectAll([agent]);
    const data = random(4096);
    mem.bytes.set(data, 0);
    await agent.createTransfer({ op: 'WRITE', peer: 'files', local: [mem.desc(0, 4096)], remote: [back.desc(0, 4096)] }).run({ timeoutMs: 10_000 });
    expect(same(back.bytes.subarray(0, 4096), data)).toBe(true);
    await stillWorks();
  });

  it('closing the agent cancels file transfers in flight', async () => {
    const a = await Agent.create({ name: 'closing', files: { chunkBytes: 4096, threads: 1 } });
    const m = a.allocate(32 * MiB);
    const f = a.registerFile(tmpFile());
    const t = a.createFileTransfer({ op: 'WRITE', local: [m.desc()], files: [f.desc(0, 32 * MiB)] }).post();
    const waiting = t.done();
    await a.close();
    await expectCode(() => waiting, 'ERR_CANCELED');
    expect(f.registered).toBe(false);
  });
});

describe('BlockStore', () => {
  for (const where of ['directory', 'host memory'] as const) {
    it(`put, get, delete and capacity (${where})`, async () => {
      const storeDir = where === 'directory' ? path.join(dir, 'blocks') : undefined;
      const store = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 3 * MiB });
      const data = random(2 * MiB);
      mem.bytes.set(data, 0);
      // A block from two descriptors, back into three.
      await store.put('layer:0/blk:1', [mem.desc(0, MiB), mem.desc(MiB, MiB)], { timeoutMs: 10_000 });
      expect(store.has('layer:0/blk:1')).toBe(true);
      expect(store.size('layer:0/blk:1')).toBe(2 * MiB);
      expect(store.usedBytes).toBe(2 * MiB);
      back.bytes.fill(0);
      await store.get('layer:0/blk:1', [back.desc(0, 1000), back.desc(1000, MiB), back.desc(MiB + 1000, MiB - 1000)]);
      expect(same(back.bytes.subarray(0, 2 * MiB), data)).toBe(true);

      await expectCode(() => store.put('two', mem.desc(0, 2 * MiB)), 'ERR_NO_SPACE');
      await expectCode(() => store.get('layer:0/blk:1', back.desc(0, 10)), 'ERR_MISMATCH');
      await expectCode(() => store.get('nothing', back.desc(0, 10)), 'ERR_NOT_FOUND');
      // Replacing a block frees the old one's bytes.
      await store.put('layer:0/blk:1', mem.desc(5, 1000));
      expect(store.usedBytes).toBe(1000);
      await store.put('two', mem.desc(0, 2 * MiB));
      expect(store.keys().sort()).toEqual(['layer:0/blk:1', 'two']);
      if (storeDir) {
        // Another store over the same directory finds the blocks.
        const again = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 3 * MiB });
        expect(again.size('two')).toBe(2 * MiB);
        await again.get('layer:0/blk:1', back.desc(0, 1000));
        expect(same(back.bytes.subarray(0, 1000), data.subarray(5, 1005))).toBe(true);
        await again.close();
      }
      expect(await store.delete('two')).toBe(true);
      expect(await store.delete('two')).toBe(false);
      expect(store.usedBytes).toBe(1000);
      await store.close();
    });
  }

  it('a put that fails during the write leaves no block, no temporary file, and keeps the old one', async () => {
    const blocks = path.join(dir, 'blocks2');
    const store = await BlockStore.open(agent, { dir: blocks, capacityBytes: 64 * MiB });
    await store.put('k', mem.desc(0, 1000));
    await expectCode(() => store.put('k', { addr: 12345, len: 10 }), 'ERR_NOT_FOUND');
    // Aborted with the write under way: the abort's error, not the refusal to close a file in use.
    const data = fs.readFileSync(path.join(blocks, fs.readdirSync(blocks)[0]!));
    await expectCode(() => store.put('k', mem.desc(0, 32 * MiB), { signal: AbortSignal.abort() }), 'ERR_CANCELED');
    await expectCode(() => store.put('other', mem.desc(0, 32 * MiB), { timeoutMs: 1 }), 'ERR_TIMEOUT').catch(() => {
      // The write may win the race against 1 ms; then it is simply a block.
      expect(store.has('other')).toBe(true);
    });
    if (store.has('other')) await store.delete('other');
    expect(store.keys()).toEqual(['k']);
    expect(store.size('k')).toBe(1000);
    expect(store.usedBytes).toBe(1000);
    const names = fs.readdirSync(blocks);
    expect(names).toHaveLength(1);
    expect(same(fs.readFileSync(path.join(blocks, names[0]!)), data)).toBe(true);
    await store.close();
    await stillWorks();
  });

  it('an aborted put in the pool gives its extent back only once the write has stopped', async () => {
    const store = await BlockStore.open(agent, { capacityBytes: 32 * MiB });
    await expectCode(() => store.put('k', mem.desc(0, 32 * MiB), { signal: AbortSignal.abort() }), 'ERR_CANCELED');
    expect(store.usedBytes).toBe(0);
    // The pool's memory file is no longer in use: it closes.
    await store.close();
  });

  it('a get in the pool keeps its extent while the block is deleted or replaced', async () => {
    const store = await BlockStore.open(agent, { capacityBytes: 8 * MiB });
    const data = random(8 * MiB);
    mem.bytes.set(data, 0);
    await store.put('a', mem.desc(0, 8 * MiB));
    back.bytes.fill(0);
    const reading = store.get('a', back.desc(0, 8 * MiB), { timeoutMs: 10_000 });
    expect(await store.delete('a')).toBe(true);
    expect(store.usedBytes).toBe(0);
    // The read still holds the extent: nothing may be written over it.
    await expectCode(() => store.put('b', mem.desc(8 * MiB, 8 * MiB)), 'ERR_NO_SPACE');
    await reading;
    expect(same(back.bytes.subarray(0, 8 * MiB), data)).toBe(true);
    await store.put('b', mem.desc(8 * MiB, 8 * MiB));
    await store.close();
  });

  for (const where of ['directory', 'host memory'] as const) {
    it(`concurrent puts reserve capacity before they write (${where})`, async () => {
      const storeDir = where === 'directory' ? path.join(dir, 'blocks3') : undefined;
      const store = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 3 * MiB });
      const puts = ['x', 'y', 'z'].map((k) => store.put(k, mem.desc(0, 2 * MiB), { timeoutMs: 10_000 }));
      const results = await Promise.allSettled(puts);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('ERR_NO_SPACE');
      expect(store.keys()).toHaveLength(1);
      expect(store.usedBytes).toBe(2 * MiB);
      if (storeDir) expect(fs.readdirSync(storeDir)).toHaveLength(1);
      await store.close();
    });
  }

  it('a directory that cannot be used is a typed error naming it; the agent still works', async () => {
    const file = tmpFile();
    fs.writeFileSync(file, 'x');
    const dangling = path.join(dir, 'dangling');
    fs.symlinkSync(path.join(dir, 'nowhere', 'deeper'), dangling);
    const cases: [string, ErrorCode, string][] = [
      [path.join(file, 'blocks'), 'ERR_INVALID_PARAM', 'ENOTDIR'],
      [file, 'ERR_INVALID_PARAM', 'EEXIST'],
      [dangling, 'ERR_NOT_FOUND', 'ENOENT'],
      // Not even root may create directories in sysfs.
      ['/sys/ixfer-blocks', 'ERR_NOT_ALLOWED', ''],
    ];
    for (const [where, code, errno] of cases) {
      const err = await expectCode(() => BlockStore.open(agent, { dir: where, capacityBytes: MiB }), code);
      expect(err.message).toContain(`'${where}'`);
      if (errno) expect(err.nativeMessage).toBe(errno);
    }
    await stillWorks();
  });

  it('keys: at most 120 UTF-8 bytes, as they name files', async () => {
    const store = await BlockStore.open(agent, { dir: path.join(dir, 'blocks4'), capacityBytes: MiB });
    const longest = 'é'.repeat(60); // 120 bytes
    await store.put(longest, mem.desc(0, 100));
    const again = await BlockStore.open(agent, { dir: path.join(dir, 'blocks4'), capacityBytes: MiB });
    expect(again.keys()).toEqual([longest]);
    await again.close();
    const err = await expectCode(() => store.put(longest + 'x', mem.desc(0, 100)), 'ERR_INVALID_PARAM');
    expect(err.message).toMatch(/invalid key: at most 120 bytes in UTF-8/);
    await expectCode(() => store.put('', mem.desc(0, 100)), 'ERR_INVALID_PARAM');
    await expectCode(() => store.get('a\0b', back.desc(0, 100)), 'ERR_INVALID_PARAM');
    await store.close();
  });

  it('temporary files: unique per writer; those of dead processes are removed on open', async () => {
    const blocks = path.join(dir, 'blocks5');
    fs.mkdirSync(blocks);
    const host = crypto.createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const leftover = `tmp.${host}.${dead}.0123456789abcdef`;
    const live = `tmp.${host}.${process.pid}.0123456789abcdef`;
    const foreign = `tmp.${host === '00000000' ? '11111111' : '00000000'}.${dead}.0123456789abcdef`;
    for (const name of [leftover, live, foreign]) fs.writeFileSync(path.join(blocks, name), 'x');
    // Two stores on one directory write the same key at once without clashing.
    const [s1, s2] = await Promise.all([1, 2].map(() => BlockStore.open(agent, { dir: blocks, capacityBytes: 8 * MiB })));
    expect(s1!.keys()).toEqual([]);
    expect(fs.readdirSync(blocks).sort()).toEqual([foreign, live].sort());
    await Promise.all([s1!.put('k', mem.desc(0, 2 * MiB)), s2!.put('k', mem.desc(2 * MiB, 2 * MiB))]);
    expect(fs.readdirSync(blocks)).toHaveLength(3);
    fs.rmSync(path.join(blocks, live));
    fs.rmSync(path.join(blocks, foreign));
    await s1!.close();
    await s2!.close();
  });

  it('after close(), put, get and delete are ERR_NOT_ALLOWED; close waits for gets under way', async () => {
    const store = await BlockStore.open(agent, { capacityBytes: 8 * MiB });
    await store.put('k', mem.desc(0, 8 * MiB));
    const reading = store.get('k', back.desc(0, 8 * MiB), { timeoutMs: 10_000 });
    const closing = store.close();
    for (const op of [() => store.put('j', mem.desc(0, 10)), () => store.get('k', back.desc(0, 8 * MiB)), () => store.delete('k')]) {
      const err = await expectCode(op, 'ERR_NOT_ALLOWED');
      expect(err.message).toMatch(/block store is closed/);
    }
    await reading;
    await closing;
    await store.close();
    expect(store.keys()).toEqual([]);
  });
});
