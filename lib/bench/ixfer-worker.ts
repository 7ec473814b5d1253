/**
 * An ixfer bench process: the initiator or the target agent, driven by the
 * orchestrator over IPC (rpc.ts). The initiator runs the rows and times them
 * as nixlbench does; the target only registers memory (its progress thread
 * serves the RMA) and fills or hashes it for --check-consistency.
 */
import { Agent } from '../agent.js';
import type { MemoryRegion } from '../memory.js';
import type { Transfer } from '../transfer.js';
import { pieces } from './layout.js';
import type { RowSpec, Segment } from './options.js';
import { fillPattern, hash } from './pattern.js';
import { serve } from './rpc.js';
import { allocateSegment } from './segments.js';
import { summarize, type Timing } from './stats.js';

let agent: Agent;
let region: MemoryRegion;
let peer: string;
let remoteBase: number;

/** Runs row.iters (or row.warmup) iterations, one transfer in flight. */
async function runRow(row: RowSpec, prepared: boolean, iters: number): Promise<Timing> {
  const layout = pieces(row);
  const local = layout.map((p) => region.desc(p.off, p.len));
  const remote = layout.map((p) => ({ addr: remoteBase + p.off, len: p.len }));
  const prep: number[] = [];
  const post: number[] = [];
  const tx: number[] = [];
  const now = () => performance.now() * 1000;
  // One iteration: post, then wait; post and tx samples in µs.
  const iterate = async (t: Transfer) => {
    const a = now();
    t.post();
    const b = now();
    await t.done();
    post.push(b - a);
    tx.push(now() - b);
  };
  let start: number;
  if (prepared) {
    const pl = agent.prepareLocal(local);
    const pr = agent.prepareRemote(peer, remote);
    const idx = layout.map((_, i) => i);
    start = now();
    for (let i = 0; i < iters; i++) {
      const a = now();
      const t = agent.makeTransfer(row.op, pl, idx, pr, idx);
      prep.push(now() - a);
      await iterate(t);
      t.release();
    }
  } else {
    start = now();
    const t = agent.createTransfer({ op: row.op, peer, local, remote });
    prep.push(now() - start);
    for (let i = 0; i < iters; i++) await iterate(t);
    t.release();
  }
  return { totalUs: now() - start, prep: summarize(prep), post: summarize(post), tx: summarize(tx) };
}

serve({
  async init(m) {
    const { role, provider, address, bytes, seg } = m as unknown as {
      role: string;
      provider: string;
      address: string;
      bytes: number;
      seg: Segment;
    };
    agent = await Agent.create({ name: `bench-${role}`, provider, address });
    region = allocateSegment(agent, seg, bytes);
    return { metadata: Buffer.from(agent.getLocalMetadata()).toString('base64'), addr: region.addr };
  },
  connect(m) {
    peer = agent.loadRemoteMetadata(Buffer.from(m.metadata as string, 'base64'));
    remoteBase = m.addr as number;
  },
  fill(m) {
    fillPattern(region.bytes.subarray(0, m.len as number), m.seed as number);
  },
  hash(m) {
    return { hash: hash(region.bytes.subarray(0, m.len as number)) };
  },
  async warmup(m) {
    const row = m.row as RowSpec;
    await runRow(row, m.prepared as boolean, row.warmup);
  },
  async run(m) {
    const row = m.row as RowSpec;
    return { timing: await runRow(row, m.prepared as boolean, row.iters) };
  },
});
