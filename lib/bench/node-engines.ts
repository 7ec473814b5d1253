/**
 * The engines run by Node processes: ixfer over the network (an initiator and
 * a target; with a VRAM side, also its DRAM-to-DRAM twin), ixfer to a file
 * (one process), and the net baseline.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { makeError } from '../errors.js';
import type { VramPath } from '../core/memory.js';
import type { RailStatus } from '../net/endpoint.js';
import type { StagingStats } from '../net/engine.js';
import type { CheckedEngine, Engine } from './engine.js';
import type { FileInit } from './file-worker.js';
import type { IxferInit } from './ixfer-worker.js';
import { vramOptions, type BenchOptions, type MemorySegment, type RowSpec } from './options.js';
import { Worker } from './rpc.js';
import type { Timing } from './stats.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** An engine of two worker processes running `script`: an initiator and a target. */
abstract class WorkerPair {
  readonly initiator: Worker;
  readonly target: Worker;

  constructor(script: string, label: string) {
    this.initiator = new Worker(`${label} initiator`, path.join(here, script));
    this.target = new Worker(`${label} target`, path.join(here, script));
  }

  get pids() {
    return { initiator: this.initiator.pid, target: this.target.pid };
  }

  async close(): Promise<void> {
    this.initiator.close();
    this.target.close();
  }

  /** Runs the set-up steps; if one fails, the workers are ended. */
  protected async setUp(steps: () => Promise<void>): Promise<this> {
    try {
      await steps();
    } catch (err) {
      await this.close();
      throw err;
    }
    return this;
  }
}

export class IxferEngine extends WorkerPair implements CheckedEngine {
  /** The paths of the initiator's and the target's regions. */
  paths: { initiator?: VramPath | undefined; target?: VramPath | undefined } = {};

  private constructor(
    readonly name: 'ixfer' | 'dram',
    readonly prepared: boolean,
  ) {
    super('ixfer-worker.js', name);
  }

  /**
   * The engine under test ('ixfer', the segments of the options), or 'dram':
   * the same transfers DRAM to DRAM, the baseline of a run with a VRAM side.
   */
  static start(o: BenchOptions, bytes: number, name: 'ixfer' | 'dram' = 'ixfer'): Promise<IxferEngine> {
    const engine = new IxferEngine(name, o.prepared);
    const seg = (s: BenchOptions['targetSeg']): MemorySegment => (name === 'dram' ? 'DRAM' : (s as MemorySegment));
    const vram = vramOptions(o);
    const init = async (w: Worker, role: IxferInit['role']) => {
      const rails = role === 'target' ? (o.targetRails ?? o.rails) : o.rails;
      const msg: IxferInit = { role, provider: o.provider, address: o.address, bytes, seg: seg(o[`${role}Seg`]), device: o.device[role], vram, rails, sameHost: o.sameHost };
      const r = await w.request<{ metadata: string; addr: number; path?: VramPath }>({ type: 'init', ...msg });
      engine.paths[role] = r.path;
      return r;
    };
    return engine.setUp(async () => {
      const t = await init(engine.target, 'target');
      await init(engine.initiator, 'initiator');
      await engine.initiator.request({ type: 'connect', metadata: t.metadata, addr: t.addr });
    });
  }

  /** Both agents' staging pools. */
  async staging(): Promise<{ initiator: StagingStats; target: StagingStats }> {
    const [initiator, target] = await Promise.all(
      [this.initiator, this.target].map(async (w) => (await w.request<{ stats: StagingStats }>({ type: 'staging' })).stats),
    );
    return { initiator: initiator!, target: target! };
  }

  /** The initiator's rails: which carried the bytes (the shm rail for this host's peer, unless --same-host off). */
  async rails(): Promise<RailStatus[]> {
    return (await this.initiator.request<{ rails: RailStatus[] }>({ type: 'rails' })).rails;
  }

  async warmup(row: RowSpec): Promise<void> {
    await this.initiator.request({ type: 'warmup', row, prepared: this.prepared });
  }

  async run(row: RowSpec): Promise<Timing> {
    return (await this.initiator.request<{ timing: Timing }>({ type: 'run', row, prepared: this.prepared })).timing;
  }

  /** --check-consistency: the source side gets a fresh pattern, the destination another. */
  async fill(row: RowSpec, seed: number): Promise<void> {
    const len = row.blockSize * row.batchSize;
    const [src, dst] = row.op === 'WRITE' ? [this.initiator, this.target] : [this.target, this.initiator];
    await Promise.all([src.request({ type: 'fill', len, seed }), dst.request({ type: 'fill', len, seed: seed + 1 })]);
  }

