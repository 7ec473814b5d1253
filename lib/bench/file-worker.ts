/**
 * The ixfer process of `ixfer bench --target-seg FILE`: one agent that
 * registers memory (DRAM or VRAM) and a file of the same size, and moves
 * blocks between them, driven by the orchestrator over IPC (rpc.ts).
 */
import fs from 'node:fs';

import { Agent } from '../agent.js';
import type { FileEngineKind } from '../file/engine.js';
import type { FileRegion } from '../file/region.js';
import type { MemoryRegion } from '../core/memory.js';
import { timeIterations } from './iterate.js';
import { pieces } from './layout.js';
import type { MemorySegment, RowSpec } from './options.js';
import { fillPattern, hash } from './pattern.js';
import { serve } from './rpc.js';
import { allocateSegment, readSegment, writeSegment } from './segments.js';

export interface FileInit {
  seg: MemorySegment;
  /** CUDA device of VRAM memory. */
  device: number;
  bytes: number;
  path: string;
  engine: 'auto' | FileEngineKind;
  threads: number;
  direct: boolean;
  provider: string;
  address: string;
}

let agent: Agent;
let memory: MemoryRegion;
let file: FileRegion;
let engine: FileInit['engine'];

function transfer(op: RowSpec['op'], layout: { off: number; len: number }[]) {
  return agent.createFileTransfer({
    op,
    local: layout.map((p) => memory.desc(p.off, p.len)),
    files: layout.map((p) => file.desc(p.off, p.len)),
    engine,
  });
}

/** The first len bytes of memory or of the file (a copy for VRAM and the file). */
function readSide(side: 'memory' | 'file', len: number): Uint8Array {
  if (side === 'memory') return readSegment(memory, len);
  const out = Buffer.allocUnsafe(len);
  const fd = fs.openSync(file.path, 'r');
  try {
    for (let done = 0; done < len; ) done += fs.readSync(fd, out, done, len - done, done);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

function writeSide(side: 'memory' | 'file', bytes: Uint8Array): void {
  if (side === 'file') fs.writeFileSync(file.path, bytes, { flag: 'r+' });
  else writeSegment(memory, bytes);
}

serve({
  async init(m) {
    const o = m as unknown as FileInit;
    agent = await Agent.create({ name: 'bench-file', provider: o.provider, address: o.address, files: { threads: o.threads } });
    memory = allocateSegment(agent, o.seg, o.bytes, o.device, 'initiator');
    file = agent.registerFile(o.path, { truncate: true, direct: o.direct });
    engine = o.engine;
    // The whole file, written once by the engine under test, before any row reads it.
    const t = transfer('WRITE', [{ off: 0, len: o.bytes }]);
    await t.run();
    t.release();
    return { engine: t.engine, engineReason: t.engineReason };
  },
  /** Fills the first len bytes of a side with the pattern of seed. */
  fill(m) {
    const bytes = Buffer.allocUnsafe(m.len as number);
    fillPattern(bytes, m.seed as number);
    writeSide(m.side as 'memory' | 'file', bytes);
  },
  hash(m) {
    return { hash: hash(readSide(m.side as 'memory' | 'file', m.len as number)) };
  },
  async warmup(m) {
    const row = m.row as RowSpec;
    await timeIterations(row.warmup, () => transfer(row.op, pieces(row)), false);
  },
  async run(m) {
    const row = m.row as RowSpec;
    return { timing: await timeIterations(row.iters, () => transfer(row.op, pieces(row)), false) };
  },
});
