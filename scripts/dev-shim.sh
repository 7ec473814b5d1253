#!/usr/bin/env bash
# Builds the shim from the working tree into OUT (default /tmp/ixfer-dev/ixfer.node)
# without touching build/ or prebuilds/, for trying C changes before the
# committed prebuild is regenerated:  IXFER_SHIM=$(bash scripts/dev-shim.sh) npx vitest run
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${TMPDIR:-/tmp}/ixfer-dev/ixfer.node}"
mkdir -p "$(dirname "$out")"
prefix="${LIBFABRIC_PREFIX:-/usr}"
"${CC:-gcc}" -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
  -DIXFER_BUILD_HASH="\"$(node "$root/scripts/source-hash.cjs")\"" \
  -DIXFER_VERSION="\"$(node -p "require('$root/package.json').version")\"" \
  -I"$root/csrc/include" -I"$root/csrc/src" -I"$prefix/include" \
  $(find "$root/csrc/src" -name '*.c' | sort) \
  -Wl,--no-undefined -ldl -lpthread -o "$out"
echo "$out"
