/**
 * The only module that talks to koffi: it finds the prebuilt shim, checks its
 * ABI version, and declares the C functions of csrc/include/ixfer.h with the
 * structs koffi converts for them. Structs that cross as raw bytes are laid
 * out in ./layout.ts. Everything above sees plain TypeScript functions,
 * branded handles and typed errors.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import koffi from 'koffi';

import { codeOfStatus, LibraryMissingError, makeError } from '../errors.js';

/** The ABI this TypeScript expects (IXFER_ABI_VERSION in ixfer.h). */
export const EXPECTED_ABI_VERSION = 4;

/** The package's root: this file is dist/native/shim.js. */
export const packageRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The ixfer package's version (package.json), for `--version` and reports. */
export const packageVersion = (createRequire(import.meta.url)(path.join(packageRoot, 'package.json')) as { version: string }).version;

declare const brand: unique symbol;
type Handle<B extends string> = bigint & { readonly [brand]: B };
export type AgentHandle = Handle<'ixfer_agent'>;
export type MrHandle = Handle<'ixfer_mr'>;

export interface ProviderInfoRaw {
  provider: string;
  fabric: string;
  domain: string;
  mr_mode: number | bigint;
  max_msg_size: number | bigint;
  inject_size: number | bigint;
  cq_data_size: number | bigint;
  caps: number | bigint;
  iov_limit: number;
  rma_iov_limit: number;
  tx_size: number;
  data_progress: number;
  control_progress: number;
  hmem: number;
  addr_format: number;
  /** Why ixfer refuses the provider, or ''. */
  unsupported: string;
}

const ProviderInfo = koffi.struct('ixfer_provider_info', {
  provider: 'char[64]',
  fabric: 'char[64]',
  domain: 'char[64]',
  mr_mode: 'uint64_t',
  max_msg_size: 'uint64_t',
  inject_size: 'uint64_t',
  cq_data_size: 'uint64_t',
  caps: 'uint64_t',
  iov_limit: 'uint32_t',
  rma_iov_limit: 'uint32_t',
  tx_size: 'uint32_t',
  data_progress: 'uint32_t',
  control_progress: 'uint32_t',
  hmem: 'uint32_t',
  addr_format: 'uint32_t',
  reserved: 'uint32_t',
  unsupported: 'char[256]',
});
const PROVIDER_INFO_BYTES = koffi.sizeof(ProviderInfo);

koffi.struct('ixfer_rail_config', {
  node: 'const char *',
  domain: 'const char *',
});

koffi.struct('ixfer_agent_config', {
  provider: 'const char *',
  node: 'const char *',
  domain: 'const char *',
  name: 'const char *',
  notif_pending_cap: 'uint64_t',
  notif_stale_ms: 'uint32_t',
  vram_mode: 'uint32_t',
  staging_bytes: 'uint64_t',
  staging_chunk: 'uint64_t',
  rails: 'const ixfer_rail_config *',
  rail_count: 'uint32_t',
  rail_cooldown_ms: 'uint32_t',
  stripe_min: 'uint64_t',
  same_host: 'uint32_t',
  link_timeout_ms: 'uint32_t',
});

export interface RailConfig {
  node: string | null;
  domain: string | null;
}

koffi.struct('ixfer_staging_stats', {
  pool_bytes: 'uint64_t',
  chunk_bytes: 'uint64_t',
  chunks_busy: 'uint32_t',
  chunks_peak: 'uint32_t',
  pieces: 'uint64_t',
  served: 'uint64_t',
  serve_failed: 'uint64_t',
  copied_bytes: 'uint64_t',
});
export interface StagingStatsRaw {
  pool_bytes: U64;
  chunk_bytes: U64;
  chunks_busy: number;
  chunks_peak: number;
  pieces: U64;
  served: U64;
  serve_failed: U64;
  copied_bytes: U64;
}

