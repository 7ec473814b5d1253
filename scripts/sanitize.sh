#!/usr/bin/env bash
# Builds the shim's sources together with csrc/test/shim_test.c under
# AddressSanitizer and UndefinedBehaviorSanitizer and runs it. Any sanitizer
# report fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/ixfer-sanitize"
mkdir -p "$out"
prefix="${LIBFABRIC_PREFIX:-/usr}"

cc="${CC:-gcc}"
# The hash only has to be 16 characters here; without node, use a placeholder.
hash="$(node "$root/scripts/source-hash.cjs" 2>/dev/null)" || hash=0000000000000000
"$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -DIXFER_BUILD_HASH="\"$hash\"" -DIXFER_VERSION='"sanitize"' \
  -I"$root/csrc/include" -I"$prefix/include" \
  "$root"/csrc/src/*.c "$root/csrc/test/shim_test.c" \
  -ldl -lpthread -o "$out/shim_test"

# libfabric is not instrumented and keeps some provider state for the life of
# the process; leaks reported from inside it are suppressed, ours are not.
cat > "$out/lsan.supp" <<'SUPP'
leak:libfabric.so
SUPP
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$out/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export FI_PROVIDER="${FI_PROVIDER:-tcp;ofi_rxm}"
"$out/shim_test"
