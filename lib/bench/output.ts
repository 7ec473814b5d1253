/** The report as a table for people, or CSV / JSON for programs. */
import { engineLabel, type EngineName } from './engine.js';
import { formatSize, JIT_WARMUP, vramOptions } from './options.js';
import type { BenchReport } from './runner.js';
import type { Measurement } from './stats.js';

const BASELINES: EngineName[] = ['dram', 'cuda', 'c', 'net'];

interface Column {
  title: string;
  /** Characters, when values outgrow the title (latencies of big blocks). */
  width?: number;
  value(row: BenchReport['rows'][number]): string;
}

const f = (digits: number) => (v: number) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const f1 = f(1);
const f2 = f(2);
const f3 = f(3);

/**
 * With baselines the table keeps ixfer's main columns and the comparisons, so
 * that it fits in 100 columns (with a VRAM side, without post avg; with
 * --baseline as well it is wider); --json and --csv carry every measurement.
 */
function columns(report: BenchReport): Column[] {
  const ix = (pick: (m: Measurement) => number, fmt: (v: number) => string) => (r: BenchReport['rows'][number]) =>
    fmt(pick(r.results.ixfer));
  const baselines = BASELINES.filter((e) => report.engines.includes(e));
  const full = baselines.length === 0;
  const cols: Column[] = [
    { title: 'block (B)', value: (r) => String(r.spec.blockSize) },
    { title: 'batch', value: (r) => String(r.spec.batchSize) },
  ];
  if (report.options.preset === 'iov-sweep' || report.options.numIovs > 1) {
    cols.push({ title: 'iovs', value: (r) => String(r.spec.numIovs) });
  }
  cols.push(
    { title: 'GB/s', value: ix((m) => m.gbps, f3) },
  );
  if (report.options.repeat > 1) {
    const spread = (m: Measurement) => `${f3(Math.min(...m.runsGbps!))}-${f3(Math.max(...m.runsGbps!))}`;
    cols.push({ title: 'spread', value: (r) => spread(r.results.ixfer) });
  }
  cols.push(
    ...(full
      ? [
          { title: 'avg lat', width: 8, value: ix((m) => m.avgLatUs, f1) },
          { title: 'prep avg', value: ix((m) => m.prepUs.avg, f1) },
          { title: 'prep p99', value: ix((m) => m.prepUs.p99, f1) },
        ]
      : []),
    ...(report.paths ? [] : [{ title: 'post avg', value: ix((m) => m.postUs.avg, f1) }]),
    ...(full ? [{ title: 'post p99', value: ix((m) => m.postUs.p99, f1) }] : []),
    ...(full ? [{ title: 'tx avg', value: ix((m) => m.txUs.avg, f1) }] : []),
    { title: 'tx p99', width: 8, value: ix((m) => m.txUs.p99, f1) },
    { title: 'cpu s/GB i', value: ix((m) => m.cpuSecPerGB.initiator, f3) },
    ...(full
      ? [
          { title: 'cpu s/GB t', value: ix((m) => m.cpuSecPerGB.target, f3) },
          { title: 'rss MB i', value: ix((m) => m.peakRssMB.initiator, f(0)) },
          { title: 'rss MB t', value: ix((m) => m.peakRssMB.target, f(0)) },
        ]
      : []),
  );
  for (const b of baselines) {
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

/** Column widths fixed before the first row, so that rows can be printed as they finish. */
const width = (c: Column, i: number) => (i < 2 ? c.title.length : Math.max(c.title.length, c.width ?? 6));

function line(cols: Column[], cells: string[]): string {
  return cells.map((cell, i) => (i < 2 ? cell.padEnd(width(cols[i]!, i)) : cell.padStart(width(cols[i]!, i)))).join('  ');
}

/** The title lines and column heads; then one tableRow per row. */
export function tableHeader(report: BenchReport): string {
  const o = report.options;
  const cols = columns(report);
  const sources: Record<EngineName, string> = {
    ixfer: '',
    dram: 'same provider, sizes and agent options',
    cuda: 'bench/cuda_copy_baseline.c, pinned host memory, no network',
    c: o.targetSeg === 'FILE' ? 'bench/file_baseline.c' : 'bench/fi_rma_baseline.c',
    net: 'node:net',
  };
  const key = BASELINES.filter((e) => report.engines.includes(e)).map((e) => `${e} = ${engineLabel(e, o)} (${sources[e]})`);
  const file = report.file;
  const header =
    (file
      ? `ixfer bench: ${o.op} ${o.initiatorSeg} -> FILE, ${report.bufferBytes} bytes of memory and file in ${o.fileDir}` +
        `${o.fileDirect ? ' (O_DIRECT)' : ''}\nfile engine ${file.engine} (${file.engineReason}), ${o.fileThreads} I/O threads, ` +
        `one transfer per row, reposted\n` +
        `times in microseconds; i = the one process (agent and I/O threads), t = - (no target process)`
      : `ixfer bench: ${o.op} ${o.initiatorSeg} -> ${o.targetSeg}, provider ${o.provider} on ${o.address}` +
        (o.rails > 1 || (o.targetRails ?? o.rails) > 1 ? `, ixfer rails ${o.rails} -> ${o.targetRails ?? o.rails}` : '') +
        `\n${report.bufferBytes} bytes registered per side, ${o.prepared ? 'prepared lists + makeTransfer' : 'one transfer per row, reposted'}\n` +
        `times in microseconds; i = initiator, t = target`) +
    (report.paths ? `\n${vramLine(report)}` : '') +
    (o.repeat > 1 ? `\neach row run ${o.repeat} times, interleaved: median run shown, ratios of medians` : '') +
    `\nthe JavaScript engines ran ${JIT_WARMUP} unmeasured small transfers first (JIT warm-up)` +
    (key.length ? `\n${key.join('\n')}\nx = ixfer / baseline GB/s; --json or --csv for every column` : '') +
    '\n\n';
  return (
    header +
    line(cols, cols.map((c) => c.title)) +
    '\n' +
    line(cols, cols.map((c, i) => '-'.repeat(width(c, i)))) +
    '\n'
  );
}

/** Where VRAM is on each side, the path its region takes, and the agents' staging settings. */
function vramLine(report: BenchReport): string {
  const o = report.options;
  const side = (role: 'initiator' | 'target') => {
    const path = report.paths![role];
    return `${role} ${path ? `VRAM on device ${o.device[role]}, ${path}` : 'DRAM'}`;
  };
  const v = vramOptions(o);
  return `${side('initiator')}; ${side('target')}\nvram mode ${v.mode}, staging pool ${formatSize(v.stagingBytes)} per agent in ${formatSize(v.stagingChunkBytes)} chunks`;
}

/** After the last row: the rails that carried the bytes, and the staging pools (a VRAM side over the network). */
export function tableFooter(report: BenchReport): string {
  const rails = report.rails?.length
    ? `
initiator's rails: ${report.rails.map((r, i) => `${i} ${r.provider} ${r.domain} ${formatSize(r.bytes)} in ${r.ops} ops`).join(', ')}
`
    : '';
  return rails + stagingFooter(report);
}

function stagingFooter(report: BenchReport): string {
  const s = report.staging;
  if (!s) return '';
  const side = (role: 'initiator' | 'target') => {
    const t = s[role];
    if (t.poolBytes === 0) return `${role} none (nothing staged)`;
    return `${role} ${formatSize(t.poolBytes)} in ${formatSize(t.chunkBytes)} chunks, ${t.chunksPeak} held at most, ` +
      `${t.pieces} pieces staged, ${t.served} peer requests served`;
  };
  return `\nstaging: ${side('initiator')}\n         ${side('target')}\n`;
}

export function tableRow(report: BenchReport, row: BenchReport['rows'][number]): string {
  const cols = columns(report);
  return line(cols, cols.map((c) => c.value(row))) + '\n';
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
