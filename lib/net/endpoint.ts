/**
 * The shim's agent: one libfabric endpoint with its progress thread and the
 * event queue that every engine of the agent reports to. Opened and
 * destroyed here; everything else borrows its handle.
 */
import crypto from 'node:crypto';

import { NotAllowedError } from '../errors.js';
import { decodeRailStats, FI_MR_VIRT_ADDR, RAIL_STATS_WORDS, SAME_HOST_MODES, VRAM_MODES, type RailStats } from '../native/layout.js';
import { check, decodeProviderInfo, LINK_TIMEOUT_OFF, providerInfoBuffer, shim, type AgentHandle } from '../native/shim.js';
import { coreName, pickProvider, planRails, summarizeProvider, type ProviderSummary, type RailsOption } from './providers.js';

/** Longest fabric address asked for. */
const MAX_ADDRESS_BYTES = 4096;

export interface EndpointOptions {
  name: string;
  /** 'auto' or a provider name; IXFER_PROVIDER chooses in place of 'auto'. */
  provider: string;
  iface?: string | undefined;
  address?: string | undefined;
  notifications: { maxPendingBytesPerPeer: number; staleMs: number };
  vram: { mode: keyof typeof VRAM_MODES; stagingBytes: number; stagingChunkBytes: number };
  /** Rails (endpoint, CQ, address vector each); 1 when absent. */
  rails?: RailsOption | undefined;
  /** Transfers of at least this many bytes are cut across rails (default 128 KiB). */
  stripeThresholdBytes?: number | undefined;
  /** How long a rail that broke rests before it is tried again (default 1000 ms). */
  railCooldownMs?: number | undefined;
  /** Whether an shm rail is opened for peers on this host (default 'auto'). */
  sameHost?: keyof typeof SAME_HOST_MODES | undefined;
  /** Kernel deadline on the rails' TCP connections (default 2000 ms); 0: none. */
  linkTimeoutMs?: number | undefined;
}

/** A rail and its counters (Agent.rails). */
export interface RailStatus extends RailStats {
  /** Libfabric provider: the agent's, or 'shm' for the rail to peers on this host. */
  provider: string;
  domain: string;
  fabric: string;
}

/** One rail of an opened endpoint. */
export interface RailInfo {
  /** Libfabric provider (full name). */
  provider: string;
  /** Remote addresses are virtual addresses (FI_MR_VIRT_ADDR). */
  virtAddr: boolean;
  /** Libfabric domain (interface) it is on. */
  domain: string;
  /** Libfabric fabric name (for tcp, the subnet). */
  fabric: string;
  /** Its fabric address, in the metadata. */
  address: Uint8Array;
}

export class Endpoint {
  readonly name: string;
  /** Core provider name in use ('tcp', 'efa', ...). */
  readonly provider: string;
  /** What the opened endpoint offers. */
  readonly info: ProviderSummary;
  /** The fabric address (rail 0's). */
  readonly address: Uint8Array;
  /** Every rail, rail 0 first; the shm rail, if any, last. */
  readonly rails: RailInfo[];
  /** The rails of the agent's provider (the first ones): their addresses go into the metadata as rails. */
  readonly netRails: RailInfo[];
  /** The rail to peers on this host (another provider: shm), if one was opened. */
  readonly shmRail: RailInfo | undefined;
  /** This incarnation, in our metadata: a peer tells a restarted agent of the same name by it. */
  readonly instance = crypto.randomBytes(16).toString('hex');
  /** The event pipe's read end, for the agent's completions. */
  readonly eventFd: number;
  #handle: AgentHandle | undefined;

