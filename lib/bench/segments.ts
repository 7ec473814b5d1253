/**
 * The memory a bench side transfers from or to, and the segment pairs ixfer
 * measures: DRAM to DRAM over the network, and DRAM or VRAM to and from a file
 * in one process (--target-seg FILE).
 */
import type { Agent } from '../agent.js';
import { NotSupportedError } from '../errors.js';
import type { MemoryRegion } from '../core/memory.js';
import type { BenchOptions, MemorySegment } from './options.js';

export function allocateSegment(agent: Agent, seg: MemorySegment, bytes: number): MemoryRegion {
  switch (seg) {
    case 'DRAM':
      return agent.allocate(bytes);
    case 'VRAM':
      return agent.allocateVram(bytes);
  }
}

/** Refuses, before anything starts, the pairs that are not measured. */
export function checkSegments(o: BenchOptions): void {
  const pair = `--initiator-seg ${o.initiatorSeg} --target-seg ${o.targetSeg}`;
  if (o.initiatorSeg === 'FILE') {
    throw new NotSupportedError(`${pair}: FILE is a target segment (the initiator's memory moves to and from it)`);
  }
  if (o.targetSeg === 'FILE') {
    if (o.prepared) throw new NotSupportedError('--prepared: file transfers have no prepared descriptor lists');
    return;
  }
  if (o.initiatorSeg === 'VRAM' || o.targetSeg === 'VRAM') {
    throw new NotSupportedError(
      `${pair}: VRAM over the network is not supported; VRAM moves to and from files (--initiator-seg VRAM --target-seg FILE)`,
    );
  }
}
