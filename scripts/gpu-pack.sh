#!/usr/bin/env bash
# Packs what a run on the GPU machine needs (which has no Node.js and reaches no
# registry) under .gpu/: a stripped Node binary, the compiled package with its
# production dependencies, the bench and test fixtures. See ../shared/gpu/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p .gpu
if [ ! -f .gpu/node.xz ]; then
  strip -o /tmp/ixfer-node-stripped "$(command -v node)"
  xz -T2 -6 -c /tmp/ixfer-node-stripped > .gpu/node.xz
fi
npm run --silent compile
rm -rf .gpu/app && mkdir -p .gpu/app/node_modules
cp -r package.json dist prebuilds csrc scripts bench .gpu/app/
cp -r --parents test/file/gpu test/net/gpu test/support/fixtures .gpu/app/
# Every production dependency (etcd3 brings grpc and protobuf along); nested
# node_modules come with their parent package.
npm ls --omit=dev --parseable --all 2>/dev/null | tail -n +2 | sed "s|^$root/||" |
  grep -Ev '/node_modules/.*/node_modules/' | sort -u | xargs -I{} cp -r --parents {} .gpu/app/
# libfabric's headers, for building the sanitizer test there.
mkdir -p .gpu/app/libfabric/include && cp -r /usr/include/rdma .gpu/app/libfabric/include/
# One archive: the transfer to the machine skips paths that look git-ignored (build/).
tar -C .gpu -czf .gpu/app.tgz app && rm -rf .gpu/app
du -sh .gpu
