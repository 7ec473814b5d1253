/**
 * The tests' one fork-a-peer harness: an agent in its own process
 * (fixtures/peer.mjs), driven by request and reply. It is built on the bench's
 * worker RPC (lib/bench/rpc.ts), so that the library and its tests have one
 * fork/request mechanism: a peer's failed request rejects with an IxferError
 * carrying the peer's error code, and pending requests reject when it exits.
 */
import path from 'node:path';

import { Worker, type Request } from '../../lib/bench/rpc.js';
import type { ExchangeOptions, SocketAddress, VramOptions } from '../../lib/index.js';

const script = path.join(import.meta.dirname, 'fixtures', 'peer.mjs');
const inNamespace = path.join(import.meta.dirname, 'fixtures', 'netns-peer.mjs');

export interface PeerOptions {
  /** Bytes of the peer's memory region (default 4 MiB). */
  size?: number;
  /** The peer agent's metadata exchange options (etcd, secret, ...). */
  metadata?: ExchangeOptions;
  /** The peer listens for metadata over TCP; `ready.address` is where. */
  listen?: boolean;
  /** The peer agent's libfabric provider (default: the agent's). */
  provider?: string;
  /** The peer agent's rails (Agent option `rails`). */
  rails?: number | { iface?: string; address?: string }[];
  /** Runs the peer inside this network namespace (made by the test; needs root). */
  netns?: string;
  /** The peer creates no agent: a process that dies before publishing. */
  idle?: boolean;
  /** The peer's first 'peer' listener throws; its uncaught errors are kept for the 'uncaught' request. */
  throwOnPeer?: boolean;
  /** The peer agent's `sameHost` option. */
  sameHost?: 'auto' | 'shm' | 'off';
  /** IXFER_HOST_ID in the peer's process: another value says "another host" in its metadata. */
  hostId?: string;
  /** The peer agent's VRAM options. */
  vram?: VramOptions;
  /** Bytes of a VRAM region (named 'vram') the peer allocates; 0 (default): none. Emulated VRAM needs IXFER_EMULATE_VRAM=1 in our env, which the peer inherits. */
  vramSize?: number;
  /** Force that region to be staged. */
  vramStaged?: boolean;
}

/** What a started peer reports (an idle one: its pid, zeros and empty metadata). */
export interface Ready {
  pid: number;
  /** Its memory region, `size` bytes. */
  addr: number;
  len: number;
  /** Its agent's metadata, for loadRemoteMetadata. */
  metadata: Buffer;
  /** With `listen`: its metadata listener. */
  address?: SocketAddress;
  /** With `vramSize`: its VRAM region and the path it takes. */
  vramAddr?: number;
  vramLen?: number;
  vramPath?: 'gpudirect' | 'staged';
}

/** Replies are loosely typed: each request of fixtures/peer.mjs answers its own fields. */
export type Reply = Record<string, any>;

export class Peer {
  /** Resolves when the process has exited (killed, crashed, or done). */
  readonly exited: Promise<void>;
  #ready: Ready | undefined;

  private constructor(readonly worker: Worker) {
    const proc = worker.proc;
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    // A request sent as the peer dies makes the channel emit 'error'; unhandled, that
    // would crash the test file. The request itself is rejected when the exit comes.
    proc.on('error', () => {});
  }

  /** Forks fixtures/peer.mjs as agent `name` and waits until it is ready. */
  static async spawn(name: string, options: PeerOptions = {}): Promise<Peer> {
    const args = [name, JSON.stringify(options)];
    const peer = new Peer(
      new Worker(`peer '${name}'`, options.netns ? inNamespace : script, options.netns ? [options.netns, ...args] : args),
    );
    try {
      const r = await peer.request<Omit<Ready, 'metadata'> & { metadata: string }>({ type: 'ready' });
      peer.#ready = { ...r, metadata: Buffer.from(r.metadata, 'base64') };
    } catch (err) {
      await peer.kill('SIGKILL');
      throw err;
    }
    return peer;
  }

  get ready(): Ready {
    return this.#ready!;
  }

  /** Sends a request to the peer; rejects with the peer's error (an IxferError with its code). */
  request<T = Reply>(msg: Request): Promise<T> {
    return this.worker.request<T>(msg);
  }

  /** Kills the process and resolves once it has exited. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.worker.proc.kill(signal);
    await this.exited;
  }
}

/** Forks a peer agent named `name` in its own process; see PeerOptions. */
export const spawnPeer = (name: string, options?: PeerOptions): Promise<Peer> => Peer.spawn(name, options);
