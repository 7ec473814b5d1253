/**
 * The orchestrator: starts each engine's two processes, then for every row of
 * the sweep runs every engine in turn (interleaved, so that a noisy machine
 * disturbs all engines alike), sampling both processes' CPU time and peak RSS
 * from /proc around the measured iterations.
 */
import { CEngine } from './c-baseline.js';
import type { Engine, EngineName } from './engine.js';
import { IxferEngine, NetEngine } from './node-engines.js';
import { bufferSize, formatSize, sweep, type BenchOptions, type RowSpec } from './options.js';
import { cpuSeconds, peakRss, resetPeakRss } from './procstat.js';
import { progressBar } from './progress.js';
import { measure, type Measurement } from './stats.js';

export interface RowResult {
  spec: RowSpec;
  results: Partial<Record<EngineName, Measurement>> & { ixfer: Measurement };
}

export interface BenchReport {
  options: BenchOptions;
  /** Bytes registered (allocated) on each side, per engine. */
  bufferBytes: number;
  engines: EngineName[];
  rows: RowResult[];
}

async function measureRow(e: Engine, row: RowSpec): Promise<Measurement> {
  const { initiator, target } = e.pids;
  resetPeakRss(initiator);
  resetPeakRss(target);
  await e.warmup(row);
  const cpuI = cpuSeconds(initiator);
  const cpuT = cpuSeconds(target);
  const timing = await e.run(row);
  return measure(row, timing, {
    cpuSec: { initiator: cpuSeconds(initiator) - cpuI, target: cpuSeconds(target) - cpuT },
    peakRssBytes: { initiator: peakRss(initiator), target: peakRss(target) },
  });
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const rows = sweep(o);
  const bytes = bufferSize(o, rows);
  const engines: Engine[] = [];
  const progress = progressBar(rows.length * (o.baseline ? 3 : 1), !o.json && !o.csv);
  try {
    const ixfer = await IxferEngine.start(o, bytes);
    engines.push(ixfer);
    if (o.baseline) engines.push(await CEngine.start(o, bytes), await NetEngine.start(o, bytes));
    const results: RowResult[] = [];
    for (const [i, row] of rows.entries()) {
      const label = `${formatSize(row.blockSize)} x${row.batchSize}${row.numIovs > 1 ? ` iovs ${row.numIovs}` : ''}`;
      if (o.checkConsistency) await ixfer.fill(row, 2 * i + 1);
      const r: Partial<Record<EngineName, Measurement>> = {};
      for (const e of engines) {
        r[e.name] = await measureRow(e, row);
        progress.step(`${label} ${e.name}`);
      }
      if (o.checkConsistency) r.ixfer!.consistent = await ixfer.consistent(row);
      results.push({ spec: row, results: r as RowResult['results'] });
    }
    return { options: o, bufferBytes: bytes, engines: engines.map((e) => e.name), rows: results };
  } finally {
    progress.stop();
    await Promise.all(engines.map((e) => e.close()));
  }
}
