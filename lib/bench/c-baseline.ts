/**
 * The C baseline (bench/fi_rma_baseline.c): compiled on first use with the
 * system's C compiler against libfabric's headers, cached by source hash, and
 * run as two processes that speak a line protocol on stdin/stdout.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import { BackendError, LibraryMissingError } from '../errors.js';
import { packageRoot } from '../native.js';
import type { Engine } from './engine.js';
import type { BenchOptions, RowSpec } from './options.js';
import type { Timing } from './stats.js';

export const C_SOURCE = path.join(packageRoot, 'bench', 'fi_rma_baseline.c');

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

/** Path of the compiled baseline, compiling it (once per source version) with $CC or cc. */
export function baselineBinary(): string {
  const source = fs.readFileSync(C_SOURCE);
  const cc = process.env.CC || 'cc';
  const key = crypto.createHash('sha256').update(source).update(cc).digest('hex').slice(0, 16);
  const bin = path.join(cacheDir(), `fi_rma_baseline-${key}`);
  if (fs.existsSync(bin)) return bin;
  const tmp = `${bin}.${process.pid}.tmp`;
  const r = spawnSync(cc, ['-O2', '-std=gnu11', '-o', tmp, C_SOURCE, '-lfabric', '-lpthread'], { encoding: 'utf8' });
  if (r.error) {
    throw new LibraryMissingError(
      `--baseline needs a C compiler to build ${C_SOURCE}: '${cc}' could not be run (${r.error.message}); ` +
        `install one (apt-get install gcc) or set CC`,
    );
  }
  if (r.status !== 0) {
    const noHeaders = /rdma\/\w+\.h|-lfabric/.test(r.stderr);
    throw new LibraryMissingError(
      noHeaders
        ? `--baseline needs libfabric's headers and library to build ${C_SOURCE}: apt-get install libfabric-dev\n${r.stderr}`
        : `compiling ${C_SOURCE} failed:\n${r.stderr}`,
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
    this.proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
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

export class CEngine implements Engine {
  readonly name = 'c';
  private constructor(
    readonly initiator: LineProcess,
    readonly target: LineProcess,
  ) {}

  static async start(o: BenchOptions, bytes: number): Promise<CEngine> {
    const bin = baselineBinary();
    const common = [o.provider, o.address, String(bytes)];
    const target = new LineProcess('target', bin, ['target', ...common]);
    let initiator: LineProcess | undefined;
    try {
      const [, addr, key, base] = await target.line();
      initiator = new LineProcess('initiator', bin, ['initiator', ...common, addr!, key!, base!]);
      await initiator.line();
      return new CEngine(initiator, target);
    } catch (err) {
      initiator?.close();
      target.close();
      throw err;
    }
  }

  get pids() {
    return { initiator: this.initiator.proc.pid!, target: this.target.proc.pid! };
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

  async close(): Promise<void> {
    this.initiator.close();
    this.target.close();
  }
}
