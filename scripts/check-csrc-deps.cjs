#!/usr/bin/env node
// Fails when csrc/src breaks its layering (DESIGN.md, "The architecture to grow into"):
//   - an include cycle between files, or between the folders core/ net/ file/ gpu/;
//   - a call cycle between .c files (read from the objects' symbols with nm), or
//     between folders;
//   - a dependency against the direction net -> core + gpu, file -> core + gpu, gpu -> core
//     (core depends on nothing), by include or by call;
//   - libfabric's headers (<rdma/...>) included outside net/;
//   - a source outside the folders, or binding.gyp's source list differing from
//     the .c files on disk (scripts/sanitize.sh and dev-shim.sh compile every one).
// Usage: node scripts/check-csrc-deps.cjs [--no-calls]   (calls need gcc and nm)
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const src = path.join(root, 'csrc', 'src');
// Which folders each folder may depend on.
const allowed = { core: [], gpu: ['core'], net: ['core', 'gpu'], file: ['core', 'gpu'] };

const problems = [];

function listSources(dir, rel = '') {
  const out = [];
  for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const name = path.posix.join(rel, entry.name);
    if (entry.isDirectory()) out.push(...listSources(dir, name));
    else if (/\.[ch]$/.test(entry.name)) out.push(name);
  }
  return out.sort();
}

const files = listSources(src);
const folderOf = (f) => (f.includes('/') ? f.split('/')[0] : '');
for (const f of files)
  if (!(folderOf(f) in allowed)) problems.push(`${f}: every source lives in one of ${Object.keys(allowed).join(', ')}`);

// Quoted includes resolve next to the including file first, then from csrc/src
// (the include path binding.gyp gives); csrc/include/ixfer.h is outside the graph.
function includeGraph() {
  const graph = new Map(files.map((f) => [f, new Set()]));
  for (const f of files) {
    const text = fs.readFileSync(path.join(src, f), 'utf8');
    for (const m of text.matchAll(/^\s*#\s*include\s*([<"])([^>"]+)[>"]/gm)) {
      const [, kind, name] = m;
      if (kind === '<') {
        if (name.startsWith('rdma/') && folderOf(f) !== 'net')
          problems.push(`${f}: includes <${name}>: only net/ may include libfabric's headers`);
        continue;
      }
      const beside = path.posix.normalize(path.posix.join(path.posix.dirname(f), name));
      const target = graph.has(beside) ? beside : graph.has(name) ? name : null;
      if (target) graph.get(f).add(target);
    }
  }
  return graph;
}

// Edges from each .c file to the .c files defining the symbols it uses.
function callGraph() {
  const cfiles = files.filter((f) => f.endsWith('.c'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ixfer-deps-'));
  const prefix = process.env.LIBFABRIC_PREFIX || '/usr';
  const defined = new Map();
  const used = new Map();
  try {
    for (const f of cfiles) {
      const obj = path.join(tmp, f.replace(/\//g, '_') + '.o');
      execFileSync(process.env.CC || 'gcc', ['-std=gnu11', '-O2', '-fPIC', '-c', '-I', path.join(root, 'csrc', 'include'),
        '-I', src, '-I', path.join(prefix, 'include'), path.join(src, f), '-o', obj], { stdio: 'inherit' });
      const syms = execFileSync('nm', ['-P', obj], { encoding: 'utf8' }).split('\n').filter(Boolean);
      used.set(f, new Set());
      for (const line of syms) {
        const [name, type] = line.split(/\s+/);
        if (type === 'U') used.get(f).add(name);
        else if (/^[A-Z]$/.test(type)) defined.set(name, f); // global: text, data, bss, rodata
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const graph = new Map(cfiles.map((f) => [f, new Set()]));
  for (const [f, names] of used)
    for (const name of names) {
      const target = defined.get(name);
      if (target && target !== f) graph.get(f).add(target);
    }
  return graph;
}

// Strongly connected components (Tarjan): every one with more than one member,
// or a member that reaches itself, is a cycle.
function cycles(graph) {
  let index = 0;
  const idx = new Map(), low = new Map(), stack = [], on = new Set(), out = [];
  function visit(v) {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) || []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const scc = [];
      let w;
      do {
        w = stack.pop();
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) || new Set()).has(v)) out.push(scc.sort());
    }
  }
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

function folderGraph(graph) {
  const folders = new Map();
  for (const [f, targets] of graph)
    for (const t of targets) {
      const a = folderOf(f), b = folderOf(t);
      if (a === b) continue;
      if (!folders.has(a)) folders.set(a, new Set());
      folders.get(a).add(b);
    }
  return folders;
}

function check(what, graph) {
  for (const scc of cycles(graph)) problems.push(`${what} cycle between files: ${scc.join(' <-> ')}`);
  const folders = folderGraph(graph);
  for (const scc of cycles(folders)) problems.push(`${what} cycle between folders: ${scc.join(' <-> ')}`);
  for (const [f, targets] of graph)
    for (const t of targets) {
      const a = folderOf(f), b = folderOf(t);
      if (a !== b && a in allowed && !allowed[a].includes(b))
        problems.push(`${f} ${what === 'include' ? 'includes' : 'calls into'} ${t}: ${a}/ may depend on ${allowed[a].map((x) => x + '/').join(', ') || 'nothing'}`);
    }
}

check('include', includeGraph());
if (!process.argv.includes('--no-calls')) check('call', callGraph());

const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
const listed = new Set([...gyp.matchAll(/"csrc\/src\/([^"]+\.c)"/g)].map((m) => m[1]));
for (const f of files.filter((f) => f.endsWith('.c')))
  if (!listed.has(f)) problems.push(`binding.gyp does not list csrc/src/${f}`);
for (const f of listed) if (!files.includes(f)) problems.push(`binding.gyp lists csrc/src/${f}, which does not exist`);

if (problems.length) {
  for (const p of problems) console.error(`check-csrc-deps: ${p}`);
  process.exit(1);
}
console.log(`csrc/src: ${files.length} files, no include or call cycle, dependencies run net -> core + gpu, file -> core + gpu, gpu -> core`);
