/**
 * Hostile files: FIFOs, sockets, directories and other special files given to
 * registerFile or found in a BlockStore directory, and a BlockStore directory
 * that another process writes and deletes in. Each ends in a typed error (or
 * is skipped), without blocking the event loop, and the agent keeps working.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, BlockStore, type MemoryRegion } from '../../lib/index.js';
import { expectCode, random } from '../support/helpers.js';

let dir: string;
let agent: Agent;
let mem: MemoryRegion;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-file-faults-'));
  agent = await Agent.create({ name: 'file-faults' });
  mem = agent.allocate(1 << 20);
});
afterAll(async () => {
  await agent.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs fn, failing if the event loop did not turn within it for more than maxMs. */
async function withoutBlocking<T>(fn: () => Promise<T>, maxMs = 200): Promise<T> {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 5);
  try {
    const out = await fn();
    await new Promise((r) => setTimeout(r, 20));
    worst = Math.max(worst, performance.now() - last);
    expect(worst).toBeLessThan(maxMs);
    return out;
  } finally {
    clearInterval(timer);
  }
}

/** A WRITE and READ back through a regular file on the same agent. */
async function stillWorks(): Promise<void> {
  const f = agent.registerFile(path.join(dir, `ok-${Math.random()}`));
  const data = random(4096);
  mem.bytes.set(data, 0);
  await agent.createFileTransfer({ op: 'WRITE', local: [mem.desc(0, 4096)], files: [f.desc(0, 4096)] }).run({ timeoutMs: 10_000 });
  mem.bytes.fill(0, 0, 4096);
  await agent.createFileTransfer({ op: 'READ', local: [mem.desc(0, 4096)], files: [f.desc(0, 4096)] }).run({ timeoutMs: 10_000 });
  expect(Buffer.compare(mem.bytes.subarray(0, 4096), data)).toBe(0);
  f.deregister();
}

function fifo(name: string): string {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return p;
}

