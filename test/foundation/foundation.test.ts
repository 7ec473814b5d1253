import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

import koffi from 'koffi';
import { describe, expect, it } from 'vitest';

import { codeOfStatus, ErrorCodes, info, IxferError, makeError, TimeoutError } from '../../lib/index.js';
import { cli, root } from '../support/helpers.js';

const require = createRequire(import.meta.url);
const { sourceHash } = require(path.join(root, 'scripts', 'source-hash.cjs')) as { sourceHash(root: string): string };

function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
}

describe('ixfer info', () => {
  it('lists tcp;ofi_rxm on loopback with the attributes that matter', () => {
    const report = info();
    expect(report.shim.abi).toBe(4);
    expect(report.libfabric.available).toBe(true);
    expect(report.libfabric.version).toMatch(/^1\.\d+$/);
    const tcp = report.libfabric.providers.find((p) => p.name === 'tcp;ofi_rxm' && p.domain === 'lo');
    expect(tcp).toBeDefined();
    expect(tcp!.iovLimit).toBeGreaterThanOrEqual(1);
    expect(tcp!.injectSize).toBeGreaterThan(0);
    expect(tcp!.cqDataSize).toBeGreaterThanOrEqual(4);
    expect(['manual', 'auto']).toContain(tcp!.dataProgress);
    expect(tcp!.hmem).toBe(false);
  });

  it('prints a table, and JSON with --json', () => {
    const table = runCli(['info']);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/tcp;ofi_rxm\s+lo\s/);
    const json = runCli(['info', '--json']);
    expect(json.status).toBe(0);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.libfabric.providers.some((p: { name: string }) => p.name === 'tcp;ofi_rxm')).toBe(true);
    // 64-bit attributes exactly: tcp reports SIZE_MAX, which a double would print as 18446744073709552000.
    const tcp = parsed.libfabric.providers.find((p: { name: string }) => p.name === 'tcp;ofi_rxm');
    expect(BigInt(tcp.maxMsgSize)).toBeGreaterThan(0n);
    expect(json.stdout).not.toContain('18446744073709552000');
    expect(json.stdout).toMatch(/"maxMsgSize": "\d+"/);
    // Where the report comes from.
    expect(parsed.ixfer).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    expect(parsed.host.hostname).toBe(os.hostname());
    expect(parsed.host.node).toBe(process.version);
    expect(parsed.libfabric.version).toMatch(/^1\.\d+$/);
  });

  it('lists the rails an agent would open: one per interface for auto, a count with --rails N', () => {
    const auto = JSON.parse(runCli(['info', '--json']).stdout).libfabric.rails;
    expect(auto.asked).toBe('auto');
    const domains = auto.rails.map((r: { domain: string }) => r.domain);
    expect(domains).toContain('lo');
    expect(new Set(domains).size).toBe(domains.length);
    const three = runCli(['info', '--rails', '3']);
    expect(three.status).toBe(0);
    expect(three.stdout).toMatch(/rails \(3\)\s+3 on tcp/);
    expect(three.stdout).toMatch(/rail 2\s/);
    // And whether an shm rail for peers on this host comes after them (same-host.test.ts checks that agents agree).
    expect(typeof auto.sameHost.shm).toBe('boolean');
    expect(three.stdout).toMatch(auto.sameHost.shm ? /rail 3\s+shm/ : /same host\s+no shm rail: \S/);
    const bad = runCli(['info', '--rails', '0']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--rails takes 'auto' or a count from 1 to 32/);
  });

  it('--version prints the package version', () => {
    const r = runCli(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
  });

  it('explains a missing libfabric, and exits 1 so that it can gate a start-up script', () => {
    const r = runCli(['info', '--json'], { IXFER_LIBFABRIC_SO: '/nonexistent/libfabric.so.1' });
    expect(r.status).toBe(1);
    const parsed = JSON.parse(r.stdout);
    expect(parsed.libfabric.available).toBe(false);
    expect(parsed.libfabric.error).toContain('/nonexistent/libfabric.so.1');
    expect(parsed.libfabric.error).toContain('apt-get install libfabric1');
    expect(parsed.libfabric.disables).toMatch(/network transfers/);
    const table = runCli(['info'], { IXFER_LIBFABRIC_SO: '/nonexistent/libfabric.so.1' });
    expect(table.status).toBe(1);
    expect(table.stdout).toContain('MISSING');
  });

  it('reports CUDA and cuFile as missing or present, never as a failure', () => {
    const report = info();
    for (const lib of [report.cuda, report.cufile]) {
      if (!lib.available) {
        expect(lib.error).toBeTruthy();
        expect(lib.disables).toBeTruthy();
      }
    }
  });

  it('refuses an unknown command with usage', () => {
    const r = runCli(['frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage: ixfer');
  });
});

