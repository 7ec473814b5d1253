#!/usr/bin/env bash
# VRAM over the network on the GPU machine (../shared/gpu/README.md): ixfer bench
# between two processes on the one GPU, 64 KiB to 16 MiB blocks, --repeat 3, each
# row against ixfer DRAM -> DRAM and the CUDA copy loop:
#   - tcp on the machine's libfabric 1.17 (no FI_HMEM: the staged path);
#   - shm on libfabric 2.6 built with CUDA (FI_HMEM through CUDA IPC: GPUDirect),
#     and VRAM -> VRAM forced staged over shm for comparison.
# VRAM -> VRAM runs READ and WRITE with --check-consistency; DRAM -> VRAM and
# VRAM -> DRAM run WRITE, then READ while time is left. Bounded: libfabric's
# build and every bench stop by BUDGET_S (default 330) seconds after the start.
#
# Here:  bash scripts/gpu-pack.sh && cp ../shared/vendor/build-libfabric.sh ../shared/vendor/libfabric-2.6.0.tar.gz .gpu/
# There: from the repository root, with .gpu/ carried along:
#        bash scripts/gpu-vram-bench.sh
# Full tables go to gpu-vram-bench.txt in $OUT (or the current directory); stdout
# gets their headers and the 64K, 1M and 16M rows.
set -u
top=$PWD
budget=${BUDGET_S:-330}
full=${OUT:-$top}/gpu-vram-bench.txt
: > "$full"

xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
rm -rf /tmp/app && tar -C /tmp -xzf .gpu/app.tgz && cd /tmp/app || exit 1
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
nvidia-smi -L 2>&1 | head -1

sweep=(--start-block-size 64K --max-block-size 16M --num-iter 100 --warmup-iter 10 --large-blk-iter-ftr 8 --repeat 3)

# bench NAME ARGS...: one run, at most 60 s and never past the budget.
bench() {
  local name=$1; shift
  local left=$((budget - SECONDS))
  if [ "$left" -lt 10 ]; then echo "== $name: skipped, out of time"; return; fi
  [ "$left" -gt 60 ] && left=60
  { echo "== $name"; timeout "$left" node dist/cli.js bench "${sweep[@]}" "$@" 2>&1; echo "(exit $?)"; } >> "$full.part"
  # The header (up to the column heads), the rows of 64K, 1M and 16M, the staging lines, errors.
  awk '/^== /{h=1} h{print} /^-----/{h=0} !h && /^(65536|1048576|16777216) /{print} /^staging:|^ +target|ERR_|FAILED|^\(exit/{print}' "$full.part"
  cat "$full.part" >> "$full" && rm -f "$full.part"
}

vv=(--initiator-seg VRAM --target-seg VRAM)
dv=(--initiator-seg DRAM --target-seg VRAM)
vd=(--initiator-seg VRAM --target-seg DRAM)

echo "### tcp, libfabric 1.17 (staged)"
bench "tcp VRAM->VRAM WRITE" --provider tcp "${vv[@]}" --op WRITE --check-consistency
bench "tcp VRAM->VRAM READ" --provider tcp "${vv[@]}" --op READ --check-consistency
bench "tcp DRAM->VRAM WRITE" --provider tcp "${dv[@]}" --op WRITE
bench "tcp VRAM->DRAM WRITE" --provider tcp "${vd[@]}" --op WRITE

echo "### shm, libfabric 2.6 with CUDA (GPUDirect)"
lf=$(timeout $((budget - SECONDS)) bash "$top/.gpu/build-libfabric.sh" /opt/lf26cuda --with-cuda=/usr/local/cuda 2>&1 | tail -1)
if [ -e /opt/lf26cuda/lib/libfabric.so.1 ]; then
  export IXFER_LIBFABRIC_SO=/opt/lf26cuda/lib/libfabric.so.1
  node dist/cli.js info 2>&1 | grep -iE 'libfabric|hmem' | head -4
  bench "shm VRAM->VRAM WRITE" --provider shm "${vv[@]}" --op WRITE --check-consistency
  bench "shm VRAM->VRAM READ" --provider shm "${vv[@]}" --op READ --check-consistency
  bench "shm DRAM->VRAM WRITE" --provider shm "${dv[@]}" --op WRITE
  bench "shm VRAM->DRAM WRITE" --provider shm "${vd[@]}" --op WRITE
  bench "shm VRAM->VRAM WRITE, staged" --provider shm "${vv[@]}" --op WRITE --vram-mode staged
  bench "shm DRAM->VRAM READ" --provider shm "${dv[@]}" --op READ
  bench "shm VRAM->DRAM READ" --provider shm "${vd[@]}" --op READ
  unset IXFER_LIBFABRIC_SO
else
  echo "libfabric 2.6 with CUDA did not build: $lf"
fi
bench "tcp DRAM->VRAM READ" --provider tcp "${dv[@]}" --op READ
bench "tcp VRAM->DRAM READ" --provider tcp "${vd[@]}" --op READ
echo "finished in ${SECONDS}s; full tables in $full"