export interface AgentConfig {
  provider: string;
  node: string | null;
  domain: string | null;
  name: string;
  notif_pending_cap: number;
  notif_stale_ms: number;
  /** IXFER_VRAM_AUTO, _STAGED, _GPUDIRECT */
  vram_mode: number;
  staging_bytes: number;
  staging_chunk: number;
  /** One entry per rail (rail 0 first), or null: rail_count rails on node/domain. */
  rails: RailConfig[] | null;
  rail_count: number;
  /** 0: the shim's default (1000 ms). */
  rail_cooldown_ms: number;
  /** 0: the shim's default (128 KiB). */
  stripe_min: number;
  /** IXFER_SAME_HOST_AUTO, _SHM, _OFF */
  same_host: number;
  /** 0: the shim's default (2000 ms); LINK_TIMEOUT_OFF: none. */
  link_timeout_ms: number;
}

/** ixfer_agent_config.link_timeout_ms: no deadline on the rails' TCP connections. */
export const LINK_TIMEOUT_OFF = 0xffff_ffff;

koffi.opaque('ixfer_agent');
koffi.opaque('ixfer_mr');

/** Resolves the shim file: IXFER_SHIM if set, else what node-gyp-build finds. */
export function shimPath(): string {
  const override = process.env.IXFER_SHIM;
  if (override) return override;
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  try {
    return nodeGypBuild.path(packageRoot);
  } catch (err) {
    throw new LibraryMissingError(
      `no ixfer shim for ${process.platform}-${process.arch}: reinstall the package, or build one ` +
        `with 'npx node-gyp rebuild' in ${packageRoot}`,
      { cause: err },
    );
  }
}

