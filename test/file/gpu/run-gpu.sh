#!/usr/bin/env bash
# On the GPU machine (../shared/gpu/README.md), from the unpacked app: the cuFile
# layout check, the VRAM file tests without and then with a udev record of the
# disk (cuFile refuses files without one), and the file benchmark (ixfer bench
# --target-seg FILE against the C pread/pwrite loop, DRAM then VRAM per engine).
#   bash test/file/gpu/run-gpu.sh [DIR]
set -u
cd "$(dirname "$0")/../../.."
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
dir=${1:-/tmp}
nvidia-smi -L 2>&1 | head -2
echo "== $dir: $(findmnt -no FSTYPE,SOURCE -T "$dir")"
echo "== cufile.h layout"
gcc -I/usr/local/cuda/include -o /tmp/cufile_layout test/file/gpu/cufile_layout.c && /tmp/cufile_layout
echo "== cuFile refuses files (no udev record)"
node test/file/gpu/files-gpu.mjs refuse "$dir"
dev=$(findmnt -no MAJ:MIN -T "$dir" | tr -d ' '); fs=$(findmnt -no FSTYPE -T "$dir" | tr -d ' ')
mkdir -p /run/udev/data && printf 'E:ID_FS_USAGE=filesystem\nE:ID_FS_TYPE=%s\n' "$fs" > "/run/udev/data/b$dev"
echo "== cuFile accepts files (udev record written)"
node test/file/gpu/files-gpu.mjs gds "$dir"
# 16 blocks per transfer, 64 KiB to 16 MiB blocks (256 MiB of memory and file).
sweep=(--file-dir "$dir" --start-block-size 64K --max-block-size 16M --start-batch-size 16 --max-batch-size 16
  --num-iter 64 --warmup-iter 4 --large-blk-iter-ftr 4 --baseline --check-consistency)
for op in WRITE READ; do
  echo "== file bench: DRAM, $op"
  node dist/cli.js bench --initiator-seg DRAM --target-seg FILE --op $op "${sweep[@]}"
  for engine in gds gds_mt posix; do
    echo "== file bench: VRAM, $engine, $op"
    node dist/cli.js bench --initiator-seg VRAM --target-seg FILE --file-engine $engine --op $op "${sweep[@]}"
  done
done
