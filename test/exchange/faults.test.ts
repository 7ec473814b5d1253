/**
 * The metadata listener under a flood of idle connections: each idle close is
 * counted in timedOut, idle clients cannot keep requests out (the oldest
 * unfinished connection makes room), and one source other than the local
 * default address holds at most maxConnectionsPerSource.
 */
import net from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, type SocketAddress } from '../../lib/index.js';

let client: Agent;
beforeAll(async () => {
  client = await Agent.create({ name: 'flood-client' });
});
afterAll(async () => {
  await client?.close();
});

/** Opens a connection that sends nothing; resolves once connected. */
function idle(at: SocketAddress, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect({ host: at.host, port: at.port, ...(localAddress ? { localAddress } : {}) });
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
  });
}

describe('idle connections', () => {
  it('one that sends nothing is closed at timeoutMs and counted in timedOut', async () => {
    await using listener = await Agent.create({ name: 'idle-counted', metadata: { timeoutMs: 300 } });
    const at = await listener.listen();
    const s = await idle(at);
    await new Promise((r) => s.once('close', r));
    expect(listener.exchangeStats.timedOut).toBe(1);
    expect(await client.fetchRemoteMetadata(at)).toBe('idle-counted');
  });

  it('a flood of idle reconnecting clients: legitimate fetches still succeed, and the closes are counted', async () => {
    await using listener = await Agent.create({ name: 'flooded', metadata: { timeoutMs: 2000, maxConnections: 16 } });
    const at = await listener.listen();
    let stop = false;
    const open = new Set<net.Socket>();
    // 40 clients that connect, send nothing, and come back 5 ms after being closed.
    const flood = async () => {
      while (!stop) {
        const s = await idle(at);
        open.add(s);
        await new Promise((r) => s.once('close', r));
        open.delete(s);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const floods = Array.from({ length: 40 }, flood);
    try {
      await new Promise((r) => setTimeout(r, 500)); // every slot is taken by now
      let ok = 0;
      for (let i = 0; i < 15; i++) {
        try {
          if ((await client.fetchRemoteMetadata(at, { timeoutMs: 3000 })) === 'flooded') ok++;
        } catch {
          // counted below
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(ok).toBeGreaterThanOrEqual(14);
      expect(listener.exchangeStats.timedOut).toBeGreaterThan(0);
    } finally {
      stop = true;
      for (const s of open) s.destroy();
      await Promise.all(floods);
    }
    expect(await client.fetchRemoteMetadata(at)).toBe('flooded');
  });

  it('one source (127.0.0.2) holds at most maxConnectionsPerSource: its newer connections close its older idle ones', async () => {
    await using listener = await Agent.create({ name: 'per-source', metadata: { timeoutMs: 2000, maxConnectionsPerSource: 4 } });
    const at = await listener.listen();
    const sockets = await Promise.all(Array.from({ length: 10 }, () => idle(at, '127.0.0.2')));
    const closedEarly = await Promise.all(
      sockets.map((s) => new Promise<boolean>((r) => (s.destroyed ? r(true) : (s.once('close', () => r(true)), setTimeout(() => r(false), 200))))),
    );
    expect(closedEarly.filter(Boolean).length).toBe(6);
    expect(listener.exchangeStats.timedOut).toBe(6);
    expect(sockets.slice(6).every((s) => !s.destroyed)).toBe(true);
    // The local default address is not capped, and the listener still answers.
    expect(await client.fetchRemoteMetadata(at)).toBe('per-source');
    for (const s of sockets) s.destroy();
  });
});
