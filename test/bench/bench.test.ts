import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { cuda } from '../../lib/index.js';
import { cli, root } from '../support/helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-bench-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function ixfer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return ixferEnv(process.env, ...args);
}

function ixferEnv(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { cwd: root, env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Tags open and close in order (a well-formedness check without an XML library). */
function wellFormed(svg: string): boolean {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    if (m[3]) continue;
    if (!m[1]) stack.push(m[2]!);
    else if (stack.pop() !== m[2]) return false;
  }
  return stack.length === 0;
}

const tiny = ['--start-block-size', '4K', '--max-block-size', '8K', '--num-iter', '20', '--warmup-iter', '2'];

interface Measurement {
  gbps: number;
  avgLatUs: number;
  postUs: { avg: number; p99: number };
  txUs: { avg: number; p99: number };
  cpuSecPerGB: { initiator: number; target: number };
  peakRssMB: { initiator: number; target: number };
  consistent?: boolean;
  runsGbps?: number[];
}
interface Report {
  host: { hostname: string; node: string };
  ixfer: string;
  libfabric: string;
  bufferBytes: number;
  engines: string[];
  file?: { engine: string; engineReason: string };
  paths?: { initiator?: string; target?: string };
  staging?: Record<'initiator' | 'target', { poolBytes: number; chunkBytes: number; chunksBusy: number; chunksPeak: number; pieces: number; served: number; serveFailed: number; copiedBytes: number }>;
  rows: { spec: { blockSize: number; batchSize: number; numIovs: number; iters: number }; results: Record<string, Measurement> }[];
}

describe('ixfer bench', () => {
  it('--json with --baseline and --check-consistency: every engine measured, data checked, plot drawn', async () => {
    const plot = path.join(tmp, 'sweep.svg');
    const { code, stdout, stderr } = await ixfer('bench', ...tiny, '--baseline', '--check-consistency', '--json', '--plot', plot);
    expect(code, stderr).toBe(0);
    expect(stderr).toBe(''); // no progress bar without a TTY, and none with --json
    const report = JSON.parse(stdout) as Report;
    expect(report.host.hostname).toBe(os.hostname());
    expect(report.host.node).toBe(process.version);
    expect(report.ixfer).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    expect(report.libfabric).toMatch(/^1\.\d+$/);
    expect(report.engines).toEqual(['ixfer', 'c', 'net']);
    expect(report.bufferBytes).toBe(8192);
    expect(report.rows.map((r) => r.spec.blockSize)).toEqual([4096, 8192]);
    for (const row of report.rows) {
      expect(row.spec.iters).toBe(20);
      for (const engine of report.engines) {
        const m = row.results[engine]!;
        expect(m.gbps, engine).toBeGreaterThan(0);
        expect(m.avgLatUs).toBeGreaterThan(0);
        expect(m.txUs.p99).toBeGreaterThanOrEqual(0);
        expect(m.cpuSecPerGB.initiator).toBeGreaterThan(0);
        expect(m.peakRssMB.initiator).toBeGreaterThan(1);
        expect(m.peakRssMB.target).toBeGreaterThan(1);
      }
      expect(row.results.ixfer!.consistent).toBe(true);
      expect(row.results.c!.consistent).toBe(true); // the C loop's bytes are compared too
    }

    const svg = fs.readFileSync(plot, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(wellFormed(svg)).toBe(true);
    for (const part of ['class="x-axis"', 'class="y-axis"', 'class="legend"', 'GB/s', 'block size', '4K', '8K']) {
      expect(svg).toContain(part);
    }
    for (const label of ['ixfer', 'C on libfabric', 'Node net socket']) expect(svg).toContain(`>${label}</text>`);
    expect(svg.match(/<path /g)).toHaveLength(3);
  });

  it('--csv: READ, prepared transfers, two batch sizes, two iovs per block', async () => {
    const { code, stdout, stderr } = await ixfer(
      'bench', ...tiny, '--op', 'read', '--prepared', '--max-batch-size', '2', '--num-iovs', '2', '--check-consistency', '--csv',
    );
    expect(code, stderr).toBe(0);
    const [head, ...lines] = stdout.trim().split('\n');
    const cols = head!.split(',');
    expect(cols.slice(0, 7)).toEqual(['engine', 'op', 'block_size', 'batch_size', 'num_iovs', 'iters', 'gbps']);
    expect(lines).toHaveLength(4);
    const rows = lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])));
    expect(rows.map((r) => [r.block_size, r.batch_size])).toEqual([['4096', '1'], ['4096', '2'], ['8192', '1'], ['8192', '2']]);
    for (const r of rows) {
      expect(r.op).toBe('READ');
      expect(r.num_iovs).toBe('2');
      expect(Number(r.gbps)).toBeGreaterThan(0);
      expect(Number(r.prep_avg_us)).toBeGreaterThan(0); // makeTransfer, every iteration
      expect(r.consistent).toBe('true');
    }
  });

  it('the table streams row by row; an interrupt keeps the rows so far', async () => {
    // 4 KiB .. 64 MiB: the first row finishes long before the last.
    const args = ['bench', '--start-block-size', '4K', '--max-block-size', '64M', '--num-iter', '20', '--warmup-iter', '2'];
    const child = spawn(process.execPath, [cli, ...args], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.setEncoding('utf8');
    // 'exit', not 'close': a worker caught between fork and exec when the
    // signal came could hold the pipe open; it is killed below.
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: string) => {
        stdout += chunk;
        if (/^4096\s+1\s+\d/m.test(stdout)) resolve();
      });
      child.on('exit', () => reject(new Error(`bench ended before its first row was printed: ${stdout}`)));
    });
    expect(child.exitCode).toBeNull(); // still running: the row came as it finished, not at the end
    // What Ctrl-C does: SIGINT to the foreground process group (the bench and its workers).
    process.kill(-child.pid!, 'SIGINT');
    try {
      expect(await exited).not.toBe(0);
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // the group is gone
      }
    }
    expect(stdout).toMatch(/block \(B\)\s+batch\s+GB\/s/);
    expect(stdout).toMatch(/^4096\s+1\s+\d/m);
    expect(stdout).not.toMatch(/^67108864\s+1\s+\d/m);
  });

  it('the --baseline table fits in 100 columns', async () => {
    const { code, stdout, stderr } = await ixfer('bench', ...tiny, '--baseline', '--check-consistency');
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/block \(B\)\s+batch\s+GB\/s\s+post avg\s+tx p99\s+cpu s\/GB i\s+c GB\/s\s+x c\s+net GB\/s\s+x net\s+check/);
    expect(stdout).toMatch(/^8192\s+1\s+\d.*ok$/m);
    for (const line of stdout.split('\n')) expect(line.length, line).toBeLessThanOrEqual(100);
  });

  it('--repeat 3: every engine runs each row three times, the median run is reported with every run, data checked', async () => {
    const args = ['--start-block-size', '4K', '--max-block-size', '4K', '--num-iter', '10', '--warmup-iter', '1', '--repeat', '3'];
    const { code, stdout, stderr } = await ixfer('bench', ...args, '--baseline', '--check-consistency', '--op', 'read', '--json');
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout) as Report;
    expect(report.engines).toEqual(['ixfer', 'c', 'net']);
    const [row] = report.rows;
    for (const engine of report.engines) {
      const m = row!.results[engine]!;
      expect(m.runsGbps, engine).toHaveLength(3);
      const sorted = [...m.runsGbps!].sort((a, b) => a - b);
      expect(m.gbps, engine).toBe(sorted[1]); // the median run's numbers
      for (const g of m.runsGbps!) expect(g).toBeGreaterThan(0);
    }
    expect(row!.results.ixfer!.consistent).toBe(true);
    expect(row!.results.c!.consistent).toBe(true);

    const table = await ixfer('bench', ...args);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain('each row run 3 times, interleaved: median run shown');
    expect(table.stdout).toMatch(/block \(B\)\s+batch\s+GB\/s\s+spread\s+avg lat/);
    expect(table.stdout).toMatch(/^4096\s+1\s+[\d.]+\s+[\d.]+-[\d.]+\s/m);
  });

  it('the table, and --preset iov-sweep', async () => {
    const table = await ixfer('bench', ...tiny);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/block \(B\)\s+batch\s+GB\/s\s+avg lat\s+prep avg\s+prep p99\s+post avg\s+post p99\s+tx avg\s+tx p99/);
    expect(table.stdout).toMatch(/^4096\s+1\s+\d/m);
    expect(table.stdout).toMatch(/^8192\s+1\s+\d/m);

    const { code, stdout, stderr } = await ixfer('bench', '--preset', 'iov-sweep', '--num-iter', '2', '--warmup-iter', '0', '--json');
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout) as Report;
    expect(report.rows.map((r) => r.spec.numIovs)).toEqual([1, 2, 4, 8, 16, 32, 64, 128]);
    for (const r of report.rows) {
      expect(r.spec.blockSize).toBe(1_179_648);
      expect(r.results.ixfer!.gbps).toBeGreaterThan(0);
    }
  });

  it('--target-seg FILE: DRAM to and from a file, checked, against the C pread/pwrite loop', async () => {
    const common = [...tiny, '--target-seg', 'FILE', '--file-dir', tmp, '--check-consistency', '--baseline'];
    for (const op of ['WRITE', 'READ']) {
      const { code, stdout, stderr } = await ixfer('bench', ...common, '--op', op, '--json');
      expect(code, stderr).toBe(0);
      const report = JSON.parse(stdout) as Report;
      expect(report.engines).toEqual(['ixfer', 'c']); // no net baseline for files
      expect(report.file).toEqual({ engine: 'posix', engineReason: 'auto: host memory moves with pread/pwrite' });
      expect(report.rows.map((r) => r.spec.blockSize)).toEqual([4096, 8192]);
      for (const row of report.rows) {
        for (const engine of report.engines) {
          const m = row.results[engine]!;
          expect(m.gbps, `${op} ${engine}`).toBeGreaterThan(0);
          expect(m.cpuSecPerGB.initiator).toBeGreaterThan(0);
          expect(m.cpuSecPerGB.target).toBeNull(); // one process: no target
        }
        expect(row.results.ixfer!.consistent).toBe(true);
      }
    }
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('ixfer-bench-'))).toEqual([]); // the file is removed

    const table = await ixfer('bench', ...common, '--op', 'READ', '--file-engine', 'posix');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain('READ DRAM -> FILE');
    expect(table.stdout).toContain('file engine posix (posix asked for)');
    expect(table.stdout).toMatch(/c GB\/s\s+x c\s+check$/m);
    expect(table.stdout).not.toContain('net GB/s');
    // With the baseline the table is compact: no t columns (here '-' anyway).
    expect(table.stdout).toMatch(/^8192\s+1\s+\d.*\sok$/m);
    expect(table.stdout).not.toContain('cpu s/GB t');
  });

  // VRAM that is host memory (the shim's IXFER_EMULATE_VRAM): the staged path end to end, on a machine without a GPU.
  const emulated = { ...process.env, IXFER_EMULATE_VRAM: '1' };
  const vramVram = ['--initiator-seg', 'VRAM', '--target-seg', 'VRAM'];

  it('VRAM -> VRAM over tcp (emulated VRAM), READ and WRITE: staged on both sides, checked, with the DRAM -> DRAM and copy-loop rows', async () => {
    for (const op of ['WRITE', 'READ']) {
      const { code, stdout, stderr } = await ixferEnv(emulated, 'bench', ...tiny, ...vramVram, '--check-consistency', '--op', op, '--json');
      expect(code, stderr).toBe(0);
      const report = JSON.parse(stdout) as Report;
      expect(report.engines).toEqual(['ixfer', 'dram', 'cuda']);
      expect(report.paths).toEqual({ initiator: 'staged', target: 'staged' });
      expect(report.rows.map((r) => r.spec.blockSize)).toEqual([4096, 8192]);
      for (const row of report.rows) {
        for (const engine of report.engines) expect(row.results[engine]!.gbps, `${op} ${engine}`).toBeGreaterThan(0);
        expect(row.results.ixfer!.consistent, op).toBe(true);
        expect(row.results.dram!.consistent, op).toBe(true);
        expect(row.results.cuda!.consistent).toBeUndefined(); // one process: nothing to compare
        expect(row.results.cuda!.cpuSecPerGB.target).toBeNull();
      }
      // The initiator staged its own VRAM, the target served staged requests; nothing is held once done.
      const { initiator, target } = report.staging!;
      expect(initiator.pieces, op).toBeGreaterThan(0);
      expect(target.served, op).toBeGreaterThan(0);
      expect(initiator.serveFailed + target.serveFailed).toBe(0);
      expect([initiator.chunksBusy, target.chunksBusy]).toEqual([0, 0]);
    }
  });

  it('DRAM -> VRAM and VRAM -> DRAM: the header names the path of each side, staging flags reach both agents, the table fits', async () => {
    const table = await ixferEnv(emulated, 'bench', ...tiny, '--target-seg', 'VRAM', '--check-consistency');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain('WRITE DRAM -> VRAM');
    expect(table.stdout).toContain('initiator DRAM; target VRAM on device 0, staged');
    expect(table.stdout).toContain('dram = ixfer DRAM -> DRAM');
    expect(table.stdout).toContain('cuda = CUDA copy loop');
    expect(table.stdout).toMatch(/block \(B\)\s+batch\s+GB\/s\s+tx p99\s+cpu s\/GB i\s+dram GB\/s\s+x dram\s+cuda GB\/s\s+x cuda\s+check/);
    expect(table.stdout).toMatch(/^8192\s+1\s+\d.*\sok$/m);
    expect(table.stdout).toMatch(/^staging: initiator .*\n\s+target .*[1-9]\d* peer requests served$/m);
    for (const line of table.stdout.split('\n')) expect(line.length, line).toBeLessThanOrEqual(100);

    const flags = ['--vram-mode', 'staged', '--staging-bytes', '1M', '--staging-chunk-bytes', '64K'];
    const { code, stdout, stderr } = await ixferEnv(
      emulated, 'bench', ...tiny, '--initiator-seg', 'VRAM', '--op', 'READ', ...flags, '--check-consistency', '--json',
    );
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout) as Report;
    expect(report.paths).toEqual({ initiator: 'staged' });
    for (const row of report.rows) expect(row.results.ixfer!.consistent).toBe(true);
    const { initiator } = report.staging!;
    expect(initiator.chunkBytes).toBe(64 << 10);
    expect(initiator.poolBytes).toBeGreaterThan(0);
    expect(initiator.poolBytes).toBeLessThanOrEqual(1 << 20);
    expect(initiator.pieces).toBeGreaterThan(0);
  });

  it('without a CUDA driver, a VRAM side is ERR_LIBRARY_MISSING naming CUDA, before anything runs', async (ctx) => {
    if (cuda.deviceCount() > 0) {
      ctx.skip('a CUDA device is here: run scripts/gpu-vram-bench.sh for VRAM over the network');
      return;
    }
    const env = { ...process.env };
    delete env.IXFER_EMULATE_VRAM;
    for (const side of ['target', 'initiator']) {
      const { code, stdout, stderr } = await ixferEnv(env, 'bench', ...tiny, `--${side}-seg`, 'VRAM');
      expect(code).toBe(1);
      expect(stderr).toMatch(new RegExp(`ERR_LIBRARY_MISSING: ixfer ${side}: --${side}-seg VRAM needs a CUDA device and its driver \\(libcuda\\)`));
      expect(stdout).toBe(''); // no header, no row
    }
  });

  it('refuses bad options with ERR_INVALID_PARAM, and documents the columns', async () => {
    const bad = await ixfer('bench', '--max-block-size', 'lots');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/ERR_INVALID_PARAM.*lots/);
    const order = await ixfer('bench', '--start-block-size', '1M', '--max-block-size', '4K');
    expect(order.stderr).toMatch(/start-block-size is above max-block-size/);
    const repeat = await ixfer('bench', '--repeat', '0');
    expect(repeat.code).toBe(1);
    expect(repeat.stderr).toMatch(/ERR_INVALID_PARAM.*repeat/);
    const device = await ixfer('bench', '--target-seg', 'VRAM', '--device', 'gpu1');
    expect(device.stderr).toMatch(/ERR_INVALID_PARAM.*device: is a CUDA device number, or two/);
    const mode = await ixfer('bench', '--vram-mode', 'staged', '--staging-bytes', '8M');
    expect(mode.code).toBe(1);
    expect(mode.stderr).toMatch(/ERR_INVALID_PARAM: --vram-mode, --staging-bytes: only where a side is VRAM over the network/);
    const pool = await ixfer('bench', '--target-seg', 'VRAM', '--staging-bytes', '1M', '--staging-chunk-bytes', '1M');
    expect(pool.code).toBe(1);
    expect(pool.stderr).toMatch(/ERR_INVALID_PARAM: .*stagingBytes must hold at least two chunks/);
    const file = await ixfer('bench', '--initiator-seg', 'VRAM', '--target-seg', 'FILE', '--staging-chunk-bytes', '1M');
    expect(file.stderr).toMatch(/ERR_INVALID_PARAM: --staging-chunk-bytes: only where a side is VRAM over the network \(not FILE\)/);
    const help = await ixfer('bench', '--help');
    expect(help.code).toBe(0);
    for (const word of ['--baseline', '--repeat', 'spread', '--preset iov-sweep', 'prep', 'post', 'tx', 'p99', 'cpu s/GB', 'rss MB', '--file-dir', '--file-engine', '--device', '--vram-mode', '--staging-bytes', 'cuda']) {
      expect(help.stdout).toContain(word);
    }
  });
});

