/**
 * lib/'s dependency rules, checked on the compiled dist/ (TypeScript 7 has no
 * JavaScript API for dependency-cruiser to parse .ts with): no import
 * cycles, and dependencies that run one way, front door -> exchange ->
 * engines (net, file, gpu) -> core -> native. `npm run check:deps`.
 */
const ours = (p) => `^dist/${p}`;
const frontDoor = '^dist/(agent|index|cli|info)\\.js$';

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'leaves-import-only-errors',
      comment: 'errors.js and schemas.js are shared by every layer.',
      severity: 'error',
      from: { path: ours('(errors|schemas)\\.js$') },
      to: { path: '^dist/', pathNot: ours('errors\\.js$') },
    },
    {
      name: 'native-is-the-bottom',
      severity: 'error',
      from: { path: ours('native/') },
      to: { path: '^dist/', pathNot: [ours('native/'), ours('errors\\.js$')] },
    },
    {
      name: 'core-below-engines',
      severity: 'error',
      from: { path: ours('core/') },
      to: { path: [ours('(net|file|gpu|exchange|bench)/'), frontDoor] },
    },
    {
      name: 'engines-below-exchange',
      severity: 'error',
      from: { path: ours('(net|file|gpu)/') },
      to: { path: [ours('(exchange|bench)/'), frontDoor] },
    },
    {
      name: 'engines-apart',
      comment: 'The front door wires engines together; they do not import each other.',
      severity: 'error',
      from: { path: ours('(net|file|gpu)/') },
      to: { path: ours('(net|file|gpu)/'), pathNot: ours('$1/') },
    },
    {
      name: 'exchange-below-front-door',
      severity: 'error',
      from: { path: ours('exchange/') },
      to: { path: [ours('(file|gpu|bench)/'), frontDoor] },
    },
    {
      name: 'koffi-only-in-native',
      severity: 'error',
      from: { pathNot: ours('native/shim\\.js$') },
      to: { path: 'node_modules/koffi/' },
    },
    {
      name: 'etcd3-on-demand',
      comment: "import 'ixfer' must not load etcd3 (grpc, protobufjs): only metadata.etcd does.",
      severity: 'error',
      from: {},
      to: { path: ours('exchange/etcd-directory\\.js$'), dynamic: false },
    },
    {
      name: 'etcd3-in-the-directory',
      severity: 'error',
      from: { path: '^dist/', pathNot: ours('exchange/etcd-directory\\.js$') },
      to: { path: 'node_modules/etcd3/' },
    },
    {
      name: 'bench-on-demand',
      comment: "import 'ixfer' must not load the benchmark's packages: the cli imports bench/ when asked.",
      severity: 'error',
      from: { pathNot: ours('bench/') },
      to: { path: ours('bench/'), dynamic: false },
    },
    {
      name: 'bench-packages-in-bench',
      severity: 'error',
      from: { path: '^dist/', pathNot: ours('bench/') },
      to: { path: 'node_modules/(d3-|cli-progress)' },
    },
    {
      name: 'prom-client-on-demand',
      comment: "import 'ixfer' must not load prom-client (an optional peer dependency): only Agent.create({ metrics }) does.",
      severity: 'error',
      from: {},
      to: { path: ours('metrics\\.js$'), dynamic: false },
    },
    {
      name: 'prom-client-in-metrics',
      severity: 'error',
      from: { path: '^dist/', pathNot: ours('metrics\\.js$') },
      to: { path: 'node_modules/prom-client/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.(map|d\\.ts)$' },
  },
};
