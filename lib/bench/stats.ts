/** nixlbench's statistics: per-row samples to averages, p99s and rates. */
import type { RowSpec } from './options.js';

export interface Summary {
  avg: number;
  p99: number;
}

/** What an engine's initiator reports for one row's measured iterations (µs). */
export interface Timing {
  totalUs: number;
  prep: Summary;
  post: Summary;
  tx: Summary;
}

/** CPU and memory of both processes over a row, sampled from /proc. */
export interface Usage {
  cpuSec: { initiator: number; target: number };
  peakRssBytes: { initiator: number; target: number };
}

/** One engine's result for one row. */
export interface Measurement {
  gbps: number;
  /** Blocks per second. */
  opsPerSec: number;
  avgLatUs: number;
  prepUs: Summary;
  postUs: Summary;
  txUs: Summary;
  cpuSecPerGB: { initiator: number; target: number };
  peakRssMB: { initiator: number; target: number };
  /** With --check-consistency: whether source and destination matched (in every run). */
  consistent?: boolean;
  /** With --repeat N > 1: the GB/s of every run, in order; the other fields are the median run's. */
  runsGbps?: number[];
}

/**
 * The median run by GB/s (for an even count the lower middle one, so that
 * every field comes from one real run), with every run's GB/s and the AND of
 * their consistency checks.
 */
export function medianRun(runs: Measurement[]): Measurement {
  if (runs.length === 1) return runs[0]!;
  const sorted = [...runs].sort((a, b) => a.gbps - b.gbps);
  const median: Measurement = { ...sorted[Math.floor((sorted.length - 1) / 2)]!, runsGbps: runs.map((r) => r.gbps) };
  if (runs.some((r) => r.consistent !== undefined)) median.consistent = runs.every((r) => r.consistent === true);
  return median;
}

/** Mean, and nixlbench's p99: the sorted sample at index floor(n * 0.99). */
export function summarize(samples: number[]): Summary {
  if (samples.length === 0) return { avg: 0, p99: 0 };
  let sum = 0;
  for (const s of samples) sum += s;
  const sorted = Float64Array.from(samples).sort();
  return { avg: sum / samples.length, p99: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]! };
}

export function measure(row: RowSpec, t: Timing, u: Usage): Measurement {
  const bytes = row.blockSize * row.batchSize * row.iters;
  const blocks = row.batchSize * row.iters;
  const gb = bytes / 1e9;
  return {
    gbps: gb / (t.totalUs / 1e6),
    opsPerSec: blocks / (t.totalUs / 1e6),
    avgLatUs: t.totalUs / blocks,
    prepUs: t.prep,
    postUs: t.post,
    txUs: t.tx,
    cpuSecPerGB: { initiator: u.cpuSec.initiator / gb, target: u.cpuSec.target / gb },
    peakRssMB: { initiator: u.peakRssBytes.initiator / 2 ** 20, target: u.peakRssBytes.target / 2 ** 20 },
  };
}
