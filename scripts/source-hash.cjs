#!/usr/bin/env node
// Hash of everything the shim is built from: csrc/ and binding.gyp. Embedded in
// the shim at build time (ixfer_build_hash) and recomputed by the freshness test.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

function listFiles(dir, rel = '') {
  const out = [];
  for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const name = path.posix.join(rel, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(dir, name));
    else if (entry.isFile()) out.push(name);
  }
  return out;
}

function sourceHash(root) {
  const files = listFiles(root, 'csrc').concat(['binding.gyp']).sort();
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(f);
    h.update('\0');
    h.update(fs.readFileSync(path.join(root, f)));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

module.exports = { sourceHash };
if (require.main === module) console.log(sourceHash(path.join(__dirname, '..')));
