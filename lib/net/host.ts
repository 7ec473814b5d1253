/**
 * What two agents must share for shm to reach one from the other: the
 * kernel (boot id), the /dev/shm its regions live in (device and inode: a
 * container with its own /dev/shm differs), and the PID namespace (shm
 * attaches to a peer's memory by its pid). IXFER_HOST_ID replaces it: agents
 * that should not use shm with each other (tests) are given different ones.
 */
import fs from 'node:fs';

import { FI_MR_VIRT_ADDR } from '../native/layout.js';
import type { Endpoint } from './endpoint.js';
import type { SameHostInfo } from './metadata.js';

let cached: string | undefined | null = null;

/** This process's host identity, or undefined where it cannot be read (then no shm rail is offered). */
export function hostIdentity(): string | undefined {
  const env = process.env.IXFER_HOST_ID;
  if (env) return env.slice(0, 255);
  if (cached !== null) return cached;
  try {
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const shm = fs.statSync('/dev/shm');
    const pidns = fs.readlinkSync('/proc/self/ns/pid');
    cached = `${boot} shm:${shm.dev}:${shm.ino} ${pidns}`;
  } catch {
    cached = undefined;
  }
  return cached;
}

/** The shm rail's entry of our metadata, where the endpoint has one. */
export function sameHost(ep: Endpoint): { sameHost?: SameHostInfo } {
  const host = hostIdentity();
  const rail = ep.shmRail;
  if (!rail || !host) return {};
  return { sameHost: { host, pid: process.pid, mrModeBits: rail.virtAddr ? FI_MR_VIRT_ADDR : 0, address: rail.address } };
}

/**
 * Whether a peer's metadata puts it on this host, in another process
 * (agents of one process never use shm with each other: libfabric 2.6's shm
 * crashes when two endpoints of one process insert each other's addresses).
 */
export function reachableOverShm(ep: Endpoint, peer: SameHostInfo | undefined): peer is SameHostInfo {
  return !!peer && !!ep.shmRail && peer.host === hostIdentity() && peer.pid !== process.pid;
}
