/**
 * Endpoint addresses, checked by the provider's address format (fi_info's
 * addr_format, carried in the metadata), never guessed from their bytes. A
 * peer's address is untrusted input for fi_av_insert: it must have the shape
 * its format defines before the provider reads it.
 */

/** enum fi_addr_format (rdma/fabric.h, the same values in 1.x and 2.x), by value. */
const ADDR_FORMATS = [
  'FI_FORMAT_UNSPEC',
  'FI_SOCKADDR',
  'FI_SOCKADDR_IN',
  'FI_SOCKADDR_IN6',
  'FI_SOCKADDR_IB',
  'FI_ADDR_PSMX',
  'FI_ADDR_GNI',
  'FI_ADDR_BGQ',
  'FI_ADDR_MLX',
  'FI_ADDR_STR',
  'FI_ADDR_PSMX2',
  'FI_ADDR_IB_UD',
  'FI_ADDR_EFA',
  'FI_ADDR_PSMX3',
  'FI_ADDR_OPX',
  'FI_ADDR_CXI',
  'FI_ADDR_UCX',
  'FI_SOCKADDR_IP',
] as const;
const format = (name: (typeof ADDR_FORMATS)[number]): number => ADDR_FORMATS.indexOf(name);
const FI_SOCKADDR = format('FI_SOCKADDR');
const FI_SOCKADDR_IN = format('FI_SOCKADDR_IN');
const FI_SOCKADDR_IN6 = format('FI_SOCKADDR_IN6');
const FI_SOCKADDR_IB = format('FI_SOCKADDR_IB');
const FI_ADDR_STR = format('FI_ADDR_STR');
const FI_SOCKADDR_IP = format('FI_SOCKADDR_IP');

export const addrFormatName = (v: number): string => ADDR_FORMATS[v] ?? `addr_format ${v}`;

/** Formats whose addresses are IP socket addresses: only there does `address` (fi_getinfo's node) name a local IP. */
export function isIpFormat(f: number): boolean {
  return [FI_SOCKADDR, FI_SOCKADDR_IN, FI_SOCKADDR_IN6, FI_SOCKADDR_IB, FI_SOCKADDR_IP].includes(f);
}

const AF_INET = 2;
const AF_INET6 = 10;
const SOCKADDR_IN_BYTES = 16;
const SOCKADDR_IN6_BYTES = 28;
/** shm's longest region name (SMR_NAME_MAX), the longest text address taken. */
const ADDR_STR_MAX = 256;

/** sa_family, host byte order (little-endian on every platform ixfer builds for). */
const family = (a: Uint8Array): number => (a.length >= 2 ? a[0]! | (a[1]! << 8) : -1);
const isIn = (a: Uint8Array): boolean => family(a) === AF_INET && a.length === SOCKADDR_IN_BYTES;
const isIn6 = (a: Uint8Array): boolean => family(a) === AF_INET6 && a.length === SOCKADDR_IN6_BYTES;

/** Why `peer` is not an address of format `f` (whose own addresses look like `own`), or undefined. */
export function addressProblem(f: number, own: Uint8Array, peer: Uint8Array): string | undefined {
  const shape = `${peer.length} bytes, family ${family(peer)}`;
  switch (f) {
    case FI_SOCKADDR_IN:
      return isIn(peer) ? undefined : `not a sockaddr_in (${shape})`;
    case FI_SOCKADDR_IN6:
      return isIn6(peer) ? undefined : `not a sockaddr_in6 (${shape})`;
    case FI_SOCKADDR:
    case FI_SOCKADDR_IP:
      return isIn(peer) || isIn6(peer) ? undefined : `not a sockaddr_in or sockaddr_in6 (${shape})`;
    case FI_ADDR_STR: {
      // fi_getname's form: NUL-terminated text the provider reads with strlen.
      if (peer.length > ADDR_STR_MAX) return `a text address of ${peer.length} bytes (at most ${ADDR_STR_MAX})`;
      const nul = peer.indexOf(0);
      if (nul !== peer.length - 1) return 'not NUL-terminated text';
      if (peer.subarray(0, nul).some((c) => c < 0x20 || c > 0x7e)) return 'text with non-printable bytes';
      // Both ends name the same scheme ("fi_shm://"); the rest may differ in length.
      const scheme = (a: Uint8Array) => /^[a-z0-9_]+:\/\//i.exec(Buffer.from(a).toString('latin1'))?.[0];
      return scheme(peer) === scheme(own) ? undefined : `a '${scheme(peer) ?? 'schemeless'}' address, this endpoint's are '${scheme(own)}'`;
    }
    default:
      // Fixed-size binary formats (EFA, CXI, PSM, OPX...): all that is knowable is the size.
      return peer.length === own.length ? undefined : `${peer.length} bytes where ${addrFormatName(f)} addresses have ${own.length}`;
  }
}
