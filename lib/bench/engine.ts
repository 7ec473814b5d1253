/** What the orchestrator drives: one engine's initiator and target processes. */
import type { RowSpec } from './options.js';
import type { Timing } from './stats.js';

export type EngineName = 'ixfer' | 'c' | 'net';

export interface Engine {
  readonly name: EngineName;
  readonly pids: { initiator: number; target: number };
  /** Runs row.warmup unmeasured iterations (after telling the target about the row). */
  warmup(row: RowSpec): Promise<void>;
  /** Runs row.iters measured iterations. */
  run(row: RowSpec): Promise<Timing>;
  close(): Promise<void>;
}
