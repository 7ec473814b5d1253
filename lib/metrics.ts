/**
 * Prometheus metrics of agents, on the user's prom-client registry (names
 * after NIXL's telemetry, prefixed ixfer_). Loaded only by Agent.create when
 * `metrics` is given, so prom-client stays an optional peer dependency.
 * Agents sharing a registry share the metrics, told apart by the `agent` label.
 */
import type { MetricsSink, TransferTelemetry } from './core/telemetry.js';
import type { RailStatus } from './net/endpoint.js';
import type { StagingStats } from './net/engine.js';
import { InvalidParamError, LibraryMissingError } from './errors.js';
import type { MetricsRegistry, Op } from './schemas.js';

type PromClient = typeof import('prom-client');
type Labels = 'agent' | 'peer';

/** µs: from a small loopback write to a multi-second bulk move. */
const BUCKETS_US = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];

interface Family {
  txBytes: import('prom-client').Counter<Labels>;
  rxBytes: import('prom-client').Counter<Labels>;
  txRequests: import('prom-client').Counter<Labels>;
  rxRequests: import('prom-client').Counter<Labels>;
  xferTime: import('prom-client').Histogram<Labels>;
  postTime: import('prom-client').Histogram<Labels>;
  errors: import('prom-client').Counter<'agent' | 'code'>;
  memory: import('prom-client').Gauge<'agent'>;
  notifications: Record<'sent' | 'received' | 'dropped', import('prom-client').Counter<Labels>>;
  /** Registered bytes of each live agent, read at scrape time. */
  memorySources: Map<string, () => number>;
  /** The staging pool of each live agent, read at scrape time. */
  staging: (import('prom-client').Gauge<'agent'> | import('prom-client').Counter<'agent'>)[];
  stagingSources: Map<string, () => StagingStats>;
  /** Per rail: bytes and ops posted on it, labeled with its index and provider (shm: peers on this host). */
  rails: import('prom-client').Counter<RailLabels>[];
  railSources: Map<string, () => RailStatus[]>;
}

type RailLabels = 'agent' | 'rail' | 'provider';

/** What an agent reads for its gauges at scrape time. */
export interface MetricsSources {
  memoryBytes: () => number;
  staging: () => StagingStats;
  rails: () => RailStatus[];
}

const families = new WeakMap<MetricsRegistry, Family>();

async function load(): Promise<PromClient> {
  try {
    return await import('prom-client');
  } catch (err) {
    throw new LibraryMissingError(`options.metrics needs the prom-client package (npm install prom-client): ${(err as Error).message}`);
  }
}

function family(prom: PromClient, registry: MetricsRegistry): Family {
  let f = families.get(registry);
  if (f) return f;
  const registers = [registry as unknown as import('prom-client').Registry];
  const existing = (name: string) => {
    if (registry.getSingleMetric(name)) throw new InvalidParamError(`the metrics registry already has a metric named ${name}`);
    return name;
  };
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
    new prom.Counter<L>({ name: existing(name), help, labelNames, registers });
  const histogram = (name: string, help: string) =>
    new prom.Histogram<Labels>({ name: existing(name), help, labelNames: ['agent', 'peer'], buckets: BUCKETS_US, registers });
  const memorySources = new Map<string, () => number>();
  const stagingSources = new Map<string, () => StagingStats>();
  // Staging numbers live in the shim: each scrape copies them (counters from the shim's running totals).
  type Pick = (s: StagingStats) => number;
  const stagingGauge = (name: string, help: string, pick: Pick) =>
    new prom.Gauge<'agent'>({
      name: existing(name),
      help,
      labelNames: ['agent'],
      registers,
      collect() {
        for (const [agent, read] of stagingSources) this.set({ agent }, pick(read()));
      },
    });
  const stagingCounter = (name: string, help: string, pick: Pick) =>
    new prom.Counter<'agent'>({
      name: existing(name),
      help,
      labelNames: ['agent'],
      registers,
      collect() {
        this.reset();
        for (const [agent, read] of stagingSources) this.inc({ agent }, pick(read()));
      },
    });
  const railSources = new Map<string, () => RailStatus[]>();
  const railCounter = (name: string, help: string, pick: (r: RailStatus) => number) =>
    new prom.Counter<RailLabels>({
      name: existing(name),
      help,
      labelNames: ['agent', 'rail', 'provider'],
      registers,
      collect() {
        this.reset();
        for (const [agent, read] of railSources) {
          read().forEach((r, i) => this.inc({ agent, rail: String(i), provider: r.provider }, pick(r)));
        }
      },
    });
  f = {
    txBytes: counter('ixfer_agent_tx_bytes', 'Bytes written to peers (WRITE) or files', ['agent', 'peer']),
    rxBytes: counter('ixfer_agent_rx_bytes', 'Bytes read from peers (READ) or files', ['agent', 'peer']),
    txRequests: counter('ixfer_agent_tx_requests', 'WRITE runs completed', ['agent', 'peer']),
    rxRequests: counter('ixfer_agent_rx_requests', 'READ runs completed', ['agent', 'peer']),
    xferTime: histogram('ixfer_agent_xfer_time_us', 'Time from post to completion of a transfer run, in microseconds'),
    postTime: histogram('ixfer_agent_xfer_post_time_us', 'Time to post a transfer run, in microseconds'),
    errors: counter('ixfer_agent_errors', 'Failed transfer runs and posts, by error code', ['agent', 'code']),
    memory: new prom.Gauge<'agent'>({
      name: existing('ixfer_agent_memory_registered_bytes'),
      help: 'Host memory registered for transfers, in bytes',
      labelNames: ['agent'],
      registers,
      collect() {
        for (const [agent, bytes] of memorySources) this.set({ agent }, bytes());
      },
    }),
    notifications: {
      sent: counter('ixfer_agent_notifications_sent', 'Standalone notifications sent', ['agent', 'peer']),
      received: counter('ixfer_agent_notifications_received', 'Notifications received', ['agent', 'peer']),
      dropped: counter('ixfer_agent_notifications_dropped', 'Incoming notifications dropped', ['agent', 'peer']),
    },
    memorySources,
    staging: [
      stagingGauge('ixfer_agent_staging_pool_bytes', 'Host bounce memory of the VRAM staging pool, in bytes', (s) => s.poolBytes),
      stagingGauge('ixfer_agent_staging_chunks_busy', 'Bounce chunks of the VRAM staging pool held now', (s) => s.chunksBusy),
      stagingCounter('ixfer_agent_staging_pieces', "Chunks of the agent's own VRAM transfers staged", (s) => s.pieces),
      stagingCounter('ixfer_agent_staging_served', "Peers' requests to staged VRAM served", (s) => s.served),
      stagingCounter('ixfer_agent_staging_copied_bytes', 'Bytes copied between host and device memory by staging', (s) => s.copiedBytes),
    ],
    stagingSources,
    rails: [
      railCounter('ixfer_agent_rail_bytes', 'Bytes posted on each rail (provider shm: the rail to peers on this host)', (r) => r.bytes),
      railCounter('ixfer_agent_rail_ops', 'Provider operations posted on each rail', (r) => r.ops),
    ],
    railSources,
  };
  families.set(registry, f);
  return f;
}

