// The packed package installs and runs with no compiler reachable: the
// prebuilt shim is used as it is.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { expect, it } from 'vitest';

import { root } from '../support/helpers.js';

/** The oldest TypeScript the published declarations compile with (README, Requirements). */
const MIN_TYPESCRIPT = '5.7';

/** A strict consumer: what a user's app writes, checked by the compiler only. */
const CONSUMER = `import { randomBytes } from 'node:crypto';
import { Agent, BlockStore, IxferError, type AgentOptions, type PeerEvent, type Transfer } from 'ixfer';

// Node's Buffer, as @types/node types it, is a Uint8Array option.
const options: AgentOptions = { name: 'app', metadata: { secret: randomBytes(32) } };
const agent = await Agent.create(options);
agent.on('peer', (e: PeerEvent) => console.log(e.name, e.action));
agent.on('notification-dropped', (err) => console.log(err.code, err.peer.length, err.bytes + 1));
// @ts-expect-error: no such event
agent.on('pear', () => {});
const store = await BlockStore.open(agent, { capacityBytes: 1 << 20 });
const region = agent.allocate(4096);
const t: Transfer = agent.createTransfer({ op: 'WRITE', peer: 'x', local: [region.desc()], remote: [region.desc()] });
// @ts-expect-error: internal, not published
t.complete(0, 0, 0);
// @ts-expect-error: internal, not published
agent.memoryFile('x');
await store.close();
const e: unknown = new Error();
if (e instanceof IxferError) console.log(e.code);
await agent.close();
`;

function which(cmd: string): string {
  return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
}

it('npm pack, install with no cc/gcc/make on PATH, run ixfer info, require it, compile a strict TypeScript consumer', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-install-'));
  const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], {
    cwd: root,
    encoding: 'utf8',
  })
    .trim()
    .split('\n')
    .pop()!;
  const tarball = path.join(work, packed);
  const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' });
  expect(listing).toContain('package/prebuilds/linux-x64/ixfer.node');
  expect(listing).toContain('package/dist/cli.js');
  expect(listing).toContain('package/csrc/include/ixfer.h');
  expect(listing).not.toContain('package/test/');

  // A PATH with only what npm needs: no compiler, no make.
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  for (const tool of ['node', 'npm', 'sh', 'env']) fs.symlinkSync(which(tool), path.join(bin, tool));
  const env = { ...process.env, PATH: bin, npm_config_nodedir: '' };
  for (const tool of ['cc', 'gcc', 'make']) {
    expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status).not.toBe(0);
  }

  const project = path.join(work, 'app');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), '{"name":"app","version":"1.0.0","private":true}\n');
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: project,
    env,
    encoding: 'utf8',
  });
  expect(install.status, install.stderr).toBe(0);
  // No install script of ours: the prebuild is found when the package loads.
  expect(install.stderr).not.toMatch(/ixfer@[^ ]* \(install/);
  // The benchmark's plot and progress line are our own code: no d3 or cli-progress.
  const installed = fs.readdirSync(path.join(project, 'node_modules'));
  expect(installed.filter((name) => name.startsWith('d3-') || name === 'cli-progress')).toEqual([]);

  const run = spawnSync(path.join(project, 'node_modules', '.bin', 'ixfer'), ['info', '--json'], {
    cwd: project,
    env,
    encoding: 'utf8',
  });
  expect(run.status, run.stderr).toBe(0);
  const report = JSON.parse(run.stdout);
  expect(report.shim.path).toContain(path.join('node_modules', 'ixfer', 'prebuilds', 'linux-x64'));
  expect(report.libfabric.providers.some((p: { name: string }) => p.name === 'tcp;ofi_rxm')).toBe(true);

  // require() from CommonJS, through the exports map of the installed package.
  const required = spawnSync('node', ['-e', "console.log(typeof require('ixfer').Agent)"], { cwd: project, env, encoding: 'utf8' });
  expect(required.status, required.stderr).toBe(0);
  expect(required.stdout.trim()).toBe('function');

  // A strict TypeScript consumer, compiled with the oldest TypeScript we state (from the npm registry).
  const types = spawnSync(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', `typescript@${MIN_TYPESCRIPT}`, '@types/node@20'],
    { cwd: project, env, encoding: 'utf8' },
  );
  expect(types.status, types.stderr).toBe(0);
  fs.writeFileSync(path.join(project, 'main.mts'), CONSUMER);
  fs.writeFileSync(
    path.join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        types: ['node'],
        noEmit: true,
      },
      files: ['main.mts'],
    }),
  );
  const tsc = spawnSync('node', [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], {
    cwd: project,
    env,
    encoding: 'utf8',
  });
  expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
  fs.rmSync(work, { recursive: true, force: true });
});
