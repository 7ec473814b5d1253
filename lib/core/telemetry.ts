/**
 * What an agent tells the outside about its work: diagnostics_channel events
 * (for tracers), a debug log (NODE_DEBUG=ixfer) and, when the user asked for
 * them, Prometheus metrics (a sink that lib/metrics.ts builds on prom-client).
 * Every hook is called from the engines' few choke points (a Transfer's post
 * and completion, notification send and receive, registration changes);
 * with nobody subscribed and no metrics each costs a property check.
 */
import diagnostics from 'node:diagnostics_channel';
import { debuglog } from 'node:util';

import type { IxferError } from '../errors.js';
import type { Op } from '../schemas.js';

/** Per-run numbers of a Transfer, set when a run ends. */
export interface TransferTelemetry {
  /** When the run was posted, in ms since the epoch (like Date.now(), with sub-ms digits). */
  startTime: number;
  /** Time spent handing the run to the engine (post()), in µs. */
  postDurationUs: number;
  /** Time from post() to the completion, in µs. */
  transferDurationUs: number;
  /** Bytes the run moved (or meant to move, if it failed). */
  bytes: number;
  /** Descriptor pairs of the run. */
  descriptors: number;
}

/** The message of ixfer:transfer:start, :end and :error. */
export interface TransferMessage {
  agent: string;
  op: Op;
  peer: string;
  bytes: number;
  descriptors: number;
  /** The Transfer itself (its `telemetry` is set on :end and :error). */
  transfer: object;
  /** Only on :error. */
  error?: IxferError;
}

/** Where metrics go: lib/metrics.ts implements it over prom-client. */
export interface MetricsSink {
  transfer(agent: string, op: Op, peer: string, t: TransferTelemetry, error: IxferError | undefined): void;
  notification(agent: string, what: 'sent' | 'received' | 'dropped', peer: string): void;
  error(agent: string, code: string): void;
  /** The agent is closing: its gauges go. */
  close(agent: string): void;
}

export const channels = {
  transferStart: diagnostics.channel('ixfer:transfer:start'),
  transferEnd: diagnostics.channel('ixfer:transfer:end'),
  transferError: diagnostics.channel('ixfer:transfer:error'),
  notificationSent: diagnostics.channel('ixfer:notification:sent'),
  notificationReceived: diagnostics.channel('ixfer:notification:received'),
  notificationDropped: diagnostics.channel('ixfer:notification:dropped'),
  peer: diagnostics.channel('ixfer:peer:change'),
};

/** NODE_DEBUG=ixfer prints agent lifecycle lines to stderr. */
export const debug = debuglog('ixfer');

const NOTIFICATION_CHANNEL = {
  sent: channels.notificationSent,
  received: channels.notificationReceived,
  dropped: channels.notificationDropped,
};

/** One agent's telemetry: the engines report to it, it publishes. */
export class Telemetry {
  readonly agent: string;
  /** Set by Agent.create when metrics were asked for. */
  metrics: MetricsSink | undefined;

  constructor(agent: string) {
    this.agent = agent;
  }

  /** A run was posted (or its posting threw: `error`). */
  transferStarted(op: Op, peer: string, bytes: number, descriptors: number, transfer: object): void {
    if (channels.transferStart.hasSubscribers) {
      channels.transferStart.publish({ agent: this.agent, op, peer, bytes, descriptors, transfer } satisfies TransferMessage);
    }
  }

  transferEnded(op: Op, peer: string, t: TransferTelemetry, transfer: object, error: IxferError | undefined): void {
    this.metrics?.transfer(this.agent, op, peer, t, error);
    if (error) this.metrics?.error(this.agent, error.code);
    const ch = error ? channels.transferError : channels.transferEnd;
    if (ch.hasSubscribers) {
      const msg: TransferMessage = { agent: this.agent, op, peer, bytes: t.bytes, descriptors: t.descriptors, transfer };
      if (error) msg.error = error;
      ch.publish(msg);
    }
  }

  /** An error that ended no run (a post that threw). */
  failed(error: IxferError): void {
    this.metrics?.error(this.agent, error.code);
  }

  notification(what: 'sent' | 'received' | 'dropped', peer: string, bytes: number, error?: IxferError): void {
    this.metrics?.notification(this.agent, what, peer);
    const ch = NOTIFICATION_CHANNEL[what];
    if (ch.hasSubscribers) ch.publish({ agent: this.agent, peer, bytes, ...(error ? { error } : {}) });
  }

  peer(name: string, action: 'loaded' | 'dropped'): void {
    debug('agent %s: peer %s %s', this.agent, name, action);
    if (channels.peer.hasSubscribers) channels.peer.publish({ agent: this.agent, peer: name, action });
  }

  close(): void {
    debug('agent %s: closed', this.agent);
    this.metrics?.close(this.agent);
    this.metrics = undefined;
  }
}

/** Microseconds between two performance.now() readings. */
export function micros(from: number, to: number): number {
  return Math.round((to - from) * 1000);
}
