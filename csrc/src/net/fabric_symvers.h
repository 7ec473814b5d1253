/* Symbol versions of libfabric's exported functions whose layout matches the
 * headers this shim is compiled with. libfabric keeps old versions of
 * fi_getinfo & co. for old struct layouts; dlsym() would hand us the newest
 * (default) one, which may not match our headers. Defaults are those of
 * libfabric 1.17 (objdump -T libfabric.so.1); scripts/rebuild.sh overrides them
 * with -D for a custom libfabric. */
#ifndef IXFER_NET_FABRIC_SYMVERS_H
#define IXFER_NET_FABRIC_SYMVERS_H

#ifndef IXFER_SYMVER_fi_getinfo
#define IXFER_SYMVER_fi_getinfo "FABRIC_1.3"
#endif
#ifndef IXFER_SYMVER_fi_freeinfo
#define IXFER_SYMVER_fi_freeinfo "FABRIC_1.3"
#endif
#ifndef IXFER_SYMVER_fi_dupinfo
#define IXFER_SYMVER_fi_dupinfo "FABRIC_1.3"
#endif
#ifndef IXFER_SYMVER_fi_fabric
#define IXFER_SYMVER_fi_fabric "FABRIC_1.1"
#endif
#ifndef IXFER_SYMVER_fi_version
#define IXFER_SYMVER_fi_version "FABRIC_1.0"
#endif
#ifndef IXFER_SYMVER_fi_strerror
#define IXFER_SYMVER_fi_strerror "FABRIC_1.0"
#endif

#endif
