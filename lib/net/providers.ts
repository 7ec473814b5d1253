/** libfabric provider discovery, the attributes of a provider that matter to ixfer, and the choice of one. */
import os from 'node:os';

import { NotFoundError, NotSupportedError } from '../errors.js';
import { check, decodeProviderInfo, providerInfoBuffer, shim, type ProviderInfoRaw } from '../native/shim.js';
import { addrFormatName, isIpFormat } from './address.js';

const MR_MODE_BITS: [number, string][] = [
  [1 << 0, 'BASIC'],
  [1 << 1, 'SCALABLE'],
  [1 << 2, 'LOCAL'],
  [1 << 3, 'RAW'],
  [1 << 4, 'VIRT_ADDR'],
  [1 << 5, 'ALLOCATED'],
  [1 << 6, 'PROV_KEY'],
  [1 << 7, 'MMU_NOTIFY'],
  [1 << 8, 'RMA_EVENT'],
  [1 << 9, 'ENDPOINT'],
  [1 << 10, 'HMEM'],
  [1 << 11, 'COLLECTIVE'],
];
const PROGRESS = ['unspec', 'auto', 'manual'] as const;

export interface ProviderSummary {
  /** libfabric's name, layered providers included (e.g. "tcp;ofi_rxm"). */
  name: string;
  fabric: string;
  /** Domain: the interface or device (e.g. "lo", "mlx5_0"). */
  domain: string;
  /** The mr_mode bits the provider returned (what it needs, not what was asked). */
  mrMode: string[];
  mrModeBits: number;
  /** Local/remote pairs one provider operation takes (min of iov and rma_iov limits). */
  iovLimit: number;
  rmaIovLimit: number;
  injectSize: number;
  cqDataSize: number;
  /** Decimal string: libfabric reports up to 2^64 - 1, which a JavaScript number cannot hold exactly. */
  maxMsgSize: string;
  txSize: number;
  dataProgress: (typeof PROGRESS)[number];
  controlProgress: (typeof PROGRESS)[number];
  /** FI_HMEM offered: the provider registers device memory itself (given a libfabric built with CUDA support). */
  hmem: boolean;
  /** fi_info's addr_format: how this provider's endpoint addresses look. */
  addrFormat: string;
  addrFormatValue: number;
  /** Why ixfer refuses this provider on the loaded libfabric (Agent.create fails with ERR_NOT_SUPPORTED). */
  unsupported?: string;
}

export function summarizeProvider(raw: ProviderInfoRaw): ProviderSummary {
  const bits = Number(raw.mr_mode);
  return {
    name: raw.provider,
    fabric: raw.fabric,
    domain: raw.domain,
    mrMode: MR_MODE_BITS.filter(([bit]) => bits & bit).map(([, name]) => name),
    mrModeBits: bits,
    iovLimit: raw.iov_limit,
    rmaIovLimit: raw.rma_iov_limit,
    injectSize: Number(raw.inject_size),
    cqDataSize: Number(raw.cq_data_size),
    maxMsgSize: String(raw.max_msg_size),
    txSize: raw.tx_size,
    dataProgress: PROGRESS[raw.data_progress] ?? 'unspec',
    controlProgress: PROGRESS[raw.control_progress] ?? 'unspec',
    hmem: raw.hmem !== 0,
    addrFormat: addrFormatName(raw.addr_format),
    addrFormatValue: raw.addr_format,
    ...(raw.unsupported ? { unsupported: raw.unsupported } : {}),
  };
}

/** Providers (one row per provider and domain) offering RDM endpoints with RMA. */
export function listProviders(provider?: string): ProviderSummary[] {
  const native = shim();
  let capacity = 64;
  for (;;) {
    const buf = providerInfoBuffer(capacity);
    const count = [0];
    check(native.fabricQuery(provider ?? null, buf, capacity, count), 'listing libfabric providers');
    if (count[0]! <= capacity) {
      return Array.from({ length: count[0]! }, (_, i) => summarizeProvider(decodeProviderInfo(buf, i)));
    }
    capacity = count[0]!;
  }
}

/** The core provider name users pass ("tcp" for "tcp;ofi_rxm"). */
export function coreName(name: string): string {
  return name.split(';')[0]!;
}

/** Preference of provider 'auto': fastest fabric first; shm is intra-node only. */
const AUTO_ORDER = ['cxi', 'efa', 'verbs', 'tcp'] as const;

