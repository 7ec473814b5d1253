#!/usr/bin/env bash
# Rebuilds the shim against a libfabric installed under a prefix (a site's own
# EFA or CXI build):
#   LIBFABRIC_PREFIX=/opt/libfabric bash scripts/rebuild.sh
# Headers come from $LIBFABRIC_PREFIX/include. The runtime library defaults to
# $LIBFABRIC_PREFIX/lib/libfabric.so.1 (or lib64), baked into the shim as its
# default path; LIBFABRIC_SO overrides it, IXFER_LIBFABRIC_SO still wins at run
# time. The symbol versions the shim resolves are read from that library.
# The result is build/Release/ixfer.node, which ixfer loads before prebuilds/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${LIBFABRIC_PREFIX:?set LIBFABRIC_PREFIX to the libfabric install prefix}"
[ -f "$prefix/include/rdma/fabric.h" ] || { echo "rebuild: no $prefix/include/rdma/fabric.h" >&2; exit 1; }

if [ -z "${LIBFABRIC_SO:-}" ]; then
  for dir in lib lib64 lib/x86_64-linux-gnu; do
    if [ -e "$prefix/$dir/libfabric.so.1" ]; then LIBFABRIC_SO="$prefix/$dir/libfabric.so.1"; break; fi
  done
fi
[ -n "${LIBFABRIC_SO:-}" ] && [ -e "$LIBFABRIC_SO" ] || { echo "rebuild: no libfabric.so.1 under $prefix (set LIBFABRIC_SO)" >&2; exit 1; }

# The default (unparenthesised) version of each exported function matches the headers of that build.
symvers=()
for sym in fi_getinfo fi_freeinfo fi_dupinfo fi_fabric fi_version fi_strerror; do
  ver="$(objdump -T "$LIBFABRIC_SO" | awk -v s="$sym" '$NF == s && $(NF-1) ~ /^FABRIC_/ { print $(NF-1) }' | sort -V | tail -1)"
  [ -n "$ver" ] || { echo "rebuild: $LIBFABRIC_SO exports no $sym" >&2; exit 1; }
  symvers+=("$sym=$ver")
done
export LIBFABRIC_PREFIX LIBFABRIC_SO IXFER_SYMVERS="${symvers[*]}"
echo "rebuild: headers $prefix/include, library $LIBFABRIC_SO"
echo "rebuild: symbol versions ${IXFER_SYMVERS}"
cd "$root"
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
npx node-gyp rebuild
echo "rebuild: built build/Release/ixfer.node; 'npx ixfer info' shows what it loads"
