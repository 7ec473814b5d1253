/**
 * The structs of csrc/include/ixfer.h that cross as raw bytes, and the
 * constants that go with them: packed and decoded here, and nowhere else.
 * (Structs that koffi converts are declared with the functions, in shim.ts.)
 */
import { viewNative, type Shim } from './shim.js';

export const OP_WRITE = 0;
export const OP_READ = 1;
export const POST_NOTIFY = 1;
/** Network rails even to a peer reached over shm (remote addresses in the network provider's form). */
export const POST_NETWORK = 2;
/** Agent config same_host: IXFER_SAME_HOST_AUTO, _SHM, _OFF. */
export const SAME_HOST_MODES = { auto: 0, shm: 1, off: 2 } as const;

export const FILE_READ = 1;
export const FILE_WRITE = 2;
export const FILE_CREATE = 4;
export const FILE_TRUNCATE = 8;
export const FILE_DIRECT = 16;
export const FILE_MEMORY = 32;
export const FILE_ENGINE_KINDS = { posix: 0, gds: 1, gds_mt: 2 } as const;

/** fi_info mr_mode bit: remote addresses are virtual addresses, not offsets into the region. */
export const FI_MR_VIRT_ADDR = 1 << 4;

/** ixfer_iov_pair.flags: the remote region is VRAM its agent stages (remote address: virtual, whatever mr_mode). */
export const PAIR_REMOTE_STAGED = 1;

/** ixfer_vram_register flags, and its *path for GPUDirect (else IXFER_PATH_STAGED). */
export const VRAM_REG_STAGED = 1;
export const PATH_GPUDIRECT = 1;
/** ixfer_agent_config.vram_mode */
export const VRAM_MODES = { auto: 0, staged: 1, gpudirect: 2 } as const;

/**
 * ixfer_iov_pair as u32 words (little-endian halves of five uint64_t, then
 * u32 flags and u32 reserved), written without a BigInt per field: at 100,000
 * pairs a BigInt store each costs more than the rest of building a transfer.
 * The local half (local_addr, len, local_mr) is words 0..5; the remote half
 * (remote_addr, remote_key, flags) starts at PAIR_REMOTE_WORD.
 */
export const PAIR_WORDS = 12;
export const PAIR_LEN_WORD = 2;
export const PAIR_REMOTE_WORD = 6;

const FILE_PAIR_BYTES = 48;

/** ixfer_file_pair[]: addr, len, region base, file handle, file offset (u64 each), device (i32, -1 for host memory). */
export function packFilePairs(
  entries: { addr: number; len: number; base: number; file: bigint; offset: number; device: number }[],
): Uint8Array {
  const buf = Buffer.alloc(entries.length * FILE_PAIR_BYTES);
  entries.forEach((e, i) => {
    const o = i * FILE_PAIR_BYTES;
    buf.writeBigUInt64LE(BigInt(e.addr), o);
    buf.writeBigUInt64LE(BigInt(e.len), o + 8);
    buf.writeBigUInt64LE(BigInt(e.base), o + 16);
    buf.writeBigUInt64LE(e.file, o + 24);
    buf.writeBigUInt64LE(BigInt(e.offset), o + 32);
    buf.writeInt32LE(e.device, o + 40);
  });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** ixfer_event: u64 id, u32 type, i32 status, i32 provider errno, u32 detail. */
export const EVENT_BYTES = 24;
export const EVENT_XFER_DONE = 1;
/** A notification arrived: the id is the address of an ixfer_notification (see takeNotification). */
export const EVENT_NOTIF = 2;
/** A rail (detail: its index) went out of use (status: the error) or came back (status 0) towards the peer whose handle is the id (2^64 - 1: every peer). */
export const EVENT_RAIL = 3;

/** Calls visit for each of the n events in buf; no allocation per event (one drain serves every transfer). */
export function forEachEvent(
  buf: Buffer,
  n: number,
  visit: (type: number, id: number, status: number, fiErrno: number, detail: number) => void,
): void {
  for (let i = 0; i < n; i++) {
    const o = i * EVENT_BYTES;
    const id = buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * 2 ** 32;
    visit(buf.readUInt32LE(o + 8), id, buf.readInt32LE(o + 12), buf.readInt32LE(o + 16), buf.readUInt32LE(o + 20));
  }
}

/** ixfer_notification: len u64, name_len u32, status i32, name[256], then data. */
const NOTIF_HEADER_BYTES = 272;

export interface NativeNotification {
  sender: string;
  status: number;
  /** Announced length (for a dropped message, no data came with it). */
  len: number;
  data: Uint8Array | undefined;
}

/** Copies an ixfer_notification out of native memory and frees it. */
export function takeNotification(native: Shim, addr: number): NativeNotification {
  const head = Buffer.from(viewNative(addr, NOTIF_HEADER_BYTES));
  const len = Number(head.readBigUInt64LE(0));
  const nameLen = Math.min(head.readUInt32LE(8), NOTIF_HEADER_BYTES - 16);
  const status = head.readInt32LE(12);
  const sender = head.toString('utf8', 16, 16 + nameLen);
  let data: Uint8Array | undefined;
  if (status === 0) {
    data = new Uint8Array(len);
    if (len) data.set(new Uint8Array(viewNative(addr + NOTIF_HEADER_BYTES, len)));
  }
  native.notifFree(addr);
  return { sender, status, len, data };
}

/** ixfer_rail_stats: what one rail moved, and its failovers. */
export interface RailStats {
  ops: number;
  bytes: number;
  /** Ops that completed with an error. */
  failed: number;
  /** Failed ops (of any rail) posted again on this one. */
  reposted: number;
  /** Times it was taken out of use, and came back. */
  downs: number;
  rejoins: number;
  /** In use (or being tried again) towards some peer that has it; false while cooling off towards all of them. */
  up: boolean;
  /** Peers towards which it is cooling off. */
  peersDown: number;
}

/** ixfer_rail_stats: u64 ops, bytes, failed, reposted, then u32 downs, rejoins, up, peers_down. */
export const RAIL_STATS_WORDS = 6;

export function decodeRailStats(out: BigUint64Array): RailStats {
  const u32 = new Uint32Array(out.buffer, out.byteOffset, RAIL_STATS_WORDS * 2);
  return {
    ops: Number(out[0]),
    bytes: Number(out[1]),
    failed: Number(out[2]),
    reposted: Number(out[3]),
    downs: u32[8]!,
    rejoins: u32[9]!,
    up: u32[10] === 1,
    peersDown: u32[11]!,
  };
}
