/**
 * --plot: GB/s against block size (log2 x axis; iovs per block for the
 * iov-sweep preset), one line per engine (and batch size), as a standalone
 * SVG. The markup is plain strings, so no DOM is needed.
 */

import { engineLabel, type EngineName } from './engine.js';
import { formatSize } from './options.js';
import type { BenchReport } from './runner.js';

const W = 760;
const H = 460;
const M = { top: 48, right: 24, bottom: 56, left: 64 };
const COLORS: Record<EngineName, string> = { ixfer: '#d62728', dram: '#9467bd', cuda: '#ff7f0e', c: '#1f77b4', net: '#2ca02c' };
const DASHES = ['', '6 3', '2 3', '8 3 2 3'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Step of about `span / count` that is 1, 2 or 5 times a power of ten, so tick labels read well. */
function niceStep(span: number, count: number): number {
  const raw = span / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw)!;
}

export function renderPlot(report: BenchReport): string {
  const o = report.options;
  const byIovs = o.preset === 'iov-sweep';
  const xOf = (r: BenchReport['rows'][number]) => (byIovs ? r.spec.numIovs : r.spec.blockSize);
  const xs = [...new Set(report.rows.map(xOf))].sort((a, b) => a - b);
  const batches = [...new Set(report.rows.map((r) => r.spec.batchSize))];
  const series = report.engines.flatMap((engine) =>
    batches.map((batch, bi) => ({
      engine,
      dash: DASHES[bi % DASHES.length]!,
      label: engineLabel(engine, o) + (batches.length > 1 ? `, batch ${batch}` : ''),
      points: report.rows
        .filter((r) => r.spec.batchSize === batch)
        .map((r) => [xOf(r), r.results[engine]!.gbps] as [number, number]),
    })),
  );
  const maxY = Math.max(...series.flatMap((s) => s.points.map((p) => p[1])), 0.001);
  const lo = xs[0]!;
  const hi = xs.length > 1 ? xs[xs.length - 1]! : lo * 2;
  const [left, right] = [M.left, W - M.right];
  const x = (v: number) => left + ((Math.log2(v) - Math.log2(lo)) / (Math.log2(hi) - Math.log2(lo))) * (right - left);
  const step = niceStep(maxY * 1.08, 6);
  const top = Math.ceil((maxY * 1.08) / step) * step;
  const y = (v: number) => H - M.bottom - (v / top) * (H - M.bottom - M.top);
  const yTicks = Array.from({ length: Math.round(top / step) + 1 }, (_, i) => i * step);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const path = (points: [number, number][]) => 'M' + points.map(([px, py]) => `${x(px)},${y(py)}`).join('L');

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(
      `ixfer bench: ${o.op} ${o.initiatorSeg} to ${o.targetSeg}, ` +
        (report.file ? `file engine ${report.file.engine}` : `${o.provider} on ${o.address}`) +
        (byIovs ? `, block ${report.rows[0]!.spec.blockSize} B` : ''),
    )}</text>`,
  );
  // y axis: grid lines and labels
  out.push(`<g class="y-axis">`);
  for (const t of yTicks) {
    out.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${y(t)}" y2="${y(t)}" stroke="#e0e0e0"/>`,
      `<text x="${M.left - 8}" y="${y(t) + 4}" text-anchor="end">${t.toFixed(decimals)}</text>`,
    );
  }
  out.push(
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${H - M.bottom}" stroke="black"/>`,
    `<text transform="translate(18 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">throughput (GB/s, 10^9 bytes per second)</text>`,
    `</g>`,
  );
  // x axis: one tick per measured point, binary units
  out.push(`<g class="x-axis">`, `<line x1="${M.left}" x2="${W - M.right}" y1="${H - M.bottom}" y2="${H - M.bottom}" stroke="black"/>`);
  for (const t of xs) {
    out.push(
      `<line x1="${x(t)}" x2="${x(t)}" y1="${H - M.bottom}" y2="${H - M.bottom + 5}" stroke="black"/>`,
      `<text x="${x(t)}" y="${H - M.bottom + 18}" text-anchor="middle">${esc(byIovs ? String(t) : formatSize(t))}</text>`,
    );
  }
  out.push(
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 14}" text-anchor="middle">${
      byIovs ? 'iovs per block (log scale)' : 'block size (bytes, log scale; K = 1024)'
    }</text>`,
    `</g>`,
  );
  // the data
  for (const s of series) {
    out.push(
      `<path d="${path(s.points)}" fill="none" stroke="${COLORS[s.engine]}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
      ...s.points.map((p) => `<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="${COLORS[s.engine]}"/>`),
    );
  }
  // legend, top left inside the plot
  out.push(`<g class="legend">`);
  series.forEach((s, i) => {
    const ly = M.top + 10 + i * 18;
    out.push(
      `<line x1="${M.left + 12}" x2="${M.left + 40}" y1="${ly}" y2="${ly}" stroke="${COLORS[s.engine]}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
      `<text x="${M.left + 46}" y="${ly + 4}">${esc(s.label)}</text>`,
    );
  });
  out.push(`</g>`, `</svg>`);
  return out.join('\n') + '\n';
}
