/**
 * `ixfer bench` options: nixlbench's names (kebab-case), parsed from argv and
 * validated with zod, plus the sweep they describe (one row per block size,
 * batch size and iov count).
 */
import os from 'node:os';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { InvalidParamError, NotSupportedError } from '../errors.js';
import { MAX_RAILS, parse, VramOptionsSchema } from '../schemas.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Before the first row, the JavaScript engines (ixfer, its dram twin, Node net)
 * run this many unmeasured transfers of at most JIT_BLOCK bytes: measured while
 * V8 still compiles the loop, the first rows would show start-up, not what a
 * long-running server gets (4 KiB rows on the H200, ixfer / C: 0.67-0.71 after
 * nixlbench's 100 warm-up transfers, 0.84-0.85 after 3,000). The C programs need none.
 */
export const JIT_WARMUP = 2000;
export const JIT_BLOCK = 64 * 1024;

/** nixlbench's LARGE_BLOCK_SIZE: blocks above it run num-iter / large-blk-iter-ftr times. */
const LARGE_BLOCK = MiB;
/** The block of `--preset iov-sweep` (the KV layout published for Slingshot). */
const IOV_SWEEP_BLOCK = 1_179_648;

const UNITS: Record<string, number> = { '': 1, k: KiB, m: MiB, g: 1024 * MiB };

/** "4096", "4K", "4KiB", "64M", "1G": binary units. */
function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmg]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new InvalidParamError(`'${text}' is not a size (e.g. 4096, 4K, 64M, 1G)`);
  return Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
}

