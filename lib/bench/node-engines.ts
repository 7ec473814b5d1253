/** The engines whose two sides are Node processes: ixfer itself, and the net baseline. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Engine } from './engine.js';
import type { BenchOptions, RowSpec } from './options.js';
import { Worker } from './rpc.js';
import type { Timing } from './stats.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function workers(script: string, label: string): { initiator: Worker; target: Worker } {
  return {
    initiator: new Worker(`${label} initiator`, path.join(here, script)),
    target: new Worker(`${label} target`, path.join(here, script)),
  };
}

export class IxferEngine implements Engine {
  readonly name = 'ixfer';
  private constructor(
    readonly initiator: Worker,
    readonly target: Worker,
    readonly prepared: boolean,
  ) {}

  static async start(o: BenchOptions, bytes: number): Promise<IxferEngine> {
    const { initiator, target } = workers('ixfer-worker.js', 'ixfer');
    const engine = new IxferEngine(initiator, target, o.prepared);
    try {
      const common = { provider: o.provider, address: o.address, bytes };
      const t = await target.request({ type: 'init', role: 'target', seg: o.targetSeg, ...common });
      await initiator.request({ type: 'init', role: 'initiator', seg: o.initiatorSeg, ...common });
      await initiator.request({ type: 'connect', metadata: t.metadata, addr: t.addr });
    } catch (err) {
      await engine.close();
      throw err;
    }
    return engine;
  }

  get pids() {
    return { initiator: this.initiator.pid, target: this.target.pid };
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

  async close(): Promise<void> {
    this.initiator.close();
    this.target.close();
  }
}

export class NetEngine implements Engine {
  readonly name = 'net';
  private constructor(
    readonly initiator: Worker,
    readonly target: Worker,
  ) {}

  static async start(o: BenchOptions, bytes: number): Promise<NetEngine> {
    const { initiator, target } = workers('net-worker.js', 'net');
    const engine = new NetEngine(initiator, target);
    try {
      const init = (w: Worker, role: string) => w.request<{ port?: number }>({ type: 'init', role, op: o.op, address: o.address, bytes });
      const [i, t] = await Promise.all([init(initiator, 'initiator'), init(target, 'target')]);
      const [connector, port] = i.port ? [target, i.port] : [initiator, t.port];
      await connector.request({ type: 'connect', address: o.address, port });
    } catch (err) {
      await engine.close();
      throw err;
    }
    return engine;
  }

  get pids() {
    return { initiator: this.initiator.pid, target: this.target.pid };
  }

  async warmup(row: RowSpec): Promise<void> {
    await this.target.request({ type: 'row', row });
    await this.initiator.request({ type: 'warmup', row });
  }

  async run(row: RowSpec): Promise<Timing> {
    return (await this.initiator.request<{ timing: Timing }>({ type: 'run', row })).timing;
  }

  async close(): Promise<void> {
    this.initiator.close();
    this.target.close();
  }
}
