/**
 * An ixfer bench process: the initiator or the target agent, driven by the
 * orchestrator over IPC (rpc.ts). The initiator runs the rows and times them
 * as nixlbench does; the target only registers memory (its progress thread
 * serves the RMA, and stages VRAM that the provider cannot reach) and fills
 * or hashes it for --check-consistency.
 */
import { Agent } from '../agent.js';
import type { VramOptions } from '../schemas.js';
import type { MemoryRegion } from '../core/memory.js';
import type { RailStatus } from '../net/endpoint.js';
import type { StagingStats } from '../net/engine.js';
import { timeIterations } from './iterate.js';
import { pieces } from './layout.js';
import type { MemorySegment, RowSpec } from './options.js';
import { fillPattern, hash } from './pattern.js';
import { serve } from './rpc.js';
import { allocateSegment, readSegment, writeSegment } from './segments.js';
import type { Timing } from './stats.js';

let agent: Agent;
let region: MemoryRegion;
let peer: string;
let remoteBase: number;

/** Runs row.iters (or row.warmup) iterations, one transfer in flight. */
function runRow(row: RowSpec, prepared: boolean, iters: number): Promise<Timing> {
  const layout = pieces(row);
  const local = layout.map((p) => region.desc(p.off, p.len));
  const remote = layout.map((p) => ({ addr: remoteBase + p.off, len: p.len }));
  if (!prepared) return timeIterations(iters, () => agent.createTransfer({ op: row.op, peer, local, remote }), false);
  const pl = agent.prepareLocal(local);
  const pr = agent.prepareRemote(peer, remote);
  const idx = layout.map((_, i) => i);
  return timeIterations(iters, () => agent.makeTransfer(row.op, pl, idx, pr, idx), true);
}

export interface IxferInit {
  role: 'initiator' | 'target';
  provider: string;
  address: string;
  bytes: number;
  seg: MemorySegment;
  /** CUDA device of VRAM memory. */
  device: number;
  vram: VramOptions;
  /** The agent's rails (--rails, --target-rails). */
  rails: number;
  /** --same-host: the shm rail for a peer on this host (the other bench process). */
  sameHost: 'auto' | 'shm' | 'off';
}

serve({
  async init(m) {
    const { role, provider, address, bytes, seg, device, vram, rails, sameHost } = m as unknown as IxferInit;
    agent = await Agent.create({ name: `bench-${role}`, provider, address, vram, rails, sameHost });
    region = allocateSegment(agent, seg, bytes, device, role);
    return {
      metadata: Buffer.from(agent.getLocalMetadata()).toString('base64'),
      addr: region.addr,
      path: region.kind === 'VRAM' ? region.path : undefined,
    };
  },
  /** The agent's staging pool (all zero where nothing was staged). */
  staging(): { stats: StagingStats } {
    return { stats: agent.stagingStats };
  },
  /** Each rail and what it carried (Agent.rails). */
  rails(): { rails: RailStatus[] } {
    return { rails: agent.rails };
  },
  connect(m) {
    peer = agent.loadRemoteMetadata(Buffer.from(m.metadata as string, 'base64'));
    remoteBase = m.addr as number;
  },
  fill(m) {
    const bytes = Buffer.allocUnsafe(m.len as number);
    fillPattern(bytes, m.seed as number);
    writeSegment(region, bytes);
  },
  hash(m) {
    return { hash: hash(readSegment(region, m.len as number)) };
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
