/**
 * What this host offers ixfer: the shim, libfabric and its providers, the CUDA
 * driver and cuFile. A missing library is reported, with what it disables and
 * how to fix it, never thrown.
 */
import fs from 'node:fs';
import os from 'node:os';

import { IxferError } from './errors.js';
import { check, packageVersion, shim } from './native/shim.js';
import { hostIdentity } from './net/host.js';
import { coreName, listProviders, pickProvider, planRails, type ProviderSummary, type RailsOption } from './net/providers.js';

export interface LibraryStatus {
  available: boolean;
  /** Path opened, or the one that was tried. */
  path: string;
  /** Why it is unavailable and how to fix it. */
  error?: string;
  /** What does not work without it. */
  disables?: string;
}

/** The machine a report comes from, so that reports from different hosts can be told apart. */
export interface HostInfo {
  hostname: string;
  /** `os.type()` and `os.release()`, e.g. "Linux 6.8.0". */
  os: string;
  arch: string;
  cpus: number;
  node: string;
}

export interface Info {
  host: HostInfo;
  /** The ixfer package version. */
  ixfer: string;
  shim: { version: string; abi: number; buildHash: string; path: string };
  libfabric: LibraryStatus & {
    /** The loaded library's own version (fi_version()). */
    version?: string;
    /** The headers the shim was compiled with: the oldest libfabric it loads. */
    builtAgainst: string;
    /** The API version the shim asks fi_getinfo for, whatever the library. */
    apiVersion: string;
    providers: ProviderSummary[];
    /** The rails an agent asking for `rails` (default 'auto') would open on the provider 'auto' picks, or why none. */
    rails?:
      | {
          asked: RailsOption;
          provider: string;
          rails: { node?: string; domain?: string }[];
          /** Whether sameHost 'auto' adds an shm rail after them (for peers on this host), or why not; and this host's identity in the metadata. */
          sameHost: { shm: boolean; why?: string; host?: string };
        }
      | { asked: RailsOption; error: string };
  };
  cuda: LibraryStatus & { driverVersion?: string; deviceCount?: number };
  cufile: LibraryStatus & {
    version?: string;
    /** cuFile's configuration file and whether it allows compatibility mode (POSIX underneath). */
    config: { path: string; allowCompatMode: boolean | null };
    /** The nvidia-fs kernel driver that true GPUDirect Storage needs. */
    nvidiaFs: boolean;
    /** cuFile will run in compatibility mode (no nvidia-fs, compat allowed). */
    compatMode: boolean;
  };
}

const fiVersion = (v: number) => `${v >>> 16}.${v & 0xffff}`;

function attempt<T>(fn: () => T): { value?: T; error?: string } {
  try {
    return { value: fn() };
  } catch (err) {
    if (err instanceof IxferError) return { error: err.nativeMessage || err.message };
    throw err;
  }
}

function libfabricInfo(): Info['libfabric'] {
  const native = shim();
  const builtAgainst = fiVersion(native.fabricHeaderVersion());
  const apiVersion = fiVersion(native.fabricApiVersion());
  const loaded = attempt(() => check(native.fabricLoad(), 'opening libfabric'));
  if (loaded.error) {
    return {
      available: false,
      path: native.fabricPath(),
      error: loaded.error,
      disables: 'all network transfers (agents cannot be created)',
      builtAgainst,
      apiVersion,
      providers: [],
    };
  }
  const providers = attempt(() => listProviders());
  return {
    available: true,
    path: native.fabricPath(),
    version: fiVersion(native.fabricVersion()),
    builtAgainst,
    apiVersion,
    providers: providers.value ?? [],
    ...(providers.error ? { error: providers.error } : {}),
  };
}

function cudaInfo(): Info['cuda'] {
  const native = shim();
  const count = [0];
  const version = [0];
  const r = attempt(() => {
    check(native.cudaDriverVersion(version), 'CUDA driver version');
    check(native.cudaDeviceCount(count), 'CUDA device count');
  });
  if (r.error) {
    return { available: false, path: native.cudaPath(), error: r.error, disables: 'VRAM (GPU memory) transfers' };
  }
  const v = version[0]!;
  return {
    available: true,
    path: native.cudaPath(),
    driverVersion: `${Math.floor(v / 1000)}.${(v % 1000) / 10}`,
    deviceCount: count[0]!,
  };
}

