/**
 * Notifications nobody reads: the queue of delivered notifications stays
 * within notifications.maxQueued / maxQueuedBytes / maxQueuedBytesPerPeer,
 * dropping the oldest of the sender over its share first, and each drop is
 * reported ('notification-dropped', ERR_NO_SPACE) and counted (overflowed).
 * Senders are other processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Agent, type IxferError, type MemoryRegion } from '../../lib/index.js';
import { spawnPeer, type Peer } from '../support/peer.js';

const KiB = 1024;
let rx: Agent;
let mem: MemoryRegion;
let chatty: Peer;
let quiet: Peer;
const drops: (IxferError & { peer?: string; bytes?: number; reason?: string })[] = [];

beforeAll(async () => {
  rx = await Agent.create({ name: 'unread', notifications: { maxQueued: 60, maxQueuedBytes: 1024 * KiB, maxQueuedBytesPerPeer: 512 * KiB } });
  rx.on('notification-dropped', (e) => drops.push(e));
  mem = rx.allocate(64 * KiB);
  [chatty, quiet] = await Promise.all([spawnPeer('chatty', { size: 64 * KiB }), spawnPeer('quiet', { size: 64 * KiB })]);
});
afterAll(async () => {
  await chatty?.kill();
  await quiet?.kill();
  await rx?.close();
});

/** peer WRITEs 4 KiB with a notification, then sends `count` notifications of `size` bytes, the i-th filled with i. */
function send(peer: Peer, count: number, size: number, offset: number): Promise<unknown> {
  const metadata = Buffer.from(rx.getLocalMetadata()).toString('base64');
  return peer.request({ type: 'write-notify', metadata, offset: 0, count: 1, block: 4 * KiB, remoteAddr: mem.addr + offset, standalone: count, size });
}

async function received(n: number): Promise<void> {
  for (let i = 0; i < 2000 && rx.notificationStats.received < n; i++) await new Promise((r) => setTimeout(r, 5));
  expect(rx.notificationStats.received).toBe(n);
}

describe('delivered notifications nobody takes', () => {
  it('a flooding sender loses its oldest, not the others’ notifications; each drop is reported and counted', async () => {
    await send(quiet, 5, KiB, 0);
    await send(chatty, 200, 16 * KiB, 8 * KiB); // 3.2 MiB: far over its 512 KiB share
    await received(2 + 5 + 200);
    const stats = rx.notificationStats;
    expect(stats.queuedBytes).toBeLessThanOrEqual(1024 * KiB);
    expect(stats.overflowed).toBe(stats.received - stats.queued);
    await new Promise((r) => setTimeout(r, 0));
    expect(drops.length).toBe(stats.overflowed);
    expect(drops.every((e) => e.code === 'ERR_NO_SPACE' && e.reason === 'queue-full' && e.peer === 'chatty')).toBe(true);
    const all = rx.getNotifications();
    // The quiet sender's 6 are all there; the flooder keeps its newest 32 (512 KiB of 16 KiB each).
    expect(all.get('quiet')!.length).toBe(6);
    const kept = all.get('chatty')!;
    expect(kept.length).toBe(32);
    expect(kept.map((n) => n.bytes[0])).toEqual(Array.from({ length: 32 }, (_, i) => 168 + i));
    expect(rx.notificationStats).toMatchObject({ queued: 0, queuedBytes: 0 });
  });

  it('the count cap drops the oldest of the sender holding the most; a waiter still gets the next one', async () => {
    const before = rx.notificationStats;
    await send(quiet, 10, 100, 0);
    await send(chatty, 100, 100, 8 * KiB);
    await received(before.received + 1 + 10 + 1 + 100);
    const stats = rx.notificationStats;
    expect(stats.queued).toBe(60);
    expect(stats.overflowed - before.overflowed).toBe(1 + 10 + 1 + 100 - 60);
    const all = rx.getNotifications();
    expect(all.get('quiet')!.length).toBe(11);
    const next = rx.waitForNotification({ peer: 'quiet', timeoutMs: 30_000 });
    await send(quiet, 0, 0, 0);
    expect((await next).text).toMatch(/^landed /);
  });
});
