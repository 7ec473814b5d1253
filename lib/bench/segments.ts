/**
 * The memory a bench side transfers from or to. The hook for more kinds: VRAM
 * and FILE become cases here (and in SegmentSchema) when the engine has them.
 */
import type { Agent } from '../agent.js';
import type { MemoryRegion } from '../memory.js';
import type { Segment } from './options.js';

export function allocateSegment(agent: Agent, seg: Segment, bytes: number): MemoryRegion {
  switch (seg) {
    case 'DRAM':
      return agent.allocate(bytes);
  }
}