export function formatSize(bytes: number): string {
  for (const [unit, n] of [['G', 1024 * MiB], ['M', MiB], ['K', KiB]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return String(bytes);
}

const size = z.union([z.number(), z.string().transform((s) => parseSize(s))]).pipe(z.number().int().positive());
const count = z.union([z.number(), z.string().transform(Number)]).pipe(z.number().int().positive());
const countOrZero = z.union([z.number(), z.string().transform(Number)]).pipe(z.number().int().nonnegative());

/**
 * What a side transfers from or to: over the network DRAM or VRAM on each
 * side; with --target-seg FILE one process moves its memory (DRAM or VRAM) to
 * and from a file (checkSegments says which pairs are measured).
 */
const SegmentSchema = z.enum(['DRAM', 'VRAM', 'FILE']);
type Segment = z.infer<typeof SegmentSchema>;
/** The memory kinds of an agent (the initiator's side with FILE). */
export type MemorySegment = Exclude<Segment, 'FILE'>;

/** --device: "N" for both sides, or "I,T": the CUDA devices of the initiator and the target. */
const DevicesSchema = z
  .union([z.number().int().nonnegative().transform(String), z.string()])
  .pipe(z.string().regex(/^\d+(,\d+)?$/, 'is a CUDA device number, or two (initiator,target) like 0,1'))
  .transform((s) => {
    const [i, t = i] = s.split(',').map(Number);
    return { initiator: i!, target: t! };
  });

const BenchOptionsSchema = z
  .object({
    op: z.enum(['READ', 'WRITE']).default('WRITE'),
    initiatorSeg: SegmentSchema.default('DRAM'),
    targetSeg: SegmentSchema.default('DRAM'),
    startBlockSize: size.default(4 * KiB),
    maxBlockSize: size.default(64 * MiB),
    startBatchSize: count.default(1),
    maxBatchSize: count.default(1),
    numIovs: count.default(1),
    numIter: count.default(1000),
    warmupIter: countOrZero.default(100),
    /** Runs of each row, interleaved across engines; the table shows the median run. */
    repeat: count.default(1),
    largeBlkIterFtr: count.default(16),
    prepared: z.boolean().default(false),
    checkConsistency: z.boolean().default(false),
    provider: z.string().min(1).default('tcp'),
    /** Where both sides bind; loopback unless said otherwise. */
    address: z.string().min(1).default('127.0.0.1'),
    /** ixfer's rails on the initiator, and on the target (default: as many); the C baseline has one. */
    rails: count.pipe(z.number().max(MAX_RAILS)).default(1),
    targetRails: count.pipe(z.number().max(MAX_RAILS)).optional(),
    /** Both agents' sameHost: the two bench processes are on one host, so 'auto' puts ixfer's bytes on shm where it works. */
    sameHost: z.enum(['auto', 'shm', 'off']).default('auto'),
    /** Registered per side; default: the largest batch of the sweep. */
    totalBufferSize: size.optional(),
    baseline: z.boolean().default(false),
    /** --target-seg FILE: directory of the file (default the OS temp dir), engine, threads, O_DIRECT. */
    fileDir: z.string().min(1).default(os.tmpdir()),
    fileEngine: z.enum(['auto', 'posix', 'gds', 'gds_mt']).default('auto'),
    fileThreads: count.default(4),
    fileDirect: z.boolean().default(false),
    /** VRAM sides: their CUDA devices, and the agents' vram options (both agents, every ixfer engine). */
    device: DevicesSchema.default({ initiator: 0, target: 0 }),
    vramMode: z.enum(['auto', 'staged', 'gpudirect']).optional(),
    stagingBytes: size.optional(),
    stagingChunkBytes: size.optional(),
    preset: z.enum(['iov-sweep']).optional(),
    json: z.boolean().default(false),
    csv: z.boolean().default(false),
    plot: z.string().min(1).optional(),
  })
  .strict()
  .refine((o) => o.startBlockSize <= o.maxBlockSize, { message: 'start-block-size is above max-block-size', path: ['startBlockSize'] })
  .refine((o) => o.startBatchSize <= o.maxBatchSize, { message: 'start-batch-size is above max-batch-size', path: ['startBatchSize'] })
  .refine((o) => !(o.json && o.csv), { message: '--json and --csv exclude each other', path: ['csv'] });
export type BenchOptions = z.output<typeof BenchOptionsSchema>;

/** One measurement point of the sweep. */
export interface RowSpec {
  op: 'READ' | 'WRITE';
  blockSize: number;
  batchSize: number;
  numIovs: number;
  iters: number;
  warmup: number;
}

function doublings(from: number, to: number): number[] {
  const out: number[] = [];
  for (let v = from; v <= to; v *= 2) out.push(v);
  return out;
}

/** The rows of the sweep, in order: block sizes outer, batch sizes inner. */
export function sweep(o: BenchOptions): RowSpec[] {
  const blocks = o.preset === 'iov-sweep' ? [IOV_SWEEP_BLOCK] : doublings(o.startBlockSize, o.maxBlockSize);
  const iovs = o.preset === 'iov-sweep' ? doublings(1, 128) : [o.numIovs];
  const rows: RowSpec[] = [];
  for (const blockSize of blocks) {
    for (const batchSize of doublings(o.startBatchSize, o.maxBatchSize)) {
      for (const numIovs of iovs) {
        if (numIovs > blockSize) throw new InvalidParamError(`num-iovs ${numIovs} is more than the block's ${blockSize} bytes`);
        const ftr = blockSize > LARGE_BLOCK ? o.largeBlkIterFtr : 1;
        rows.push({
          op: o.op,
          blockSize,
          batchSize,
          numIovs,
          iters: Math.max(1, Math.floor(o.numIter / ftr)),
          warmup: Math.floor(o.warmupIter / ftr),
        });
      }
    }
  }
  return rows;
}

/** Bytes each side registers: --total-buffer-size, or the largest batch of the sweep. */
export function bufferSize(o: BenchOptions, rows: RowSpec[]): number {
  const need = Math.max(...rows.map((r) => r.blockSize * r.batchSize));
  const size = o.totalBufferSize ?? need;
  if (size < need) {
    throw new InvalidParamError(`total-buffer-size ${size} is smaller than the largest batch (${need} bytes)`);
  }
  return size;
}

const FLAGS = {
  op: { type: 'string' },
  'initiator-seg': { type: 'string' },
  'target-seg': { type: 'string' },
  'start-block-size': { type: 'string' },
  'max-block-size': { type: 'string' },
  'start-batch-size': { type: 'string' },
  'max-batch-size': { type: 'string' },
  'num-iovs': { type: 'string' },
  'num-iter': { type: 'string' },
  'warmup-iter': { type: 'string' },
  repeat: { type: 'string' },
  'large-blk-iter-ftr': { type: 'string' },
  prepared: { type: 'boolean' },
  'check-consistency': { type: 'boolean' },
  provider: { type: 'string' },
  address: { type: 'string' },
  rails: { type: 'string' },
  'target-rails': { type: 'string' },
  'same-host': { type: 'string' },
  'total-buffer-size': { type: 'string' },
  baseline: { type: 'boolean' },
  'file-dir': { type: 'string' },
  'file-engine': { type: 'string' },
  'file-threads': { type: 'string' },
  'file-direct': { type: 'boolean' },
  device: { type: 'string' },
  'vram-mode': { type: 'string' },
  'staging-bytes': { type: 'string' },
  'staging-chunk-bytes': { type: 'string' },
  preset: { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  plot: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const camel = (s: string) => s.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());

/** argv to options; `help: true` when --help was given. */
export function parseBenchArgs(args: string[]): { help: boolean; options: BenchOptions } {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options: FLAGS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new InvalidParamError((err as Error).message);
  }
  const { help, ...rest } = values;
  const input = Object.fromEntries(Object.entries(rest).map(([k, v]) => [camel(k), v]));
  if (typeof input.op === 'string') input.op = input.op.toUpperCase();
  if (typeof input.initiatorSeg === 'string') input.initiatorSeg = input.initiatorSeg.toUpperCase();
  if (typeof input.targetSeg === 'string') input.targetSeg = input.targetSeg.toUpperCase();
  if (typeof input.fileEngine === 'string') input.fileEngine = input.fileEngine.toLowerCase();
  if (typeof input.vramMode === 'string') input.vramMode = input.vramMode.toLowerCase();
  const options = parse(BenchOptionsSchema, input, 'bench options');
  if (help !== true) checkSegments(options);
  return { help: help === true, options };
}

export const BENCH_HELP = `usage: ixfer bench [options]

Starts an initiator and a target agent in two processes (tcp on 127.0.0.1 by
default), registers --total-buffer-size bytes on each side, and for each block
size (doubling) and batch size (doubling) runs --warmup-iter, then --num-iter
iterations. One iteration is one transfer of <batch> blocks (each block cut
into --num-iovs descriptors), posted and awaited; one is in flight at a time.

Where a side is VRAM (allocateVram on --device), each row is also run, in
turn, DRAM to DRAM by ixfer (same provider, sizes and agent options) and by a
C loop of the host<->device copies a staged transfer makes (cuMemcpyDtoH of
the source, cuMemcpyHtoD into the destination, through pinned host memory,
no network): the dram and cuda columns. The header says which path each VRAM
region takes (gpudirect: the provider moves device memory; staged: through
the agents' host bounce buffers).

With --target-seg FILE there is one process: its agent registers
--total-buffer-size bytes of memory (--initiator-seg DRAM or VRAM) and a file
of that size in --file-dir (written in full before the first row, removed at
the end), and each iteration is one file transfer of <batch> blocks: WRITE
moves memory to the file, READ the file to memory, block b at offset
b * block on both. The header names the file engine used and why.

options (nixlbench's names):
  --op READ|WRITE             operation, initiator's view (default WRITE)
  --initiator-seg DRAM|VRAM   memory of the initiator (default DRAM)
  --target-seg DRAM|VRAM|FILE memory of the target, or a file (default DRAM)
  --device N | I,T            CUDA device of the VRAM sides: both, or initiator
                              and target (default 0)
  --vram-mode auto|staged|gpudirect
                              both agents' vram.mode (default: the agent's, auto)
  --staging-bytes N           both agents' vram.stagingBytes (staging pool)
  --staging-chunk-bytes N     both agents' vram.stagingChunkBytes
  --start-block-size N        first block size (default 4K; K, M, G suffixes)
  --max-block-size N          last block size (default 64M)
  --start-batch-size N        first batch size (default 1)
  --max-batch-size N          last batch size (default 1)
  --num-iovs N                descriptors per block (default 1)
  --num-iter N                measured iterations per row (default 1000)
  --warmup-iter N             unmeasured iterations before them (default 100)
  --large-blk-iter-ftr N      blocks over 1M run num-iter/N, warmup-iter/N (default 16)
  --repeat N                  run each row N times, every engine in turn each time
                              (default 1); each engine's columns show its median
                              run by GB/s (for even N the lower middle one), the
                              spread column the lowest and highest GB/s, and the
                              ratios are ratios of medians
  --prepared                  prepare descriptor lists once, make each iteration's
                              transfer from indices (makeTransfer); default: one
                              transfer per row (createTransfer), posted again and again
  --check-consistency         fill the source with a pattern per row and compare
                              SHA-256 of source and destination after the row
  --provider NAME             libfabric provider (default tcp)
  --address ADDR              address both sides bind (default 127.0.0.1)
  --rails N                   ixfer's rails (endpoints) on the initiator (default 1);
                              the C baseline keeps one, for comparison
  --target-rails N            ixfer's rails on the target (default: --rails)
  --same-host auto|shm|off    both agents' sameHost (default auto: where libfabric's
                              shm works, an shm rail carries the bytes between the two
                              bench processes; off: the network rails only); the
                              table's footer says which rails carried them
  --total-buffer-size N       bytes registered per side (default: largest batch)
  --baseline                  also run, row by row, a C program doing the same RMA
                              loop on libfabric, and a Node net socket stream; adds
                              ixfer/baseline ratio columns; with FILE, a C
                              pread/pwrite loop (one thread) on the same file
  --file-dir DIR              FILE: directory of the file (default the OS temp dir)
  --file-engine auto|posix|gds|gds_mt
                              FILE: engine of the transfers (default auto)
  --file-threads N            FILE: I/O threads of the file engine (default 4)
  --file-direct               FILE: open the file with O_DIRECT (in the C loop too)
  --preset iov-sweep          block 1179648 bytes, 1, 2, 4, ... 128 iovs per block
  --json | --csv              machine-readable output on stdout (no progress line)
  --plot FILE.svg             GB/s against block size, one line per engine

columns (nixlbench's definitions; times in microseconds):
  GB/s        block * batch * iterations / measured time, 10^9 bytes
  avg lat     measured time / (iterations * batch): time per block
  prep        time to build the transfer: createTransfer, once per row (one
              sample); with --prepared makeTransfer, every iteration
  post        time of the post() call (handing the transfer to the engine)
  tx          from post() returning to the transfer's completion
  avg, p99    mean, and the sample at floor(n * 0.99) of the sorted samples
  cpu s/GB    CPU seconds (user + system, all threads) per 10^9 bytes moved,
              initiator (i) and target (t), measured iterations only; with
              FILE the one process is in i (its I/O threads included), t is -
  rss MB      peak resident memory of each process during the row (MiB)
  spread      --repeat N > 1: lowest-highest GB/s of ixfer's N runs
  dram, cuda  VRAM: ixfer DRAM -> DRAM and the CUDA copy loop's GB/s, and
              ixfer's ratio to them
  C, net      the baselines' GB/s, and ixfer's ratio to them
  check       --check-consistency: ok when every checked engine's data matched
              in every run (dram and the C RMA loop are checked too; the C
              file loop and the CUDA copy loop not)
`;

/**
 * Refuses, before anything starts, the segment pairs that are not measured:
 * ixfer measures DRAM or VRAM on either side over the network, and DRAM or
 * VRAM to and from a file in one process (--target-seg FILE).
 */
function checkSegments(o: BenchOptions): void {
  const pair = `--initiator-seg ${o.initiatorSeg} --target-seg ${o.targetSeg}`;
  if (o.initiatorSeg === 'FILE') {
    throw new NotSupportedError(`${pair}: FILE is a target segment (the initiator's memory moves to and from it)`);
  }
  if (o.targetSeg === 'FILE' && o.prepared) {
    throw new NotSupportedError('--prepared: file transfers have no prepared descriptor lists');
  }
  const flags = (keys: string[]) => keys.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
  const network = (['vramMode', 'stagingBytes', 'stagingChunkBytes'] as const).filter((k) => o[k] !== undefined);
  if (network.length && !(hasVram(o) && o.targetSeg !== 'FILE')) {
    throw new InvalidParamError(`${flags(network)}: only where a side is VRAM over the network (not FILE)`);
  }
  if ((o.device.initiator !== 0 || o.device.target !== 0) && !hasVram(o)) {
    throw new InvalidParamError('--device: only where a side is VRAM');
  }
  vramOptions(o); // refused now (a pool of fewer than two chunks), not by each agent later
}

/** The agents' vram options (AgentOptions.vram), defaults filled in. */
export function vramOptions(o: BenchOptions): z.output<typeof VramOptionsSchema> {
  const given = { mode: o.vramMode, stagingBytes: o.stagingBytes, stagingChunkBytes: o.stagingChunkBytes };
  return parse(VramOptionsSchema, given, 'bench vram options (--vram-mode, --staging-bytes, --staging-chunk-bytes)');
}

/** Whether a side of the run is device memory. */
export function hasVram(o: Pick<BenchOptions, 'initiatorSeg' | 'targetSeg'>): boolean {
  return o.initiatorSeg === 'VRAM' || o.targetSeg === 'VRAM';
}