/** Reads allow_compat_mode from cuFile's JSON configuration (which allows comments). */
function cufileConfig(): Info['cufile']['config'] {
  const file = process.env.CUFILE_ENV_PATH_JSON || '/etc/cufile.json';
  let allowCompatMode: boolean | null = null;
  try {
    const text = fs.readFileSync(file, 'utf8').replace(/^\s*\/\/.*$/gm, '');
    const m = /"allow_compat_mode"\s*:\s*(true|false)/.exec(text);
    if (m) allowCompatMode = m[1] === 'true';
  } catch {
    // no configuration file: cuFile's built-in defaults apply
  }
  return { path: file, allowCompatMode };
}

function cufileInfo(): Info['cufile'] {
  const native = shim();
  const config = cufileConfig();
  const nvidiaFs = fs.existsSync('/proc/driver/nvidia-fs/version');
  // cuFile's default is to allow compatibility mode when the file does not say.
  const compatMode = !nvidiaFs && config.allowCompatMode !== false;
  const version = [0];
  const r = attempt(() => check(native.cufileVersion(version), 'cuFile version'));
  if (r.error) {
    return {
      available: false,
      path: native.cufilePath(),
      error: r.error,
      disables: 'GPUDirect Storage (file transfers use POSIX I/O)',
      config,
      nvidiaFs,
      compatMode,
    };
  }
  const v = version[0]!;
  return {
    available: true,
    path: native.cufilePath(),
    ...(v >= 0 ? { version: `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}.${v % 10}` } : {}),
    config,
    nvidiaFs,
    compatMode,
  };
}

/** The libfabric that loads, as major.minor; throws LibraryMissingError when none does. */
export function libfabricVersion(): string {
  const native = shim();
  check(native.fabricLoad(), 'opening libfabric');
  return fiVersion(native.fabricVersion());
}

export function hostInfo(): HostInfo {
  return { hostname: os.hostname(), os: `${os.type()} ${os.release()}`, arch: os.arch(), cpus: os.availableParallelism(), node: process.version };
}

/** Everything `ixfer info` reports. Throws only when the shim itself cannot load. */
/** The rails an agent would open for `asked` (IXFER_PROVIDER, else 'auto', picks the provider). */
function railsInfo(asked: RailsOption): NonNullable<Info['libfabric']['rails']> {
  const r = attempt(() => {
    const p = pickProvider(process.env.IXFER_PROVIDER || 'auto', undefined);
    const rails = planRails(p, asked, undefined, undefined).map((x) => ({ ...(x.node ? { node: x.node } : {}), ...(x.domain ? { domain: x.domain } : {}) }));
    return { asked, provider: p.name, rails, sameHost: sameHostPlan(p) };
  });
  return r.value ?? { asked, error: r.error! };
}

/** What Agent.create's sameHost 'auto' would do on provider p (agent.c open_shm_rail decides the same way). */
function sameHostPlan(p: ProviderSummary): { shm: boolean; why?: string; host?: string } {
  const shm = listProviders('shm').find((x) => x.name === 'shm');
  const host = hostIdentity();
  const why = !shm
    ? 'this libfabric offers no shm'
    : shm.unsupported
      ? 'shm is refused on this libfabric (see refused: above)'
      : coreName(p.name) === 'shm'
        ? 'the provider is shm already'
        : p.mrMode.some((m) => m === 'PROV_KEY' || m === 'ENDPOINT')
          ? `${p.name} picks memory keys itself`
          : !host
            ? 'no host identity (/proc or /dev/shm unreadable)'
            : undefined;
  return { shm: !why, ...(why ? { why } : {}), ...(host ? { host } : {}) };
}

export function info(rails: RailsOption = 'auto'): Info {
  const native = shim();
  const fabric = libfabricInfo();
  return {
    host: hostInfo(),
    ixfer: packageVersion,
    shim: { version: native.version(), abi: native.abiVersion(), buildHash: native.buildHash(), path: native.path },
    libfabric: fabric.available ? { ...fabric, rails: railsInfo(rails) } : fabric,
    cuda: cudaInfo(),
    cufile: cufileInfo(),
  };
}

