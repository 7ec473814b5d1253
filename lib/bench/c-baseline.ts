/**
 * The C baselines, compiled on first use with the system's C compiler, cached
 * by source hash, and run as processes that speak a line protocol on
 * stdin/stdout: bench/fi_rma_baseline.c (an initiator and a target on
 * libfabric), for --target-seg FILE bench/file_baseline.c (one process, a
 * pread/pwrite loop on the bench's file), and where a side is VRAM
 * bench/cuda_copy_baseline.c (one process, the host<->device copies).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import { BackendError, LibraryMissingError } from '../errors.js';
import { packageRoot } from '../native/shim.js';
import type { CheckedEngine } from './engine.js';
import type { BenchOptions, RowSpec } from './options.js';
import type { Timing } from './stats.js';

/** A baseline's source, what it links with, and what to install when that is missing. */
interface CProgram {
  name: string;
  libs: string[];
  missing?: { stderr: RegExp; hint: string };
}

const RMA_BASELINE: CProgram = {
  name: 'fi_rma_baseline',
  libs: ['-lfabric', '-lpthread'],
  missing: { stderr: /rdma\/\w+\.h|-lfabric/, hint: "libfabric's headers and library: apt-get install libfabric-dev" },
};
const FILE_BASELINE: CProgram = { name: 'file_baseline', libs: [] };
const COPY_BASELINE: CProgram = { name: 'cuda_copy_baseline', libs: ['-ldl'] };

/** node_modules/.cache/ixfer of the project (an installed ixfer's enclosing node_modules), else the temp dir. */
function cacheDir(): string {
  const parts = packageRoot.split(path.sep);
  const i = parts.lastIndexOf('node_modules');
  const modules = i >= 0 ? parts.slice(0, i + 1).join(path.sep) : path.join(packageRoot, 'node_modules');
  for (const dir of [path.join(modules, '.cache', 'ixfer'), path.join(os.tmpdir(), 'ixfer-cache')]) {
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.accessSync(dir, fs.constants.W_OK);
      return dir;
    } catch {
      // read-only install: try the next place
    }
  }
  throw new BackendError('no writable cache directory for the C baseline');
}

/** Path of the compiled program, compiling bench/<name>.c (once per version of it and bench_stats.h) with $CC or cc. */
function baselineBinary(program: CProgram): string {
  const file = path.join(packageRoot, 'bench', `${program.name}.c`);
  const cc = process.env.CC || 'cc';
  const hash = crypto.createHash('sha256').update(cc);
  for (const f of [file, path.join(packageRoot, 'bench', 'bench_stats.h')]) hash.update(fs.readFileSync(f));
  const key = hash.digest('hex').slice(0, 16);
  const bin = path.join(cacheDir(), `${program.name}-${key}`);
  if (fs.existsSync(bin)) return bin;
  const tmp = `${bin}.${process.pid}.tmp`;
  const r = spawnSync(cc, ['-O2', '-std=gnu11', '-o', tmp, file, ...program.libs], { encoding: 'utf8' });
  if (r.error) {
    throw new LibraryMissingError(
      `--baseline needs a C compiler to build ${file}: '${cc}' could not be run (${r.error.message}); ` +
        `install one (apt-get install gcc) or set CC`,
    );
  }
  if (r.status !== 0) {
    const missing = program.missing?.stderr.test(r.stderr) ? program.missing.hint : undefined;
    throw new LibraryMissingError(
      missing ? `--baseline cannot build ${file} without ${missing}\n${r.stderr}` : `compiling ${file} failed:\n${r.stderr}`,
    );
  }
  fs.renameSync(tmp, bin); // atomic: concurrent runs see a whole file or none
  return bin;
}

