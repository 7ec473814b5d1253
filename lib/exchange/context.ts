/** What the TCP channel and the etcd directory share: the agent, settings, counters. */
import type { ExchangeOptionsParsed } from '../schemas.js';

/** The part of an Agent that metadata exchange uses. */
export interface ExchangeHost {
  readonly name: string;
  readonly peers: string[];
  getLocalMetadata(): Uint8Array;
  loadRemoteMetadata(blob: Uint8Array): string;
  invalidateRemote(peer: string): void;
  /** The agent's own events ('peer'); the exchange emits them outside its protocol paths. */
  emit(event: 'peer', e: PeerEvent): boolean;
}

/** Counters of the metadata exchange, for monitoring. */
export interface ExchangeStats {
  /** Requests the TCP listener answered (including answers that refuse a bad blob). */
  served: number;
  /** Frames refused: bad magic, version, type or flags, or a connection that ended mid-frame. */
  malformed: number;
  /** Frames refused for claiming a payload over `maxFrameBytes`. */
  oversized: number;
  /** Frames refused for a missing, unexpected or wrong MAC. */
  unauthenticated: number;
  /** Connections closed for not completing a frame within `timeoutMs`. */
  timedOut: number;
  /** Connections closed at once because `maxConnections` were open. */
  dropped: number;
  /** Well-formed frames or etcd entries whose metadata could not be loaded. */
  loadFailures: number;
  /** Times our metadata was written to etcd. */
  published: number;
  /** Failed writes to etcd (retried; see the warning for why). */
  publishFailures: number;
}

/** How a peer came or went: the TCP channel, etcd, or (dropped only) the maxPeers bound. */
export type ExchangeVia = 'tcp' | 'etcd' | 'limit';

/** A peer loaded or dropped by the exchange, or dropped past metadata.maxPeers (not by direct calls on the agent). */
export interface PeerEvent {
  name: string;
  action: 'loaded' | 'dropped';
  via: ExchangeVia;
}

export interface ExchangeContext {
  readonly host: ExchangeHost;
  readonly options: ExchangeOptionsParsed;
  readonly secret: Buffer | undefined;
  readonly stats: ExchangeStats;
  /** Loads a peer's metadata and reports it (a 'peer' event, emitted later); returns the peer's name. */
  load(blob: Uint8Array, via: ExchangeVia): string;
  /** Drops a loaded peer and reports it (likewise); does nothing for a peer not loaded. */
  drop(name: string, via: ExchangeVia): void;
  /** Logs a problem that only counters and this log see (nobody awaits it). */
  warn(message: string): void;
}