/** A plain-text report for people. */
export function formatInfo(i: Info): string {
  const lines: string[] = [];
  const section = (title: string) => lines.push('', title);
  const row = (k: string, v: string | number) => lines.push(`  ${k.padEnd(18)} ${v}`);
  const missing = (s: LibraryStatus) => {
    row('status', 'MISSING');
    if (s.error) row('why', s.error);
    if (s.disables) row('disables', s.disables);
  };

  lines.push(`ixfer ${i.ixfer} on ${i.host.hostname} (${i.host.os}, ${i.host.arch}, Node ${i.host.node})`);
  row('shim', i.shim.path);
  row('ABI', i.shim.abi);
  row('build hash', i.shim.buildHash);

  section('libfabric');
  row('library', i.libfabric.path);
  row('built against', i.libfabric.builtAgainst);
  if (!i.libfabric.available) missing(i.libfabric);
  else {
    row('version', i.libfabric.version ?? '?');
    row('API in use', i.libfabric.apiVersion);
    if (i.libfabric.error) row('error', i.libfabric.error);
    if (i.libfabric.providers.length === 0) row('providers', 'none offers FI_EP_RDM with RMA on this host');
    const header = ['provider', 'domain', 'mr_mode', 'addr_format', 'iov', 'rma_iov', 'inject', 'cq_data', 'progress', 'hmem'];
    const rows = i.libfabric.providers.map((p) => [
      p.name,
      p.domain,
      p.mrMode.length ? p.mrMode.join('|') : '0',
      p.addrFormat.replace(/^FI_/, ''),
      String(p.iovLimit),
      String(p.rmaIovLimit),
      String(p.injectSize),
      String(p.cqDataSize),
      p.dataProgress,
      p.hmem ? 'yes*' : 'no',
    ]);
    if (rows.length) {
      const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
      for (const r of [header, ...rows]) lines.push('  ' + r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
    }
    if (i.libfabric.providers.some((p) => p.hmem)) {
      // shm answers FI_HMEM queries whether or not libfabric was built with CUDA.
      lines.push('  * FI_HMEM offered; moving CUDA memory also needs a libfabric built with CUDA support (--with-cuda)');
    }
    const refused = new Map(i.libfabric.providers.filter((p) => p.unsupported).map((p) => [p.name, p.unsupported!]));
    for (const [name, why] of refused) lines.push(`  refused: ${name}: ${why}`);
    const rails = i.libfabric.rails;
    if (rails && 'error' in rails) row(`rails (${rails.asked})`, rails.error);
    else if (rails) {
      row(`rails (${rails.asked})`, `${rails.rails.length} on ${rails.provider}`);
      rails.rails.forEach((r, n) => row(`  rail ${n}`, `${r.domain ?? '(any domain)'} ${r.node ?? ''}`.trimEnd()));
      const same = rails.sameHost;
      row(same.shm ? `  rail ${rails.rails.length}` : 'same host', same.shm ? 'shm (peers on this host; sameHost auto)' : `no shm rail: ${same.why}`);
      if (same.host) row('host identity', same.host);
    }
  }

  section('CUDA driver');
  row('library', i.cuda.path);
  if (!i.cuda.available) missing(i.cuda);
  else {
    row('driver version', i.cuda.driverVersion ?? '?');
    row('devices', i.cuda.deviceCount ?? 0);
  }

  section('cuFile (GPUDirect Storage)');
  row('library', i.cufile.path);
  if (!i.cufile.available) missing(i.cufile);
  else row('version', i.cufile.version ?? 'unknown (library too old to report it)');
  row('config', `${i.cufile.config.path} (allow_compat_mode: ${i.cufile.config.allowCompatMode ?? 'not set'})`);
  row('nvidia-fs driver', i.cufile.nvidiaFs ? 'loaded' : 'not loaded');
  row('compat mode', i.cufile.compatMode ? 'yes (POSIX I/O under cuFile)' : 'no');
  return lines.join('\n') + '\n';
}
