#!/usr/bin/env node
/**
 * File transfer throughput: ixfer's file engine against a plain C
 * pread/pwrite loop (bench/file_baseline.c) on the same file, block sizes
 * 64 KiB to 64 MiB, reads and writes, in the same run.
 *
 *   node bench/file-bench.mjs [--dir /tmp] [--file-mib 256] [--seconds 1]
 *        [--engine posix|gds|gds_mt|auto] [--mem dram|vram] [--threads 4] [--direct]
 *
 * ixfer moves each pass over the file as one transfer with one descriptor
 * per block (how KV blocks are offloaded); the C loop moves the same blocks
 * one pread/pwrite at a time. Prints a table and one JSON line.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const { Agent } = await import(path.join(here, '..', 'dist', 'index.js'));

const { values: o } = parseArgs({
  options: {
    dir: { type: 'string', default: os.tmpdir() },
    'file-mib': { type: 'string', default: '256' },
    seconds: { type: 'string', default: '1' },
    engine: { type: 'string', default: 'posix' },
    mem: { type: 'string', default: 'dram' },
    threads: { type: 'string', default: '4' },
    direct: { type: 'boolean', default: false },
    sizes: { type: 'string', default: '65536,262144,1048576,4194304,16777216,67108864' },
  },
});
const fileBytes = Number(o['file-mib']) << 20;
const seconds = Number(o.seconds);
const sizes = o.sizes.split(',').map(Number);

// The baseline program, compiled once next to the system's temp files.
const baseline = path.join(os.tmpdir(), 'ixfer-file-baseline');
execFileSync(process.env.CC || 'gcc', ['-O2', '-o', baseline, path.join(here, 'file_baseline.c')]);

const file = path.join(o.dir, `ixfer-file-bench-${process.pid}.bin`);
const agent = await Agent.create({ name: 'file-bench', files: { threads: Number(o.threads) } });
const mem = o.mem === 'vram' ? agent.allocateVram(fileBytes) : agent.allocate(fileBytes);
if (o.mem !== 'vram') mem.bytes.fill(0x5a);

function cLoop(op, block) {
  const out = execFileSync(baseline, [op, file, String(block), String(fileBytes), String(seconds)], { encoding: 'utf8' });
  return Number(/GB\/s ([\d.]+)/.exec(out)[1]);
}

async function ixfer(op, block) {
  const count = Math.floor(fileBytes / block);
  const f = agent.registerFile(file, { direct: o.direct });
  const t = agent.createFileTransfer({ op: op === 'read' ? 'READ' : 'WRITE', local: mem.blocks(block, count), files: f.blocks(block, count), engine: o.engine });
  let bytes = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    await t.run({ timeoutMs: 120_000 });
    bytes += count * block;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  t.release();
  f.deregister();
  return { gbps: bytes / elapsed / 1e9, engine: t.engine };
}

const rows = [];
try {
  // The file exists at full size before anything reads it.
  cLoop('write', 1 << 20);
  for (const block of sizes) {
    for (const op of ['write', 'read']) {
      const c = cLoop(op, block);
      const x = await ixfer(op, block);
      rows.push({ block, op, c: +c.toFixed(2), ixfer: +x.gbps.toFixed(2), ratio: +(x.gbps / c).toFixed(2), engine: x.engine });
    }
  }
} finally {
  await agent.close();
  fs.rmSync(file, { force: true });
}
const kib = (n) => (n >= 1 << 20 ? `${n >> 20} MiB` : `${n >> 10} KiB`);
console.log(`file ${o['file-mib']} MiB in ${o.dir}, memory ${o.mem}, engine ${o.engine}${o.direct ? ' O_DIRECT' : ''}, ${o.threads} threads, ${os.cpus().length} cpus`);
console.log('block     op     C loop GB/s  ixfer GB/s  ixfer/C  engine');
for (const r of rows) {
  console.log(`${kib(r.block).padEnd(9)} ${r.op.padEnd(6)} ${String(r.c).padStart(11)} ${String(r.ixfer).padStart(11)} ${String(r.ratio).padStart(8)}  ${r.engine}`);
}
console.log(JSON.stringify({ bench: 'file', mem: o.mem, engine: o.engine, direct: o.direct, rows }));