describe('CommonJS', () => {
  it("require('ixfer') from a CommonJS script loads the package and moves bytes", () => {
    const app = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-cjs-'));
    try {
      // node_modules/ixfer -> this package: resolution goes through package.json's exports map.
      fs.mkdirSync(path.join(app, 'node_modules'));
      fs.symlinkSync(root, path.join(app, 'node_modules', 'ixfer'));
      fs.writeFileSync(
        path.join(app, 'main.cjs'),
        `const { Agent, IxferError } = require('ixfer');
(async () => {
  const a = await Agent.create({ name: 'cjs-a' });
  const b = await Agent.create({ name: 'cjs-b' });
  const src = a.allocate(4096);
  src.bytes.fill(7);
  const dst = b.allocate(4096);
  const peer = a.loadRemoteMetadata(b.getLocalMetadata());
  await a.createTransfer({ op: 'WRITE', peer, local: [src.desc()], remote: [dst.desc()] }).run({ timeoutMs: 10000 });
  let typed = false;
  try { a.allocate(-1); } catch (e) { typed = e instanceof IxferError; }
  console.log(JSON.stringify({ sum: dst.bytes.reduce((s, v) => s + v, 0), typed }));
  await a.close();
  await b.close();
})();
`,
      );
      const r = spawnSync(process.execPath, ['main.cjs'], { cwd: app, encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ sum: 7 * 4096, typed: true });
    } finally {
      fs.rmSync(app, { recursive: true, force: true });
    }
  });
});

describe('the shim', () => {
  it('the committed prebuild was built from the committed csrc/ and binding.gyp', () => {
    const file = path.join(root, 'prebuilds', 'linux-x64', 'ixfer.node');
    const built = koffi.load(file).func('const char *ixfer_build_hash()')() as string;
    expect(built).toBe(sourceHash(root));
  });

  it('the source hash changes when a byte of csrc/ changes', () => {
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-hash-'));
    fs.cpSync(path.join(root, 'csrc'), path.join(copy, 'csrc'), { recursive: true });
    fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(copy, 'binding.gyp'));
    const before = sourceHash(copy);
    const file = path.join(copy, 'csrc', 'src', 'core', 'error.c');
    expect(fs.existsSync(file)).toBe(true); // a stale path would create a new file and pass anyway
    fs.appendFileSync(file, ' ');
    expect(sourceHash(copy)).not.toBe(before);
    fs.rmSync(copy, { recursive: true });
  });

  it('links only libc, libdl and pthread', () => {
    const file = path.join(root, 'prebuilds', 'linux-x64', 'ixfer.node');
    const needed = execFileSync('readelf', ['-d', file], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes('(NEEDED)'))
      .map((l) => /\[(.+)\]/.exec(l)![1]);
    for (const lib of needed) expect(lib).toMatch(/^(libc|libdl|libpthread|ld-linux-x86-64)\.so/);
  });

  it('the loader refuses a shim of another ABI version, saying so', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-abi-'));
    const src = path.join(dir, 'fake.c');
    fs.writeFileSync(src, 'int ixfer_abi_version(void) { return 999; }\n');
    const so = path.join(dir, 'fake.so');
    execFileSync('cc', ['-shared', '-fPIC', '-o', so, src]);
    const r = runCli(['info'], { IXFER_SHIM: so });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('ERR_LIBRARY_MISSING');
    expect(r.stderr).toContain('ABI version 999');
    expect(r.stderr).toContain('needs ABI version 4');
    fs.rmSync(dir, { recursive: true });
  });
});

describe('errors', () => {
  it('every code has a typed class carrying the native message', () => {
    for (const code of ErrorCodes) {
      const err = makeError(code, 'context', { nativeMessage: 'native words' });
      expect(err).toBeInstanceOf(IxferError);
      expect(err.code).toBe(code);
      expect(err.nativeMessage).toBe('native words');
      expect(err.name).toMatch(/Error$/);
    }
    expect(makeError('ERR_TIMEOUT', 'x')).toBeInstanceOf(TimeoutError);
  });

  it('maps the shim status codes in header order', () => {
    const header = fs.readFileSync(path.join(root, 'csrc/include/ixfer.h'), 'utf8');
    for (const m of header.matchAll(/IXFER_(ERR_[A-Z_]+) = (-\d+)/g)) {
      expect(codeOfStatus(Number(m[2]))).toBe(m[1]);
    }
  });
});

describe('scripts/rebuild.sh', () => {
  it('builds against a libfabric under a prefix and defaults to that library', () => {
    // A prefix laid out like a site's own install, pointing at the system libfabric.
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-rebuild-'));
    const prefix = path.join(work, 'opt');
    fs.mkdirSync(path.join(prefix, 'lib'), { recursive: true });
    fs.symlinkSync('/usr/include', path.join(prefix, 'include'));
    const system = execFileSync('sh', ['-c', 'ldconfig -p | awk \'/libfabric\\.so\\.1 /{print $NF; exit}\''], {
      encoding: 'utf8',
    }).trim();
    fs.symlinkSync(system, path.join(prefix, 'lib', 'libfabric.so.1'));
    // A copy of the project, so that its build/ does not shadow the prebuild here.
    const copy = path.join(work, 'ixfer');
    fs.mkdirSync(copy);
    for (const item of ['csrc', 'scripts', 'binding.gyp', 'package.json']) {
      fs.cpSync(path.join(root, item), path.join(copy, item), { recursive: true });
    }
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
    execFileSync('bash', [path.join(copy, 'scripts', 'rebuild.sh')], {
      cwd: copy,
      env: { ...process.env, LIBFABRIC_PREFIX: prefix },
      stdio: 'pipe',
    });
    const lib = koffi.load(path.join(copy, 'build', 'Release', 'ixfer.node'));
    expect(lib.func('int32_t ixfer_fabric_load()')()).toBe(0);
    expect(lib.func('const char *ixfer_fabric_path()')()).toBe(path.join(prefix, 'lib', 'libfabric.so.1'));
    fs.rmSync(work, { recursive: true, force: true });
  });
});
