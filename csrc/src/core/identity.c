/* Version, ABI and build hash of this shim. */
#include "ixfer.h"

#ifndef IXFER_BUILD_HASH
#define IXFER_BUILD_HASH "unknown"
#endif
#ifndef IXFER_VERSION
#define IXFER_VERSION "0.0.0"
#endif

int32_t ixfer_abi_version(void) { return IXFER_ABI_VERSION; }
const char *ixfer_version(void) { return IXFER_VERSION; }
const char *ixfer_build_hash(void) { return IXFER_BUILD_HASH; }
