/** `ixfer bench`: parse options, run the sweep, print and plot the report. */
import fs from 'node:fs';

import { BENCH_HELP, parseBenchArgs, type BenchOptions } from './options.js';
import { formatCsv, formatJson, tableFooter, tableHeader, tableRow } from './output.js';
import { renderPlot } from './plot.js';
import { runBench } from './runner.js';

export async function runAndReport(options: BenchOptions): Promise<number> {
  const table = !options.json && !options.csv;
  // The table streams, a row as it finishes; JSON and CSV are written whole at the end.
  const report = await runBench(
    options,
    table
      ? (partial) => {
          const last = partial.rows.at(-1);
          process.stdout.write(last ? tableRow(partial, last) : tableHeader(partial));
        }
      : undefined,
  );
  process.stdout.write(table ? tableFooter(report) : (options.json ? formatJson : formatCsv)(report));
  if (options.plot) fs.writeFileSync(options.plot, renderPlot(report));
  const failed = report.rows.filter((r) => report.engines.some((e) => r.results[e]!.consistent === false));
  if (failed.length) {
    process.stderr.write(`ixfer bench: consistency check FAILED for ${failed.length} row(s)\n`);
    return 1;
  }
  return 0;
}

export async function benchCommand(args: string[]): Promise<number> {
  const { help, options } = parseBenchArgs(args);
  if (help) {
    process.stdout.write(BENCH_HELP);
    return 0;
  }
  return runAndReport(options);
}
