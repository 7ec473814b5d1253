/**
 * What the orchestrator drives: one engine's initiator and target processes,
 * or, with --target-seg FILE, its one process (no target).
 */
import type { BenchOptions, RowSpec } from './options.js';
import type { Timing } from './stats.js';

/** ixfer; where a side is VRAM its DRAM-to-DRAM twin (dram) and the CUDA copy loop (cuda); the --baseline engines (c, net). */
export type EngineName = 'ixfer' | 'dram' | 'cuda' | 'c' | 'net';

/** An engine in a few words (plot legend, table key). */
export function engineLabel(name: EngineName, o: Pick<BenchOptions, 'targetSeg'>): string {
  switch (name) {
    case 'c':
      return o.targetSeg === 'FILE' ? 'C pread/pwrite loop' : 'C on libfabric';
    case 'net':
      return 'Node net socket';
    case 'dram':
      return 'ixfer DRAM -> DRAM';
    case 'cuda':
      return 'CUDA copy loop';
    case 'ixfer':
      return 'ixfer';
  }
}

export interface Engine {
  readonly name: EngineName;
  readonly pids: { initiator: number; target?: number | undefined };
  /** Runs row.warmup unmeasured iterations (after telling the target about the row). */
  warmup(row: RowSpec): Promise<void>;
  /** Runs row.iters measured iterations. */
  run(row: RowSpec): Promise<Timing>;
  close(): Promise<void>;
}

/** An ixfer engine: also fills the source and compares both sides for --check-consistency. */
export interface CheckedEngine extends Engine {
  /** The source gets the pattern of seed, the destination another. */
  fill(row: RowSpec, seed: number): Promise<void>;
  /** Whether the row's bytes are equal on both sides (SHA-256). */
  consistent(row: RowSpec): Promise<boolean>;
}