function declare(lib: ReturnType<typeof koffi.load>) {
  const f = (sig: string) => lib.func(sig);
  return {
    abiVersion: f('int32_t ixfer_abi_version()') as () => number,
    version: f('const char *ixfer_version()') as () => string,
    buildHash: f('const char *ixfer_build_hash()') as () => string,
    lastError: f('const char *ixfer_last_error()') as () => string,

    fabricLoad: f('int32_t ixfer_fabric_load()') as () => number,
    fabricPath: f('const char *ixfer_fabric_path()') as () => string,
    fabricVersion: f('uint32_t ixfer_fabric_version()') as () => number,
    fabricStrerror: f('const char *ixfer_fabric_strerror(int32_t fi_errno)') as (e: number) => string,
    fabricHeaderVersion: f('uint32_t ixfer_fabric_header_version()') as () => number,
    fabricApiVersion: f('uint32_t ixfer_fabric_api_version()') as () => number,
    fabricQuery: f(
      'int32_t ixfer_fabric_query(const char *prov, _Out_ uint8_t *out, uint32_t max, _Out_ uint32_t *count)',
    ) as (prov: string | null, out: Buffer, max: number, count: number[]) => number,

    cudaPath: f('const char *ixfer_cuda_path()') as () => string,
    cudaDriverVersion: f('int32_t ixfer_cuda_driver_version(_Out_ int32_t *out)') as (o: number[]) => number,
    cudaDeviceCount: f('int32_t ixfer_cuda_device_count(_Out_ int32_t *out)') as (o: number[]) => number,

    cufilePath: f('const char *ixfer_cufile_path()') as () => string,
    cufileVersion: f('int32_t ixfer_cufile_version(_Out_ int32_t *out)') as (o: number[]) => number,

    agentCreate: f('int32_t ixfer_agent_create(const ixfer_agent_config *cfg, _Out_ ixfer_agent **out)') as (
      cfg: AgentConfig,
      out: (bigint | null)[],
    ) => number,
    agentDestroy: f('void ixfer_agent_destroy(ixfer_agent *agent)') as ((a: AgentHandle) => void) & {
      async(a: AgentHandle, done: (err: unknown) => void): void;
    },
    agentInfo: f('int32_t ixfer_agent_info(ixfer_agent *agent, _Out_ uint8_t *out)') as (
      a: AgentHandle,
      out: Buffer,
    ) => number,
    agentAddress: f('int32_t ixfer_agent_address(ixfer_agent *agent, _Out_ uint8_t *buf, _Inout_ uint64_t *len)') as (
      a: AgentHandle,
      buf: Buffer,
      len: (number | bigint)[],
    ) => number,
    agentRailCount: f('uint32_t ixfer_agent_rail_count(ixfer_agent *agent)') as (a: AgentHandle) => number,
    agentShmRail: f('uint32_t ixfer_agent_shm_rail(ixfer_agent *agent)') as (a: AgentHandle) => number,
    agentRailInfo: f('int32_t ixfer_agent_rail_info(ixfer_agent *agent, uint32_t rail, _Out_ uint8_t *out)') as (
      a: AgentHandle,
      rail: number,
      out: Buffer,
    ) => number,
    agentRailAddress: f(
      'int32_t ixfer_agent_rail_address(ixfer_agent *agent, uint32_t rail, _Out_ uint8_t *buf, _Inout_ uint64_t *len)',
    ) as (a: AgentHandle, rail: number, buf: Buffer, len: (number | bigint)[]) => number,
    railStatsGet: f('int32_t ixfer_rail_stats_get(ixfer_agent *agent, uint32_t rail, _Out_ uint64_t *out)') as (
      a: AgentHandle,
      rail: number,
      out: BigUint64Array,
    ) => number,
    agentTakeEventFd: f('int32_t ixfer_agent_take_event_fd(ixfer_agent *agent, _Out_ int32_t *fd)') as (
      a: AgentHandle,
      fd: number[],
    ) => number,
    agentDrain: f('uint32_t ixfer_agent_drain(ixfer_agent *agent, _Out_ uint8_t *out, uint32_t max)') as (
      a: AgentHandle,
      out: Buffer,
      max: number,
    ) => number,

    mrRegister: f(
      'int32_t ixfer_mr_register(ixfer_agent *agent, uint64_t addr, uint64_t len, _Out_ uint64_t *key, _Out_ ixfer_mr **out)',
    ) as (a: AgentHandle, addr: number | bigint, len: number, key: (number | bigint)[], out: (bigint | null)[]) => number,
    mrDeregister: f('int32_t ixfer_mr_deregister(ixfer_mr *mr)') as (m: MrHandle) => number,
    vramRegister: f(
      'int32_t ixfer_vram_register(ixfer_agent *agent, uint64_t addr, uint64_t len, int32_t dev, uint32_t flags, ' +
        '_Out_ uint64_t *key, _Out_ uint32_t *path, _Out_ ixfer_mr **out)',
    ) as (
      a: AgentHandle,
      addr: number,
      len: number,
      dev: number,
      flags: number,
      key: (number | bigint)[],
      path: number[],
      out: (bigint | null)[],
    ) => number,
    stagingStatsGet: f('int32_t ixfer_staging_stats_get(ixfer_agent *agent, _Out_ ixfer_staging_stats *out)') as (
      a: AgentHandle,
      out: Partial<StagingStatsRaw>,
    ) => number,
    peerRemove: f('int32_t ixfer_peer_remove(ixfer_agent *agent, uint64_t peer)') as (
      a: AgentHandle,
      peer: number | bigint,
    ) => number,
    peerInsert: f('int32_t ixfer_peer_insert(ixfer_agent *agent, const uint8_t *addr, uint64_t len, _Out_ uint64_t *peer)') as (
      a: AgentHandle,
      addr: Uint8Array,
      len: number,
      peer: (number | bigint)[],
    ) => number,

    peerInsertRails: f(
      'int32_t ixfer_peer_insert_rails(ixfer_agent *agent, const uint8_t *addrs, const uint64_t *lens, uint32_t count, _Out_ uint64_t *peer)',
    ) as (a: AgentHandle, addrs: Uint8Array, lens: BigUint64Array, count: number, peer: (number | bigint)[]) => number,

    peerInsertShm: f('int32_t ixfer_peer_insert_shm(ixfer_agent *agent, uint64_t peer, const uint8_t *addr, uint64_t len)') as (
      a: AgentHandle,
      peer: number | bigint,
      addr: Uint8Array,
      len: number,
    ) => number,

    xferPost: f(
      'int32_t ixfer_xfer_post(ixfer_agent *agent, uint32_t op, uint64_t peer, const uint8_t *pairs, uint32_t count, ' +
        'uint64_t user_id, const uint8_t *notif, uint64_t notif_len, uint32_t flags)',
    ) as (
      a: AgentHandle,
      op: number,
      peer: number | bigint,
      pairs: Uint8Array,
      count: number,
      id: number,
      notif: Uint8Array | null,
      notifLen: number,
      flags: number,
    ) => number,
    notify: f(
      'int32_t ixfer_notify(ixfer_agent *agent, uint64_t peer, const uint8_t *data, uint64_t len, uint64_t seq, uint64_t user_id)',
    ) as (a: AgentHandle, peer: number | bigint, data: Uint8Array, len: number, seq: number, id: number) => number,
    notifForget: f('int32_t ixfer_notif_forget(ixfer_agent *agent, const char *name)') as (
      a: AgentHandle,
      name: string,
    ) => number,
    notifMalformed: f('uint64_t ixfer_notif_malformed(ixfer_agent *agent)') as (a: AgentHandle) => number | bigint,
    notifPending: f('uint64_t ixfer_notif_pending(ixfer_agent *agent)') as (a: AgentHandle) => number | bigint,
    notifFree: f('void ixfer_notif_free(uint64_t n)') as (n: number) => void,
    xferCancel: f('int32_t ixfer_xfer_cancel(ixfer_agent *agent, uint64_t user_id, int32_t status)') as (
      a: AgentHandle,
      id: number,
      status: number,
    ) => number,

    memMap: f('int32_t ixfer_mem_map(uint64_t len, _Out_ uint64_t *addr)') as (len: number, out: (number | bigint)[]) => number,
    memRetire: f('void ixfer_mem_retire(uint64_t addr, uint64_t len)') as ((addr: number, len: number) => void) & {
      async(addr: number, len: number, done: (err: unknown) => void): void;
    },
    memUnmap: f('void ixfer_mem_unmap(uint64_t addr, uint64_t len)') as ((addr: number, len: number) => void) & {
      async(addr: number, len: number, done: (err: unknown) => void): void;
    },
    memAddress: f('uint64_t ixfer_mem_address(const void *ptr)') as (p: ArrayBufferView | ArrayBuffer) => number | bigint,

    ...declareFiles(f),
  };
}

