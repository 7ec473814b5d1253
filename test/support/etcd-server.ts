/**
 * A real etcd server for tests (Debian's etcd-server, binary `etcd`) on free
 * loopback ports with a temporary data directory.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:40123 */
  endpoint: string;
  /** Freezes the server (SIGSTOP), as a hung or partitioned etcd; resume() thaws it. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startEtcd(): Promise<EtcdServer> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ixfer-etcd-'));
  const client = `http://127.0.0.1:${await freePort()}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  const proc = spawn(
    'etcd',
    [
      '--name=ixfer-test',
      `--data-dir=${dir}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=ixfer-test=${peer}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let log = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`etcd did not start within 30 s:\n${log.slice(-2000)}`)), 30_000);
      proc.once('error', (err) => reject(new Error(`cannot run etcd (apt-get install etcd-server): ${err.message}`)));
      void exited.then(() => reject(new Error(`etcd exited:\n${log.slice(-2000)}`)));
      const onLog = (chunk: Buffer) => {
        log += chunk.toString();
        if (!log.includes('ready to serve client requests')) return;
        clearTimeout(timer);
        proc.stderr!.off('data', onLog);
        resolve();
      };
      proc.stderr!.on('data', onLog);
    });
  } catch (err) {
    proc.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
  proc.stderr!.resume(); // keep draining its log, unread
  return {
    endpoint: client,
    pause: () => proc.kill('SIGSTOP'),
    resume: () => proc.kill('SIGCONT'),
    async stop() {
      proc.kill('SIGKILL');
      await exited;
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
