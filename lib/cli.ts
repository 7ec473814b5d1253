#!/usr/bin/env node
/** The `ixfer` command line. */
import { parseArgs } from 'node:util';

import { IxferError } from './errors.js';
import { formatInfo, info } from './info.js';
import { packageVersion } from './native/shim.js';
import { MAX_RAILS } from './schemas.js';

const USAGE = `usage: ixfer <command> [options]

commands:
  info [--json]    what this host offers: shim, libfabric providers, CUDA, cuFile,
                   and the rails an agent would open (--rails N|auto)
  bench [options]  transfer benchmark between two processes (nixlbench's columns;
                   --baseline adds C-on-libfabric and Node-socket baselines);
                   'ixfer bench --help' for the options and column definitions
  plan MODEL.json  KV block size and batch of a model; prints (or --run) the bench
  help             this text

options:
  --version        the ixfer version

exit codes: 0 success; 1 failure (info: libfabric or the shim cannot be loaded;
bench: a consistency check failed; any command: an ixfer error); 2 bad usage
`;

function runInfo(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      json: { type: 'boolean', default: false },
      rails: { type: 'string', default: 'auto' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: ixfer info [--json] [--rails N|auto]\n\nWhat this host offers: the shim, libfabric and its providers, CUDA, cuFile,\n' +
        'and the rails an agent with option rails N or auto (the default) would open.\n' +
        'Exits 1 when libfabric cannot be loaded (no agent can be created), so it can gate a start-up script.\n',
    );
    return 0;
  }
  const rails = values.rails === 'auto' ? 'auto' : Number(values.rails);
  if (rails !== 'auto' && !(Number.isInteger(rails) && rails >= 1 && rails <= MAX_RAILS)) {
    process.stderr.write(`ixfer info: --rails takes 'auto' or a count from 1 to ${MAX_RAILS}, not '${values.rails}'\n`);
    return 2;
  }
  const report = info(rails);
  process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatInfo(report));
  return report.libfabric.available ? 0 : 1;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'info':
      return runInfo(rest);
    // Loaded on demand: `ixfer info` needs none of the benchmark's modules.
    case 'bench':
      return (await import('./bench/command.js')).benchCommand(rest);
    case 'plan':
      return (await import('./bench/plan.js')).planCommand(rest);
    case '--version':
    case '-v':
      process.stdout.write(`${packageVersion}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`ixfer: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof IxferError) {
    process.stderr.write(`ixfer: ${err.code}: ${err.message}\n`);
    process.exitCode = 1;
  } else throw err;
}