describe('ixfer plan', () => {
  it('Llama-3.1-8B, block access: one 2 MiB block per 16-token page, 64 pages', async () => {
    const { code, stdout, stderr } = await ixfer('plan', 'examples/models/llama-3.1-8b.json', '--json');
    expect(code, stderr).toBe(0);
    const p = JSON.parse(stdout) as { blockSize: number; batchSize: number; command: string };
    // 16 tokens * 32 layers * (2 * 8 heads * 128 dims * 2 bytes)
    expect(p.blockSize).toBe(16 * 32 * 4096);
    expect(p.blockSize).toBe(2_097_152);
    expect(p.batchSize).toBe(1024 / 16);
    expect(p.command).toContain('--start-block-size 2097152 --max-block-size 2097152 --start-batch-size 64 --max-batch-size 64');
  });

  it('Llama-3.1-70B at tp 4, layer access: one 16 KiB block per page and layer', async () => {
    const { code, stdout, stderr } = await ixfer('plan', 'examples/models/llama-3.1-70b-tp4.json', '--', '--op', 'READ');
    expect(code, stderr).toBe(0);
    // 16 tokens * 2 * (8 / 4 heads) * 128 dims * 2 bytes = 16384; 64 pages * 80 layers
    expect(stdout).toContain('block 16384 B, batch 5120');
    expect(stdout).toMatch(/^ixfer bench .*--start-batch-size 5120 .* --op READ$/m);
  });

  it('refuses a malformed model', async () => {
    const file = path.join(tmp, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ name: 'x', layers: 0, headDim: 'wide' }));
    const { code, stderr } = await ixfer('plan', file);
    expect(code).toBe(1);
    // Every problem at once, the field apart from the file's path.
    expect(stderr).toContain(`ERR_INVALID_PARAM: invalid model ${file} (6 problems):`);
    for (const field of ['layers', 'kvHeads', 'headDim', 'dtypeBytes', 'tokensPerPage', 'inputLength']) {
      expect(stderr).toMatch(new RegExp(`^  ${field}: `, 'm'));
    }
    expect(stderr).not.toContain(`${file}.layers`);
  });
});
