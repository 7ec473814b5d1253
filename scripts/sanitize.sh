#!/usr/bin/env bash
# Builds the shim's sources together with each of csrc/test/shim_test.c and
# csrc/test/notify_fuzz.c under AddressSanitizer and UndefinedBehaviorSanitizer,
# and shim_test under ThreadSanitizer, and runs them; list_test.c checks the
# shim's one list header on its own. Any sanitizer report fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/ixfer-sanitize"
mkdir -p "$out"
prefix="${LIBFABRIC_PREFIX:-/usr}"

cc="${CC:-gcc}"
# The hash only has to be 16 characters here; without node, use a placeholder.
hash="$(node "$root/scripts/source-hash.cjs" 2>/dev/null)" || hash=0000000000000000
# Each test is built with the shim's sources (every .c under csrc/src, as
# binding.gyp lists them); notify_fuzz also reaches into the shim's internals
# (csrc/src/net) to send raw fragments.
mapfile -t sources < <(find "$root/csrc/src" -name '*.c' | sort)
for t in shim_test notify_fuzz; do
  "$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=all -Wall -Wextra -Werror \
    -DIXFER_BUILD_HASH="\"$hash\"" -DIXFER_VERSION='"sanitize"' \
    -I"$root/csrc/include" -I"$root/csrc/src" -I"$prefix/include" \
    "${sources[@]}" "$root/csrc/test/$t.c" \
    -ldl -lpthread -o "$out/$t"
done
"$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -Wall -Wextra -Werror -I"$root/csrc/src" \
  "$root/csrc/test/list_test.c" -o "$out/list_test"

# libfabric is not instrumented and keeps some provider state for the life of
# the process; leaks reported from inside it are suppressed, ours are not.
cat > "$out/lsan.supp" <<'SUPP'
leak:libfabric.so
SUPP
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$out/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export FI_PROVIDER="${FI_PROVIDER:-tcp;ofi_rxm}"
"$out/list_test"
"$out/shim_test"
# Again with the threads watching for work before they sleep (the default only
# with 4 or more CPUs), so that both ways of waking them are checked.
IXFER_SPIN_US=50 "$out/shim_test"
"$out/notify_fuzz"

# The shim's threads (progress, file I/O) under ThreadSanitizer, both ways.
# libfabric is not instrumented: what happens inside it, and its library
# destructor's unlock at exit, are not ours to judge.
"$cc" -std=gnu11 -g -O1 -fsanitize=thread -Wall -Wextra -Werror \
  -DIXFER_BUILD_HASH="\"$hash\"" -DIXFER_VERSION='"sanitize"' \
  -I"$root/csrc/include" -I"$root/csrc/src" -I"$prefix/include" \
  "${sources[@]}" "$root/csrc/test/shim_test.c" -ldl -lpthread -o "$out/shim_test_tsan"
# emu_copy: shim_test's staged transfers between two agents of one process
# with emulated device memory; the bytes are handed over through a socket,
# an order ThreadSanitizer cannot see.
cat > "$out/tsan.supp" <<'SUPP'
race:emu_copy
called_from_lib:libfabric.so.1
race:libfabric.so
mutex:_dl_call_fini
mutex:ld-linux-x86-64.so
SUPP
for spin in 0 50; do
  IXFER_SPIN_US=$spin TSAN_OPTIONS="suppressions=$out/tsan.supp:halt_on_error=1:exitcode=66" \
    "$out/shim_test_tsan"
done
