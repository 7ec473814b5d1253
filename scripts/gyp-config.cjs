#!/usr/bin/env node
// Values binding.gyp needs at configure time, printed for gyp's <!@(...) expansion.
//   defines: the shim's compile-time defines (build hash, version, libfabric
//            symbol versions and default path for a custom libfabric)
//   include: libfabric's header directory
'use strict';
const path = require('node:path');
const { sourceHash } = require('./source-hash.cjs');

const root = path.join(__dirname, '..');
const prefix = process.env.LIBFABRIC_PREFIX || '';

function defines() {
  const pkg = require(path.join(root, 'package.json'));
  const out = [`IXFER_BUILD_HASH="${sourceHash(root)}"`, `IXFER_VERSION="${pkg.version}"`];
  // IXFER_SYMVERS="fi_getinfo=FABRIC_1.7 fi_fabric=FABRIC_1.1 ...", set by scripts/rebuild.sh.
  for (const item of (process.env.IXFER_SYMVERS || '').split(/\s+/).filter(Boolean)) {
    const m = /^(fi_[a-z_]+)=(FABRIC_[0-9.]+)$/.exec(item);
    if (!m) throw new Error(`bad IXFER_SYMVERS entry: ${item}`);
    out.push(`IXFER_SYMVER_${m[1]}="${m[2]}"`);
  }
  if (process.env.LIBFABRIC_SO) out.push(`IXFER_LIBFABRIC_DEFAULT="${process.env.LIBFABRIC_SO}"`);
  return out;
}

const what = process.argv[2];
if (what === 'defines') console.log(defines().map((d) => `'${d}'`).join(' '));
else if (what === 'include') console.log(prefix ? path.join(prefix, 'include') : '/usr/include');
else {
  console.error('usage: gyp-config.cjs defines|include');
  process.exit(2);
}