/**
 * The provider asked for, on interface iface if given: libfabric's full name
 * ("tcp;ofi_rxm"), a core name ("tcp": the first provider over tcp in
 * libfabric's order, native tcp on 2.x and tcp;ofi_rxm on 1.x), or 'auto'
 * (the first of AUTO_ORDER offered and not refused). `source` names where the
 * request came from, for the error message.
 */
export function pickProvider(requested: string, iface: string | undefined, source = 'option provider'): ProviderSummary {
  const providers = listProviders();
  if (iface && !providers.some((p) => p.domain === iface) && !(iface in os.networkInterfaces())) {
    // Said first: otherwise the miss reads as "no provider", which sends the user the wrong way.
    const known = [...new Set([...Object.keys(os.networkInterfaces()), ...providers.map((p) => p.domain)])];
    throw new NotFoundError(`interface '${iface}' does not exist on this host; interfaces: ${known.sort().join(', ') || 'none'}`);
  }
  const all = providers.filter((p) => !iface || p.domain === iface);
  const usable = (name: string) => all.some((p) => coreName(p.name) === name && !p.unsupported);
  const want = requested === 'auto' ? AUTO_ORDER.find(usable) : requested;
  const named = all.filter((p) => p.name === want || coreName(p.name) === want);
  const found = named.find((p) => p.name === want) ?? named[0];
  if (found?.unsupported) throw new NotSupportedError(`provider '${found.name}' (${source}) is refused: ${found.unsupported}`);
  if (!found) {
    const offered = [...new Set(all.map((p) => p.name))];
    const where = iface ? ` on interface ${iface}` : ' on this host';
    const elsewhere = iface
      ? `; '${requested}' is on: ${[...new Set(providers.filter((p) => requested === 'auto' || p.name === requested || coreName(p.name) === requested).map((p) => p.domain))].join(', ') || 'no interface'}`
      : '';
    throw new NotSupportedError(
      `provider '${requested}' (${source}) does not offer RDM endpoints with RMA${where}; ` +
        `available${iface ? ` on ${iface}` : ''}: ${offered.join(', ') || 'none'}${elsewhere}`,
    );
  }
  return found;
}

/**
 * The node to bind, for providers with IP addresses only (shm takes a node as
 * the name of its shared-memory region, so two processes given the same one
 * collide; EFA and CXI as an address of their own): `address`, else the IPv4
 * (else IPv6) address of `iface`, else loopback when neither is given.
 */
export function bindNode(p: ProviderSummary, iface: string | undefined, address: string | undefined): string | undefined {
  if (!isIpFormat(p.addrFormatValue)) return undefined;
  if (address) return address;
  if (iface) {
    const addrs = os.networkInterfaces()[iface];
    return (addrs?.find((a) => a.family === 'IPv4') ?? addrs?.[0])?.address;
  }
  return '127.0.0.1';
}

/** Where one rail opens: the node to bind (undefined: any) and the domain (interface). */
export interface RailPlan {
  node: string | undefined;
  domain: string | undefined;
}

/** What the `rails` agent option asks for: a count on the agent's interface, 'auto', or one entry per rail. */
export type RailsOption = number | 'auto' | { iface?: string | undefined; address?: string | undefined }[];

/**
 * The rails an agent on provider p opens: `count` on the agent's own node and
 * interface; 'auto' one per domain p is offered on, in libfabric's order
 * (after the agent's own interface or address when one is given); a list,
 * each entry's interface and address standing in for the agent's.
 */
export function planRails(p: ProviderSummary, rails: RailsOption, iface: string | undefined, address: string | undefined): RailPlan[] {
  const own: RailPlan = { node: bindNode(p, iface, address), domain: iface };
  if (typeof rails === 'number') return Array.from({ length: rails }, () => own);
  if (rails === 'auto') {
    const domains = [...new Set(listProviders(p.name).filter((q) => q.name === p.name && !q.unsupported).map((q) => q.domain))];
    const rest = domains.filter((d) => d !== iface).map((d) => ({ node: bindNode(p, d, undefined), domain: d }));
    return iface || address ? [own, ...rest] : rest;
  }
  return rails.map((r) => ({
    node: bindNode(p, r.iface ?? iface, r.address ?? (r.iface ? undefined : address)),
    domain: r.iface ?? iface,
  }));
}