/** One baseline process: write a command line, read one answer line. */
class LineProcess {
  readonly proc: ChildProcess;
  #lines: AsyncIterator<string>;
  constructor(
    readonly label: string,
    bin: string,
    args: string[],
  ) {
    // The libfabric ixfer loads (IXFER_LIBFABRIC_SO), so that both sides compare like with like.
    const so = process.env.IXFER_LIBFABRIC_SO;
    const env = so?.includes('/')
      ? { ...process.env, LD_LIBRARY_PATH: [path.dirname(so), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') }
      : process.env;
    this.proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'], env });
    this.proc.stdin!.on('error', () => {});
    this.#lines = readline.createInterface({ input: this.proc.stdout! })[Symbol.asyncIterator]();
  }

  async line(command?: string): Promise<string[]> {
    if (command) this.proc.stdin!.write(command + '\n');
    const next = await this.#lines.next();
    if (next.done) throw new BackendError(`the C baseline's ${this.label} ended (exit ${this.proc.exitCode ?? 'signal'})`);
    return next.value.split(' ');
  }

  /** Ends its input, which ends it; kills it if it has not exited within 5 s. */
  close(): void {
    this.proc.stdin!.end();
    setTimeout(() => {
      if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    }, 5000).unref();
  }
}

/**
 * A C baseline: the RMA loop's initiator and target, or the file loop's one
 * process (no target; its columns show '-').
 */
export class CEngine implements CheckedEngine {
  private constructor(
    readonly name: 'c' | 'cuda',
    readonly initiator: LineProcess,
    readonly target?: LineProcess,
  ) {}

  static async start(o: BenchOptions, bytes: number): Promise<CEngine> {
    const bin = baselineBinary(RMA_BASELINE);
    const common = [o.provider, o.address, String(bytes)];
    const target = new LineProcess('target', bin, ['target', ...common]);
    let initiator: LineProcess | undefined;
    try {
      const [, addr, key, base] = await target.line();
      initiator = new LineProcess('initiator', bin, ['initiator', ...common, addr!, key!, base!]);
      await initiator.line();
      return new CEngine('c', initiator, target);
    } catch (err) {
      initiator?.close();
      target.close();
      throw err;
    }
  }

  /** The pread/pwrite loop on file (of bytes bytes, written by the ixfer file engine). */
  static startFile(o: BenchOptions, bytes: number, file: string): Promise<CEngine> {
    return CEngine.#startOne('c', new LineProcess('file loop', baselineBinary(FILE_BASELINE), [file, String(bytes), o.fileDirect ? '1' : '0']));
  }

  /** The CUDA copy loop: bytes of device memory on each VRAM side's device, and pinned host memory. */
  static startCopy(o: BenchOptions, bytes: number): Promise<CEngine> {
    const dev = (seg: BenchOptions['targetSeg'], d: number) => String(seg === 'VRAM' ? d : -1);
    const args = [String(bytes), dev(o.initiatorSeg, o.device.initiator), dev(o.targetSeg, o.device.target)];
    return CEngine.#startOne('cuda', new LineProcess('CUDA copy loop', baselineBinary(COPY_BASELINE), args));
  }

  static async #startOne(name: CEngine['name'], proc: LineProcess): Promise<CEngine> {
    try {
      await proc.line();
      return new CEngine(name, proc);
    } catch (err) {
      proc.close();
      throw err;
    }
  }

  get pids() {
    return { initiator: this.initiator.proc.pid!, target: this.target?.proc.pid };
  }

  #command(verb: string, row: RowSpec, iters: number): string {
    return `${verb} ${row.op} ${row.blockSize} ${row.batchSize} ${row.numIovs} ${iters}`;
  }

  async warmup(row: RowSpec): Promise<void> {
    await this.initiator.line(this.#command('warmup', row, row.warmup));
  }

  async run(row: RowSpec): Promise<Timing> {
    const [, total, postAvg, postP99, txAvg, txP99] = (await this.initiator.line(this.#command('run', row, row.iters))).map(Number);
    const us = (ns: number | undefined) => ns! / 1000;
    return {
      totalUs: us(total),
      prep: { avg: 0, p99: 0 },
      post: { avg: us(postAvg), p99: us(postP99) },
      tx: { avg: us(txAvg), p99: us(txP99) },
    };
  }

  /** --check-consistency (the RMA loop only): the source gets the pattern of seed, the destination another. */
  async fill(row: RowSpec, seed: number): Promise<void> {
    const len = row.blockSize * row.batchSize;
    const [src, dst] = row.op === 'WRITE' ? [this.initiator, this.target!] : [this.target!, this.initiator];
    await Promise.all([src.line(`fill ${seed} ${len}`), dst.line(`fill ${seed + 1} ${len}`)]);
  }

  /** Whether the row's bytes hash alike on both sides (FNV-1a, computed by the C processes). */
  async consistent(row: RowSpec): Promise<boolean> {
    const len = row.blockSize * row.batchSize;
    const [a, b] = await Promise.all([this.initiator.line(`sum ${len}`), this.target!.line(`sum ${len}`)]);
    return a[1] === b[1];
  }

  /** Whether fill and consistent apply: the file loop has no second side to compare. */
  get checked(): boolean {
    return this.target !== undefined;
  }

  async close(): Promise<void> {
    this.initiator.close();
    this.target?.close();
  }
}