  private constructor(name: string, provider: string, handle: AgentHandle) {
    const native = shim();
    this.name = name;
    this.provider = provider;
    this.#handle = handle;
    const infoBuf = providerInfoBuffer(1);
    check(native.agentInfo(handle, infoBuf), 'reading endpoint attributes');
    this.info = summarizeProvider(decodeProviderInfo(infoBuf));
    this.rails = Array.from({ length: native.agentRailCount(handle) }, (_, i) => {
      const addrBuf = Buffer.alloc(MAX_ADDRESS_BYTES);
      const len: (number | bigint)[] = [addrBuf.length];
      check(native.agentRailAddress(handle, i, addrBuf, len), `reading the address of rail ${i}`);
      check(native.agentRailInfo(handle, i, infoBuf), `reading the attributes of rail ${i}`);
      const raw = decodeProviderInfo(infoBuf);
      return {
        provider: raw.provider,
        virtAddr: (Number(raw.mr_mode) & FI_MR_VIRT_ADDR) !== 0,
        domain: raw.domain,
        fabric: raw.fabric,
        address: new Uint8Array(addrBuf.subarray(0, Number(len[0]))),
      };
    });
    const shm = native.agentShmRail(handle);
    this.shmRail = shm ? this.rails[shm] : undefined;
    this.netRails = shm ? this.rails.slice(0, shm) : this.rails;
    this.address = this.rails[0]!.address;
    const fd = [0];
    check(native.agentTakeEventFd(handle, fd), 'taking the event descriptor');
    this.eventFd = fd[0]!;
  }

  /** Binds to loopback unless `iface` or `address` says otherwise. */
  static open(opts: EndpointOptions): Endpoint {
    const native = shim();
    // A provider named in code wins: the variable only fills in for 'auto'.
    const env = process.env.IXFER_PROVIDER;
    const fromEnv = opts.provider === 'auto' && !!env;
    const chosen = fromEnv
      ? pickProvider(env, opts.iface, 'from IXFER_PROVIDER')
      : pickProvider(opts.provider, opts.iface, env ? `option provider; IXFER_PROVIDER=${env} is ignored when the option names one` : 'option provider');
    const provider = coreName(chosen.name);
    const rails = planRails(chosen, opts.rails ?? 1, opts.iface, opts.address);
    const node = rails[0]!.node;
    const out: (bigint | null)[] = [null];
    check(
      native.agentCreate(
        {
          provider: chosen.name,
          node: node ?? null,
          domain: rails[0]!.domain ?? null,
          name: opts.name,
          notif_pending_cap: opts.notifications.maxPendingBytesPerPeer,
          notif_stale_ms: opts.notifications.staleMs,
          vram_mode: VRAM_MODES[opts.vram.mode],
          staging_bytes: opts.vram.stagingBytes,
          staging_chunk: opts.vram.stagingChunkBytes,
          rails: rails.length > 1 ? rails.map((r) => ({ node: r.node ?? null, domain: r.domain ?? null })) : null,
          rail_count: rails.length,
          rail_cooldown_ms: opts.railCooldownMs ?? 0,
          stripe_min: opts.stripeThresholdBytes ?? 0,
          same_host: SAME_HOST_MODES[opts.sameHost ?? 'auto'],
          link_timeout_ms: opts.linkTimeoutMs === 0 ? LINK_TIMEOUT_OFF : (opts.linkTimeoutMs ?? 0),
        },
        out,
      ),
      `creating agent '${opts.name}' on ${chosen.name}${node ? ` at ${node}` : ''}${rails.length > 1 ? ` with ${rails.length} rails` : ''}`,
    );
    const handle = out[0] as AgentHandle;
    try {
      return new Endpoint(opts.name, provider, handle);
    } catch (err) {
      native.agentDestroy(handle);
      throw err;
    }
  }

  /** The handle; ERR_NOT_ALLOWED once destroyed. */
  handle(): AgentHandle {
    if (!this.#handle) throw new NotAllowedError(`agent '${this.name}' is closed`);
    return this.#handle;
  }

  /** The handle, or undefined once destroyed (for what is harmless to skip then). */
  get live(): AgentHandle | undefined {
    return this.#handle;
  }

  /** Each rail, with what it moved so far. */
  railStatus(): RailStatus[] {
    const handle = this.handle();
    const out = new BigUint64Array(RAIL_STATS_WORDS);
    return this.rails.map((r, i) => {
      check(shim().railStatsGet(handle, i, out), `reading the counters of rail ${i}`);
      return { provider: coreName(r.provider), domain: r.domain, fabric: r.fabric, ...decodeRailStats(out) };
    });
  }

  /**
   * Joins the progress thread and closes every registration. On a thread of
   * libuv's pool: the shim lets operations the provider still holds end
   * first (up to 1 s), which must not stall the event loop.
   */
  async destroy(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined; // nothing reaches the agent while it goes
    if (!handle) return;
    await new Promise<void>((resolve, reject) =>
      shim().agentDestroy.async(handle, (err) => (err ? reject(err as Error) : resolve())),
    );
  }
}
