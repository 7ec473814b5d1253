/**
 * The orchestrator: starts each engine's processes (two per engine over the
 * network, one with --target-seg FILE or for the CUDA copy loop), then for every row of
 * the sweep runs every engine in turn, --repeat times (interleaved, so that a
 * noisy machine disturbs all engines alike), sampling both processes' CPU time
 * and peak RSS from /proc around the measured iterations.
 */
import { CEngine } from './c-baseline.js';
import type { CheckedEngine, Engine, EngineName } from './engine.js';
import { IxferEngine, IxferFileEngine, NetEngine } from './node-engines.js';
import type { VramPath } from '../core/memory.js';
import type { RailStatus } from '../net/endpoint.js';
import type { StagingStats } from '../net/engine.js';
import { bufferSize, formatSize, hasVram, JIT_BLOCK, JIT_WARMUP, sweep, type BenchOptions, type RowSpec } from './options.js';
import { cpuSeconds, peakRss, resetPeakRss } from './procstat.js';
import { hostInfo, libfabricVersion, type HostInfo } from '../info.js';
import { packageVersion } from '../native/shim.js';
import { progressLine, type Progress } from './progress.js';
import { measure, medianRun, type Measurement } from './stats.js';

export interface RowResult {
  spec: RowSpec;
  results: Partial<Record<EngineName, Measurement>> & { ixfer: Measurement };
}

export interface BenchReport {
  host: HostInfo;
  ixfer: string;
  /** The libfabric loaded, as major.minor; set when the sweep ends. */
  libfabric?: string;
  options: BenchOptions;
  /** Bytes registered (allocated) on each side, per engine; with FILE, memory and file each. */
  bufferBytes: number;
  engines: EngineName[];
  /** --target-seg FILE: the file engine the transfers used (FileTransfer.engine), and why. */
  file?: { engine: string; engineReason: string };
  /** A VRAM side over the network: the path of each side's region (MemoryRegion.path; DRAM: absent). */
  paths?: { initiator?: VramPath | undefined; target?: VramPath | undefined };
  /** ... and each agent's staging pool (Agent.stagingStats) when the sweep ends. */
  staging?: { initiator: StagingStats; target: StagingStats };
  /** The initiator's rails when the sweep ends (Agent.rails): which carried the bytes. */
  rails?: RailStatus[];
  rows: RowResult[];
}

async function measureRow(e: Engine, row: RowSpec): Promise<Measurement> {
  const { initiator, target } = e.pids;
  // A side without a process of its own (FILE's target) reads NaN: '-' in the table.
  const sample = (f: (pid: number) => number, pid: number | undefined) => (pid === undefined ? NaN : f(pid));
  resetPeakRss(initiator);
  if (target !== undefined) resetPeakRss(target);
  await e.warmup(row);
  const cpuI = cpuSeconds(initiator);
  const cpuT = sample(cpuSeconds, target);
  const timing = await e.run(row);
  return measure(row, timing, {
    cpuSec: { initiator: cpuSeconds(initiator) - cpuI, target: sample(cpuSeconds, target) - cpuT },
    peakRssBytes: { initiator: peakRss(initiator), target: sample(peakRss, target) },
  });
}

/** Starts ixfer and, with --baseline, the baselines that apply (with FILE: the C file loop only). */
async function startEngines(o: BenchOptions, bytes: number, engines: Engine[]): Promise<CheckedEngine> {
  if (o.targetSeg === 'FILE') {
    const ixfer = await IxferFileEngine.start(o, bytes);
    engines.push(ixfer);
    if (o.baseline) engines.push(await CEngine.startFile(o, bytes, ixfer.file));
    return ixfer;
  }
  const ixfer = await IxferEngine.start(o, bytes);
  engines.push(ixfer);
  if (hasVram(o)) engines.push(await IxferEngine.start(o, bytes, 'dram'), await CEngine.startCopy(o, bytes));
  if (o.baseline) engines.push(await CEngine.start(o, bytes), await NetEngine.start(o, bytes));
  return ixfer;
}

/** The engines whose data --check-consistency compares: ixfer's (and its DRAM twin's), and the C RMA loop's. */
function checkedEngine(e: Engine, ixfer: CheckedEngine): CheckedEngine | undefined {
  if (e === ixfer) return ixfer;
  if (e instanceof IxferEngine) return e;
  return e instanceof CEngine && e.checked ? e : undefined;
}

/**
 * Runs the sweep. `onRow` gets the report so far once the engines run (no
 * rows yet) and after each row, so that the table can be printed as rows
 * finish (an interrupted run keeps them).
 */
export async function runBench(o: BenchOptions, onRow?: (report: BenchReport) => void): Promise<BenchReport> {
  const rows = sweep(o);
  const bytes = bufferSize(o, rows);
  const engines: Engine[] = [];
  let progress: Progress | undefined;
  try {
    const ixfer = await startEngines(o, bytes, engines);
    progress = progressLine(rows.length * engines.length * o.repeat, !o.json && !o.csv);
    const results: RowResult[] = [];
    const file = ixfer instanceof IxferFileEngine ? { engine: ixfer.engine, engineReason: ixfer.engineReason } : undefined;
    const vram = ixfer instanceof IxferEngine && hasVram(o) ? ixfer : undefined;
    const report: BenchReport = {
      host: hostInfo(),
      ixfer: packageVersion,
      options: o,
      bufferBytes: bytes,
      engines: engines.map((e) => e.name),
      ...(file && { file }),
      ...(vram && { paths: vram.paths }),
      rows: results,
    };
    onRow?.(report);
    const first = rows[0]!;
    const jit = { ...first, blockSize: Math.min(first.blockSize, JIT_BLOCK), batchSize: 1, numIovs: 1, warmup: JIT_WARMUP };
    for (const e of engines) if (e.name !== 'c' && e.name !== 'cuda') await e.warmup(jit);
    for (const [i, row] of rows.entries()) {
      const label = `${formatSize(row.blockSize)} x${row.batchSize}${row.numIovs > 1 ? ` iovs ${row.numIovs}` : ''}`;
      const runs = new Map<Engine, Measurement[]>(engines.map((e) => [e, []]));
      for (let rep = 0; rep < o.repeat; rep++) {
        for (const e of engines) {
          // Filled before each engine runs and checked right after: the C
          // file loop writes the same file, and the C RMA loop its own buffers.
          const checked = o.checkConsistency ? checkedEngine(e, ixfer) : undefined;
          if (checked) await checked.fill(row, 2 * (i * o.repeat + rep) + 1);
          const m = await measureRow(e, row);
          if (checked) m.consistent = await checked.consistent(row);
          runs.get(e)!.push(m);
          progress.step(`${label} ${e.name}`);
        }
      }
      const r: Partial<Record<EngineName, Measurement>> = {};
      for (const e of engines) r[e.name] = medianRun(runs.get(e)!);
      results.push({ spec: row, results: r as RowResult['results'] });
      progress.clear();
      onRow?.(report);
    }
    // Only now: loading libfabric here installs its signal handling, and Ctrl-C during the sweep should end it as usual.
    report.libfabric = libfabricVersion();
    if (vram) report.staging = await vram.staging();
    if (ixfer instanceof IxferEngine) report.rails = await ixfer.rails();
    return report;
  } finally {
    progress?.clear();
    await Promise.all(engines.map((e) => e.close()));
  }
}
