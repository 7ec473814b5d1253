/**
 * `ixfer plan` (like NIXL kvbench's plan): from a model's shape, the KV-cache
 * block one transfer descriptor carries and how many a request needs, and the
 * `ixfer bench` command that measures exactly that.
 *
 * Per rank, one token of one layer holds K and V:
 *   2 * ceil(kvHeads / tp) * headDim * dtypeBytes bytes,
 * and a rank holds ceil(layers / pp) layers. A request of inputLength tokens
 * spans ceil(inputLength / tokensPerPage) pages.
 *   access 'block': a page holds all of the rank's layers contiguously;
 *                   one descriptor per page.
 *   access 'layer': each layer's page is its own region; one descriptor per
 *                   (page, layer).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { InvalidParamError } from '../errors.js';
import { runAndReport } from './command.js';
import { parseBenchArgs } from './options.js';

const positive = z.number().int().positive();

const ModelSchema = z
  .object({
    name: z.string().min(1),
    layers: positive,
    kvHeads: positive,
    headDim: positive,
    dtypeBytes: positive,
    tokensPerPage: positive,
    tp: positive.default(1),
    pp: positive.default(1),
    inputLength: positive,
    accessPattern: z.enum(['block', 'layer']).default('block'),
  })
  .strict();
export type Model = z.output<typeof ModelSchema>;

export interface Plan {
  model: Model;
  /** K and V of one token of one layer on one rank. */
  bytesPerTokenLayer: number;
  layersPerRank: number;
  pages: number;
  blockSize: number;
  batchSize: number;
  /** Bytes one request moves per rank. */
  requestBytes: number;
}

export function plan(model: Model): Plan {
  const bytesPerTokenLayer = 2 * Math.ceil(model.kvHeads / model.tp) * model.headDim * model.dtypeBytes;
  const layersPerRank = Math.ceil(model.layers / model.pp);
  const pages = Math.ceil(model.inputLength / model.tokensPerPage);
  const pageLayer = model.tokensPerPage * bytesPerTokenLayer;
  const [blockSize, batchSize] =
    model.accessPattern === 'block' ? [pageLayer * layersPerRank, pages] : [pageLayer, pages * layersPerRank];
  return { model, bytesPerTokenLayer, layersPerRank, pages, blockSize, batchSize, requestBytes: blockSize * batchSize };
}

/** The bench arguments for a plan: one row, one request per iteration. */
function benchArgs(p: Plan, extra: string[]): string[] {
  return [
    '--start-block-size', String(p.blockSize), '--max-block-size', String(p.blockSize),
    '--start-batch-size', String(p.batchSize), '--max-batch-size', String(p.batchSize),
    '--num-iter', '20', '--warmup-iter', '2', '--large-blk-iter-ftr', '1',
    ...extra,
  ];
}

function loadModel(file: string): Model {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InvalidParamError(`cannot read model ${file}: ${(err as Error).message}`);
  }
  const r = ModelSchema.safeParse(json);
  if (r.success) return r.data;
  // Every problem at once, each on its own line with its field, so one edit fixes the file.
  const problems = r.error.issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
  throw new InvalidParamError(`invalid model ${file} (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n${problems.join('\n')}`);
}

const PLAN_HELP = `usage: ixfer plan MODEL.json [--run] [--json] [-- BENCH_OPTIONS]

Reads a model description (examples/models/*.json):
  {"name", "layers", "kvHeads", "headDim", "dtypeBytes", "tokensPerPage",
   "tp", "pp", "inputLength", "accessPattern": "block" | "layer"}
and computes, per rank, the KV block one descriptor carries and the batch (the
descriptors of one request):
  bytes per token and layer = 2 (K, V) * ceil(kvHeads / tp) * headDim * dtypeBytes
  pages = ceil(inputLength / tokensPerPage), layers = ceil(layers / pp)
  block: block = tokensPerPage * layers * that, batch = pages
  layer: block = tokensPerPage * that,          batch = pages * layers
then prints the ixfer bench command for it, or runs it with --run. Options
after -- go to ixfer bench.
`;

export async function planCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { run: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    throw new InvalidParamError((err as Error).message);
  }
  const [file, ...extra] = parsed.positionals;
  if (parsed.values.help || !file) {
    process.stdout.write(PLAN_HELP);
    return parsed.values.help ? 0 : 2;
  }
  const p = plan(loadModel(file));
  const args2 = benchArgs(p, extra);
  const { options } = parseBenchArgs(args2); // refuses bad extra options now, not after the run
  if (parsed.values.run) return runAndReport(options);
  const command = `ixfer bench ${args2.join(' ')}`;
  if (parsed.values.json) {
    process.stdout.write(JSON.stringify({ ...p, command }, null, 2) + '\n');
  } else {
    const m = p.model;
    process.stdout.write(
      `${m.name}: ${m.layers} layers, ${m.kvHeads} KV heads x ${m.headDim}, ${m.dtypeBytes} B, tp ${m.tp}, pp ${m.pp}\n` +
        `  K+V per token and layer per rank  ${p.bytesPerTokenLayer} B\n` +
        `  pages of ${m.tokensPerPage} tokens per request   ${p.pages} (${m.inputLength} tokens)\n` +
        `  access '${m.accessPattern}': block ${p.blockSize} B, batch ${p.batchSize} (${p.requestBytes} B per request per rank)\n\n` +
        `${command}\n`,
    );
  }
  return 0;
}