// ---- CUDA memory and files (csrc/src/gpu/cuda.c, csrc/src/file/*.c) -----------------

export type FileHandle = Handle<'ixfer_file'>;
export type FileEngineHandle = Handle<'ixfer_file_engine'>;

koffi.opaque('ixfer_file');
koffi.opaque('ixfer_file_engine');
koffi.struct('ixfer_file_engine_config', { threads: 'uint32_t', gds_batch: 'uint32_t', chunk_bytes: 'uint64_t' });
koffi.struct('ixfer_file_info', {
  size: 'uint64_t',
  flags: 'uint32_t',
  mem_align: 'uint32_t',
  offset_align: 'uint32_t',
  reserved: 'uint32_t',
});

type U64 = number | bigint;
export interface FileInfoRaw {
  size: U64;
  flags: number;
  mem_align: number;
  offset_align: number;
}
type Out<T> = T[];

function declareFiles(f: (sig: string) => ReturnType<ReturnType<typeof koffi.load>['func']>) {
  return {
    cudaAlloc: f('int32_t ixfer_cuda_alloc(int32_t dev, uint64_t len, _Out_ uint64_t *addr)') as (
      dev: number,
      len: number,
      out: Out<U64>,
    ) => number,
    cudaFree: f('int32_t ixfer_cuda_free(uint64_t addr)') as (addr: number) => number,
    cudaToDevice: f('int32_t ixfer_cuda_to_device(uint64_t dst, const void *src, uint64_t len)') as (
      dst: number,
      src: Uint8Array,
      len: number,
    ) => number,
    cudaFromDevice: f('int32_t ixfer_cuda_from_device(_Out_ uint8_t *dst, uint64_t src, uint64_t len)') as (
      dst: Uint8Array,
      src: number,
      len: number,
    ) => number,
    cudaFill: f('int32_t ixfer_cuda_fill(uint64_t addr, uint32_t value, uint64_t len)') as (
      addr: number,
      value: number,
      len: number,
    ) => number,
    cudaPointerDevice: f('int32_t ixfer_cuda_pointer_device(uint64_t addr, _Out_ int32_t *dev)') as (
      addr: number,
      dev: Out<number>,
    ) => number,

    fileOpen: f('int32_t ixfer_file_open(const char *path, uint32_t flags, _Out_ ixfer_file **out)') as (
      path: string,
      flags: number,
      out: Out<bigint | null>,
    ) => number,
    fileAdopt: f('int32_t ixfer_file_adopt(int32_t fd, _Out_ ixfer_file **out)') as (
      fd: number,
      out: Out<bigint | null>,
    ) => number,
    fileStat: f('int32_t ixfer_file_stat(ixfer_file *file, _Out_ ixfer_file_info *out)') as (
      file: FileHandle,
      out: Partial<FileInfoRaw>,
    ) => number,
    fileUseCufile: f('int32_t ixfer_file_use_cufile(ixfer_file *file)') as (file: FileHandle) => number,
    fileClose: f('void ixfer_file_close(ixfer_file *file)') as (file: FileHandle) => void,
    cufileBufRegister: f('int32_t ixfer_cufile_buf_register(uint64_t addr, uint64_t len)') as (
      addr: number,
      len: number,
    ) => number,
    cufileBufDeregister: f('int32_t ixfer_cufile_buf_deregister(uint64_t addr)') as (addr: number) => number,

    fileEngineCreate: f(
      'int32_t ixfer_file_engine_create(ixfer_agent *agent, const ixfer_file_engine_config *cfg, _Out_ ixfer_file_engine **out)',
    ) as (
      agent: AgentHandle,
      cfg: { threads: number; gds_batch: number; chunk_bytes: number },
      out: Out<bigint | null>,
    ) => number,
    fileEngineDestroy: f('void ixfer_file_engine_destroy(ixfer_file_engine *engine)') as ((e: FileEngineHandle) => void) & {
      async(e: FileEngineHandle, done: (err: unknown) => void): void;
    },
    fileXferPost: f(
      'int32_t ixfer_file_xfer_post(ixfer_file_engine *engine, uint32_t op, uint32_t kind, const uint8_t *pairs, uint32_t count, uint64_t user_id)',
    ) as (e: FileEngineHandle, op: number, kind: number, pairs: Uint8Array, count: number, id: number) => number,
    fileXferCancel: f('int32_t ixfer_file_xfer_cancel(ixfer_file_engine *engine, uint64_t user_id, int32_t status)') as (
      e: FileEngineHandle,
      id: number,
      status: number,
    ) => number,
  };
}