describe('registerFile of special files', () => {
  for (const [how, opts] of [
    ['read-only', { read: true, write: false }],
    ['write-only', { read: false, write: true, create: false }],
    ['read-write', { read: true, write: true, create: false }],
  ] as const) {
    it(`a FIFO opened ${how}: ERR_INVALID_PARAM at once, the loop keeps turning`, async () => {
      const p = fifo(`fifo-${how}`);
      const err = await withoutBlocking(() => expectCode(() => agent.registerFile(p, opts), 'ERR_INVALID_PARAM'));
      expect(err.message).toMatch(/FIFO/);
      await stillWorks();
    });
  }

  it('a unix socket file, a directory and a terminal-like device: ERR_INVALID_PARAM naming the kind', async () => {
    const sock = path.join(dir, 'sock');
    const server = net.createServer().listen(sock);
    await new Promise((r) => server.once('listening', r));
    try {
      const s = await withoutBlocking(() => expectCode(() => agent.registerFile(sock, { write: false }), 'ERR_INVALID_PARAM'));
      expect(s.message).toMatch(/FIFO or socket|socket/);
    } finally {
      server.close();
    }
    const d = await expectCode(() => agent.registerFile(dir, { write: false }), 'ERR_INVALID_PARAM');
    expect(d.message).toMatch(/directory/);
    await expectCode(() => agent.registerFile(dir), 'ERR_INVALID_PARAM'); // for writing: EISDIR
    // Descriptors of a file: whole numbers; blocks() a count an array can hold.
    const f = agent.registerFile(path.join(dir, 'descs'));
    await expectCode(() => f.desc(-1, 8), 'ERR_INVALID_PARAM');
    await expectCode(() => f.desc(0, 'x' as never), 'ERR_INVALID_PARAM');
    await expectCode(() => f.blocks(4096, Infinity), 'ERR_INVALID_PARAM');
    f.deregister();
    await expectCode(() => BlockStore.open(null as never, { capacityBytes: 4096 }), 'ERR_INVALID_PARAM');
    await expectCode(() => BlockStore.open(agent, { dir: path.join(dir, 'bad\0dir'), capacityBytes: 4096 }), 'ERR_INVALID_PARAM');
    const store = await BlockStore.open(agent, { capacityBytes: 4096 });
    await expectCode(() => store.delete(5 as never), 'ERR_INVALID_PARAM');
    await expectCode(() => store.has(null as never), 'ERR_INVALID_PARAM');
    await expectCode(() => store.size({} as never), 'ERR_INVALID_PARAM');
    await store.close();
    // A NUL would cut the path short in C: 'cut' must not be created.
    await expectCode(() => agent.registerFile(path.join(dir, 'cut\0.rest')), 'ERR_INVALID_PARAM');
    expect(fs.existsSync(path.join(dir, 'cut'))).toBe(false);
    // /dev/null has no offsets to speak of but is seekable, as /dev/full is (tests use it): allowed.
    agent.registerFile('/dev/null', { write: false, create: false }).deregister();
    await stillWorks();
  });

  it('a descriptor of a FIFO: ERR_INVALID_PARAM (it has no offsets)', async () => {
    const fd = fs.openSync(fifo('fifo-fd'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      const err = await expectCode(() => agent.registerFile(fd), 'ERR_INVALID_PARAM');
      expect(err.message).toMatch(/FIFO/);
    } finally {
      fs.closeSync(fd);
    }
    await stillWorks();
  });
});

describe('BlockStore with special files', () => {
  it('a FIFO named like a block is not a block; get() of it never blocks', async () => {
    const storeDir = path.join(dir, 'store-fifo');
    fs.mkdirSync(storeDir);
    fifo(path.join('store-fifo', `${Buffer.from('k').toString('hex')}.blk`));
    fs.mkdirSync(path.join(storeDir, `${Buffer.from('d').toString('hex')}.blk`));
    const store = await withoutBlocking(() => BlockStore.open(agent, { dir: storeDir, capacityBytes: 1 << 20 }));
    expect(store.keys()).toEqual([]);
    await withoutBlocking(() => expectCode(() => store.get('k', mem.desc(0, 4)), 'ERR_NOT_FOUND'));
    await store.put('real', mem.desc(0, 100));
    await store.get('real', mem.desc(100, 100));
    await store.close();
  });

  it("a 'dir' that is a FIFO or a file: ERR_INVALID_PARAM", async () => {
    const p = fifo('store-is-fifo');
    const err = await withoutBlocking(() => expectCode(() => BlockStore.open(agent, { dir: p, capacityBytes: 1 << 20 }), 'ERR_INVALID_PARAM'));
    expect(err.message).toMatch(/not a directory/);
    const f = path.join(dir, 'plain');
    fs.writeFileSync(f, 'x');
    await expectCode(() => BlockStore.open(agent, { dir: path.join(f, 'sub'), capacityBytes: 1 << 20 }), 'ERR_INVALID_PARAM');
    await stillWorks();
  });
});

describe('BlockStore and another process', () => {
  it('open() while another process creates and deletes blocks: never an untyped error', async () => {
    const storeDir = path.join(dir, 'churn');
    fs.mkdirSync(storeDir);
    // A real writer: creates and deletes block files as fast as it can.
    const churn = spawn(
      process.execPath,
      [
        '-e',
        `const fs=require('fs'),p=require('path');const d=process.argv[1];let i=0;
         const end=Date.now()+20000;
         while(Date.now()<end){const f=p.join(d,(0x1000+(i++%64)).toString(16)+'.blk');
           try{fs.writeFileSync(f,'abcd');fs.unlinkSync(f);}catch{}}`,
        storeDir,
      ],
      { stdio: 'ignore' },
    );
    await new Promise((r) => churn.once('spawn', r));
    // Until the writer is at work.
    while (fs.readdirSync(storeDir).length === 0) await new Promise((r) => setTimeout(r, 5));
    try {
      let opened = 0;
      for (let i = 0; i < 100; i++) {
        const store = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 1 << 20 });
        for (const key of store.keys()) {
          // A block may vanish after open: a typed ERR_NOT_FOUND, and the index forgets it.
          try {
            await store.get(key, mem.desc(0, store.size(key)!));
          } catch (err) {
            expect((err as { code?: string }).code, String((err as Error).message)).toBe('ERR_NOT_FOUND');
            expect(store.has(key)).toBe(false);
          }
        }
        await store.close();
        opened++;
      }
      expect(opened).toBe(100);
    } finally {
      churn.kill();
    }
    await stillWorks();
  });

  it('files whose names map to no valid key are not blocks: keys() skips them, the real block reads back', async () => {
    const storeDir = path.join(dir, 'strays');
    fs.mkdirSync(storeDir);
    // A NUL key, odd hex, bytes that are not UTF-8, upper-case hex (never written by a store).
    for (const stray of ['1000.blk', 'abc.blk', 'ff.blk', '6B.blk']) fs.writeFileSync(path.join(storeDir, stray), 'abcd');
    const store = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 1 << 20 });
    mem.bytes.set(random(100), 0);
    const data = Buffer.from(mem.bytes.subarray(0, 100));
    await store.put('k', mem.desc(0, 100));
    await store.close();
    const again = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 1 << 20 });
    expect(again.keys()).toEqual(['k']);
    expect(again.usedBytes).toBe(100);
    mem.bytes.fill(0, 0, 100);
    await again.get('k', mem.desc(0, 100));
    expect(Buffer.compare(mem.bytes.subarray(0, 100), data)).toBe(0);
    await again.close();
  });

  it('a block deleted behind the store: get() is ERR_NOT_FOUND and the index heals', async () => {
    const storeDir = path.join(dir, 'behind');
    const store = await BlockStore.open(agent, { dir: storeDir, capacityBytes: 1 << 20 });
    await store.put('gone', mem.desc(0, 100));
    for (const f of fs.readdirSync(storeDir)) fs.rmSync(path.join(storeDir, f));
    await expectCode(() => store.get('gone', mem.desc(0, 100)), 'ERR_NOT_FOUND');
    expect(store.has('gone')).toBe(false);
    expect(store.usedBytes).toBe(0);
    await store.close();
  });
});
