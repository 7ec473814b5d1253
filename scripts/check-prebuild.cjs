#!/usr/bin/env node
// node-gyp-build's install check (package.json "prebuild.test"): the shim is a
// plain C library, so require() cannot load it; load it with koffi instead and
// check its ABI. Exits non-zero (and node-gyp-build then builds from source)
// when no usable prebuild is there.
'use strict';
const path = require('node:path');

const root = path.join(__dirname, '..');
const file = require('node-gyp-build').path(root);
const koffi = require('koffi');
const lib = koffi.load(file);
const abi = lib.func('int32_t ixfer_abi_version()')();
const header = require('node:fs').readFileSync(path.join(root, 'csrc/include/ixfer.h'), 'utf8');
const expected = Number(/#define IXFER_ABI_VERSION (\d+)/.exec(header)[1]);
if (abi !== expected) {
  console.error(`ixfer: ${file} has ABI ${abi}, expected ${expected}`);
  process.exit(1);
}