export type Shim = ReturnType<typeof declare> & { path: string };

let loaded: Shim | undefined;

/** Loads the shim once. Throws LibraryMissingError naming the file and the fix. */
export function shim(): Shim {
  if (loaded) return loaded;
  const file = shimPath();
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load(file);
  } catch (err) {
    throw new LibraryMissingError(`cannot load the ixfer shim ${file}: ${(err as Error).message}`, { cause: err });
  }
  // Check the ABI before declaring anything else: a foreign shim may lack symbols.
  const abi = (lib.func('int32_t ixfer_abi_version()') as () => number)();
  if (abi !== EXPECTED_ABI_VERSION) {
    throw new LibraryMissingError(
      `the ixfer shim ${file} has ABI version ${abi}, but this ixfer needs ABI version ` +
        `${EXPECTED_ABI_VERSION}: rebuild it ('npx node-gyp rebuild') or reinstall ixfer`,
    );
  }
  loaded = Object.assign(declare(lib), { path: file });
  return loaded;
}

/** Throws the typed error for a failed shim call, with the shim's message. */
export function check(status: number, context: string): void {
  if (status === 0) return;
  const native = shim().lastError();
  throw makeError(codeOfStatus(status), native ? `${context}: ${native}` : context, { nativeMessage: native });
}

/** Normalises a uint64 from koffi (number when it fits in 2^53, else bigint). */
export function toBigInt(v: number | bigint): bigint {
  return typeof v === 'bigint' ? v : BigInt(v);
}

export function decodeProviderInfo(buf: Buffer, index = 0): ProviderInfoRaw {
  return koffi.decode(buf, index * PROVIDER_INFO_BYTES, ProviderInfo) as ProviderInfoRaw;
}

export function providerInfoBuffer(count: number): Buffer {
  return Buffer.alloc(PROVIDER_INFO_BYTES * count);
}

/** An ArrayBuffer over native memory; valid only while that memory is. */
export function viewNative(addr: number | bigint, len: number): ArrayBuffer {
  return koffi.view(addr, len);
}
