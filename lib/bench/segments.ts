/** The memory a bench side transfers from or to, and its bytes for --check-consistency. */
import type { Agent } from '../agent.js';
import type { MemoryRegion } from '../core/memory.js';
import { IxferError, makeError } from '../errors.js';
import { cuda } from '../gpu/cuda.js';
import type { MemorySegment } from './options.js';

/** Allocates bytes of seg (VRAM on CUDA device devId); a VRAM side without CUDA is an error that names its flag. */
export function allocateSegment(
  agent: Agent,
  seg: MemorySegment,
  bytes: number,
  devId: number,
  side: 'initiator' | 'target',
): MemoryRegion {
  if (seg === 'DRAM') return agent.allocate(bytes);
  try {
    return agent.allocateVram(bytes, devId);
  } catch (err) {
    if (!(err instanceof IxferError)) throw err;
    throw makeError(
      err.code === 'ERR_LIBRARY_MISSING' ? err.code : 'ERR_NOT_SUPPORTED',
      `--${side}-seg VRAM needs a CUDA device and its driver (libcuda): ${err.message}`,
    );
  }
}

/** The first len bytes of a region (a copy for VRAM). */
export function readSegment(region: MemoryRegion, len: number): Uint8Array {
  return region.kind === 'VRAM' ? cuda.read(region.desc(0, len)) : region.bytes.subarray(0, len);
}

export function writeSegment(region: MemoryRegion, bytes: Uint8Array): void {
  if (region.kind === 'VRAM') cuda.write(region.desc(0, bytes.length), bytes);
  else region.bytes.set(bytes);
}