/** The sink of one agent: its peer label values are capped at maxPeerLabels, later ones fold into 'other'. */
class PromSink implements MetricsSink {
  readonly #f: Family;
  readonly #peers = new Set<string>();
  /** Error codes counted: close() removes their series. */
  readonly #codes = new Set<string>();
  readonly #max: number;

  constructor(f: Family, maxPeerLabels: number) {
    this.#f = f;
    this.#max = maxPeerLabels;
  }

  #peer(peer: string): string {
    if (this.#peers.has(peer)) return peer;
    if (this.#peers.size >= this.#max) return 'other';
    this.#peers.add(peer);
    return peer;
  }

  transfer(agent: string, op: Op, peer: string, t: TransferTelemetry, error: unknown): void {
    const f = this.#f;
    const labels = { agent, peer: this.#peer(peer) };
    f.postTime.observe(labels, t.postDurationUs);
    if (error) return;
    f.xferTime.observe(labels, t.transferDurationUs);
    (op === 'WRITE' ? f.txBytes : f.rxBytes).inc(labels, t.bytes);
    (op === 'WRITE' ? f.txRequests : f.rxRequests).inc(labels);
  }

  notification(agent: string, what: 'sent' | 'received' | 'dropped', peer: string): void {
    this.#f.notifications[what].inc({ agent, peer: this.#peer(peer) });
  }

  error(agent: string, code: string): void {
    this.#codes.add(code);
    this.#f.errors.inc({ agent, code });
  }

  close(agent: string): void {
    this.#f.memorySources.delete(agent);
    this.#f.memory.remove({ agent });
    this.#f.stagingSources.delete(agent);
    for (const m of this.#f.staging) m.remove({ agent });
    this.#f.railSources.delete(agent);
    // The closed agent's series go too: a process that makes agents under new names would pile them up.
    const f = this.#f;
    const byPeer = [f.txBytes, f.rxBytes, f.txRequests, f.rxRequests, f.xferTime, f.postTime, ...Object.values(f.notifications)];
    for (const peer of [...this.#peers, 'other']) for (const m of byPeer) m.remove({ agent, peer });
    for (const code of this.#codes) f.errors.remove({ agent, code });
  }
}

/** Builds an agent's sink on `registry` (loading prom-client); the sources are read at each scrape. */
export async function createMetrics(
  options: { registry: MetricsRegistry; maxPeerLabels: number },
  agent: string,
  sources: MetricsSources,
): Promise<MetricsSink> {
  const f = family(await load(), options.registry);
  f.memorySources.set(agent, sources.memoryBytes);
  f.stagingSources.set(agent, sources.staging);
  f.railSources.set(agent, sources.rails);
  return new PromSink(f, options.maxPeerLabels);
}
