/** The memory a bench side transfers from or to. */
import type { Agent } from '../agent.js';
import type { MemoryRegion } from '../core/memory.js';
import type { MemorySegment } from './options.js';

export function allocateSegment(agent: Agent, seg: MemorySegment, bytes: number): MemoryRegion {
  switch (seg) {
    case 'DRAM':
      return agent.allocate(bytes);
    case 'VRAM':
      return agent.allocateVram(bytes);
  }
}
