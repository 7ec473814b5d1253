/** libfabric provider discovery and the attributes of a provider that matter to ixfer. */
import { check, decodeProviderInfo, providerInfoBuffer, shim, type ProviderInfoRaw } from './native.js';

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
  maxMsgSize: number;
  txSize: number;
  dataProgress: (typeof PROGRESS)[number];
  controlProgress: (typeof PROGRESS)[number];
  /** FI_HMEM: the provider registers device (CUDA) memory itself. */
  hmem: boolean;
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
    maxMsgSize: Number(raw.max_msg_size),
    txSize: raw.tx_size,
    dataProgress: PROGRESS[raw.data_progress] ?? 'unspec',
    controlProgress: PROGRESS[raw.control_progress] ?? 'unspec',
    hmem: raw.hmem !== 0,
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
export const AUTO_ORDER = ['cxi', 'efa', 'verbs', 'tcp'] as const;
