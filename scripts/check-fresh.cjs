#!/usr/bin/env node
// Fails when the committed linux-x64 prebuild was not built from the current
// csrc/ and binding.gyp (its embedded build hash differs from the source's).
'use strict';
const path = require('node:path');
const koffi = require('koffi');
const { sourceHash } = require('./source-hash.cjs');

const root = path.join(__dirname, '..');
const file = path.join(root, 'prebuilds', 'linux-x64', 'ixfer.node');
const built = koffi.load(file).func('const char *ixfer_build_hash()')();
const source = sourceHash(root);
if (built !== source) {
  console.error(`${file} is stale: built from ${built}, source is ${source}; run 'npm run prebuild' and commit it`);
  process.exit(1);
}
console.log(`prebuild is fresh (${source})`);