  async consistent(row: RowSpec): Promise<boolean> {
    const len = row.blockSize * row.batchSize;
    const [a, b] = await Promise.all([this.initiator, this.target].map((w) => w.request<{ hash: string }>({ type: 'hash', len })));
    return a!.hash === b!.hash;
  }
}

/** --target-seg FILE: one agent moving its memory to and from a file it registers. */
export class IxferFileEngine implements CheckedEngine {
  readonly name = 'ixfer';
  private constructor(
    readonly worker: Worker,
    /** A directory of its own in --file-dir, holding the file; removed on close. */
    readonly dir: string,
    readonly file: string,
    /** The engine the file transfers use (FileTransfer.engine), and why. */
    readonly engine: string,
    readonly engineReason: string,
  ) {}

  static async start(o: BenchOptions, bytes: number): Promise<IxferFileEngine> {
    const dir = makeDir(o.fileDir);
    const file = path.join(dir, 'segment.bin');
    const worker = new Worker('ixfer file', path.join(here, 'file-worker.js'));
    try {
      const init: FileInit = {
        seg: o.initiatorSeg as FileInit['seg'],
        device: o.device.initiator,
        bytes,
        path: file,
        engine: o.fileEngine,
        threads: o.fileThreads,
        direct: o.fileDirect,
        provider: o.provider,
        address: o.address,
      };
      const r = await worker.request<{ engine: string; engineReason: string }>({ type: 'init', ...init });
      return new IxferFileEngine(worker, dir, file, r.engine, r.engineReason);
    } catch (err) {
      closeAndRemove(worker, dir);
      throw err;
    }
  }

  get pids() {
    return { initiator: this.worker.pid };
  }

  async warmup(row: RowSpec): Promise<void> {
    await this.worker.request({ type: 'warmup', row });
  }

  async run(row: RowSpec): Promise<Timing> {
    return (await this.worker.request<{ timing: Timing }>({ type: 'run', row })).timing;
  }

  /** --check-consistency: memory and the file's range get different patterns; WRITE's source is memory. */
  async fill(row: RowSpec, seed: number): Promise<void> {
    const len = row.blockSize * row.batchSize;
    const [src, dst] = row.op === 'WRITE' ? ['memory', 'file'] : ['file', 'memory'];
    await this.worker.request({ type: 'fill', side: src, len, seed });
    await this.worker.request({ type: 'fill', side: dst, len, seed: seed + 1 });
  }

  async consistent(row: RowSpec): Promise<boolean> {
    const len = row.blockSize * row.batchSize;
    const hash = async (side: string) => (await this.worker.request<{ hash: string }>({ type: 'hash', side, len })).hash;
    return (await hash('memory')) === (await hash('file'));
  }

  async close(): Promise<void> {
    closeAndRemove(this.worker, this.dir);
  }
}

/** A directory of the run's own in --file-dir. */
function makeDir(parent: string): string {
  try {
    return fs.mkdtempSync(path.join(parent, 'ixfer-bench-'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const code = e.code === 'ENOENT' || e.code === 'ENOTDIR' ? 'ERR_NOT_FOUND' : e.code === 'ENOSPC' ? 'ERR_NO_SPACE' : 'ERR_NOT_ALLOWED';
    throw makeError(code, `--file-dir ${parent}: ${e.message}`);
  }
}

/** Ends the worker and removes the directory (a file still open somewhere goes when its last descriptor closes). */
function closeAndRemove(worker: Worker, dir: string): void {
  worker.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

export class NetEngine extends WorkerPair implements Engine {
  readonly name = 'net';
  private constructor() {
    super('net-worker.js', 'net');
  }

  static start(o: BenchOptions, bytes: number): Promise<NetEngine> {
    const engine = new NetEngine();
    return engine.setUp(async () => {
      const { initiator, target } = engine;
      const init = (w: Worker, role: string) => w.request<{ port?: number }>({ type: 'init', role, op: o.op, address: o.address, bytes });
      const [i, t] = await Promise.all([init(initiator, 'initiator'), init(target, 'target')]);
      const [connector, port] = i.port ? [target, i.port] : [initiator, t.port];
      await connector.request({ type: 'connect', address: o.address, port });
    });
  }

  async warmup(row: RowSpec): Promise<void> {
    await this.target.request({ type: 'row', row });
    await this.initiator.request({ type: 'warmup', row });
  }

  async run(row: RowSpec): Promise<Timing> {
    return (await this.initiator.request<{ timing: Timing }>({ type: 'run', row })).timing;
  }
}
