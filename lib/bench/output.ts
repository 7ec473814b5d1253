/** The report as a table for people, or CSV / JSON for programs. */
import { engineLabel, type EngineName } from './engine.js';
import type { BenchReport } from './runner.js';
import type { Measurement } from './stats.js';

const BASELINES: EngineName[] = ['c', 'net'];

interface Column {
  title: string;
  value(row: BenchReport['rows'][number]): string;
}

const f = (digits: number) => (v: number) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const f1 = f(1);
const f2 = f(2);
const f3 = f(3);

function columns(report: BenchReport): Column[] {
  const ix = (pick: (m: Measurement) => number, fmt: (v: number) => string) => (r: BenchReport['rows'][number]) =>
    fmt(pick(r.results.ixfer));
  const cols: Column[] = [
    { title: 'block (B)', value: (r) => String(r.spec.blockSize) },
    { title: 'batch', value: (r) => String(r.spec.batchSize) },
  ];
  if (report.rows.some((r) => r.spec.numIovs > 1)) cols.push({ title: 'iovs', value: (r) => String(r.spec.numIovs) });
  cols.push(
    { title: 'GB/s', value: ix((m) => m.gbps, f3) },
  );
  if (report.options.repeat > 1) {
    const spread = (m: Measurement) => `${f3(Math.min(...m.runsGbps!))}-${f3(Math.max(...m.runsGbps!))}`;
    cols.push({ title: 'spread', value: (r) => spread(r.results.ixfer) });
  }
  cols.push(
    { title: 'avg lat', value: ix((m) => m.avgLatUs, f1) },
    { title: 'prep avg', value: ix((m) => m.prepUs.avg, f1) },
    { title: 'prep p99', value: ix((m) => m.prepUs.p99, f1) },
    { title: 'post avg', value: ix((m) => m.postUs.avg, f1) },
    { title: 'post p99', value: ix((m) => m.postUs.p99, f1) },
    { title: 'tx avg', value: ix((m) => m.txUs.avg, f1) },
    { title: 'tx p99', value: ix((m) => m.txUs.p99, f1) },
    { title: 'cpu s/GB i', value: ix((m) => m.cpuSecPerGB.initiator, f3) },
    { title: 'cpu s/GB t', value: ix((m) => m.cpuSecPerGB.target, f3) },
    { title: 'rss MB i', value: ix((m) => m.peakRssMB.initiator, f(0)) },
    { title: 'rss MB t', value: ix((m) => m.peakRssMB.target, f(0)) },
  );
  for (const b of BASELINES.filter((e) => report.engines.includes(e))) {
    cols.push(
      { title: `${b} GB/s`, value: (r) => f3(r.results[b]!.gbps) },
      { title: `x ${b}`, value: (r) => f2(r.results.ixfer.gbps / r.results[b]!.gbps) },
    );
  }
  if (report.options.checkConsistency) {
    cols.push({
      title: 'check',
      value: (r) => {
        const failed = report.engines.filter((e) => r.results[e]!.consistent === false);
        return failed.length ? `FAILED (${failed.join(', ')})` : 'ok';
      },
    });
  }
  return cols;
}

export function formatTable(report: BenchReport): string {
  const o = report.options;
  const cols = columns(report);
  const cells = [cols.map((c) => c.title), ...report.rows.map((r) => cols.map((c) => c.value(r)))];
  const widths = cols.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  const source = (e: EngineName) => (e === 'net' ? 'node:net' : o.targetSeg === 'FILE' ? 'bench/file_baseline.c' : 'bench/fi_rma_baseline.c');
  const key = BASELINES.filter((e) => report.engines.includes(e)).map((e) => `${e} = ${engineLabel(e, o)} (${source(e)})`);
  const file = report.file;
  const header =
    (file
      ? `ixfer bench: ${o.op} ${o.initiatorSeg} -> FILE, ${report.bufferBytes} bytes of memory and file in ${o.fileDir}` +
        `${o.fileDirect ? ' (O_DIRECT)' : ''}, file engine ${file.engine} (${file.engineReason}), ${o.fileThreads} I/O threads, ` +
        `one transfer per row, reposted\n` +
        `times in microseconds; i = the one process (agent and I/O threads), t = - (no target process)`
      : `ixfer bench: ${o.op} ${o.initiatorSeg} -> ${o.targetSeg}, provider ${o.provider} on ${o.address}, ` +
        `${report.bufferBytes} bytes registered per side, ${o.prepared ? 'prepared lists + makeTransfer' : 'one transfer per row, reposted'}\n` +
        `times in microseconds; i = initiator, t = target`) +
    (o.repeat > 1 ? `; each row run ${o.repeat} times, interleaved: median run shown, ratios of medians` : '') +
    (key.length ? `; ${key.join(', ')}; x = ixfer / baseline GB/s` : '') +
    '\n\n';
  return header + [line(cells[0]!), line(widths.map((w) => '-'.repeat(w))), ...cells.slice(1).map(line)].join('\n') + '\n';
}

export function formatCsv(report: BenchReport): string {
  const head = [
    'engine', 'op', 'block_size', 'batch_size', 'num_iovs', 'iters', 'gbps', 'ops_per_sec', 'avg_lat_us',
    'prep_avg_us', 'prep_p99_us', 'post_avg_us', 'post_p99_us', 'tx_avg_us', 'tx_p99_us',
    'cpu_s_per_gb_initiator', 'cpu_s_per_gb_target', 'peak_rss_mb_initiator', 'peak_rss_mb_target',
    'ixfer_ratio', 'consistent', 'runs_gbps',
  ];
  const lines = [head.join(',')];
  for (const r of report.rows) {
    for (const e of report.engines) {
      const m = r.results[e]!;
      const s = r.spec;
      lines.push(
        [
          e, s.op, s.blockSize, s.batchSize, s.numIovs, s.iters, m.gbps, m.opsPerSec, m.avgLatUs,
          m.prepUs.avg, m.prepUs.p99, m.postUs.avg, m.postUs.p99, m.txUs.avg, m.txUs.p99,
          m.cpuSecPerGB.initiator, m.cpuSecPerGB.target, m.peakRssMB.initiator, m.peakRssMB.target,
          e === 'ixfer' ? '' : r.results.ixfer.gbps / m.gbps,
          m.consistent === undefined ? '' : m.consistent,
          (m.runsGbps ?? [m.gbps]).join(' '),
        ].join(','),
      );
    }
  }
  return lines.join('\n') + '\n';
}

export function formatJson(report: BenchReport): string {
  return JSON.stringify(report, null, 2) + '\n';
}
