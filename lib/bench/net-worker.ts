/**
 * The Node `net` baseline: the same iterations as a TCP stream on loopback.
 * WRITE: the initiator writes the batch's pieces (corked: one writev) and the
 * target acks each full batch with one byte, so that completion means "in the
 * target's memory" as for ixfer. READ: the initiator sends one byte and the
 * target answers with the batch. The side that receives the batch connects,
 * with `onread` so the bytes land straight in its buffer (servers cannot take
 * `onread`); the other side listens.
 */
import net from 'node:net';

import { pieces, type Piece } from './layout.js';
import type { RowSpec } from './options.js';
import { serve } from './rpc.js';
import { summarize, type Timing } from './stats.js';

let buf: Buffer;
let socket: net.Socket;
let layout: Piece[] = [];
/** Bytes of one batch; the whole buffer until the first row says (a read needs room). */
let batchBytes = 0;
let received = 0;
/** Called for each full batch (batch receiver) or each byte (the other side). */
let onMessage: () => void = () => {};
const one = Buffer.alloc(1);

function sendBatch(): void {
  socket.cork();
  for (const p of layout) socket.write(buf.subarray(p.off, p.off + p.len));
  socket.uncork();
}

function setRow(row: RowSpec, role: string): void {
  layout = pieces(row);
  batchBytes = row.blockSize * row.batchSize;
  if (role === 'target') onMessage = row.op === 'WRITE' ? () => socket.write(one) : sendBatch;
}

const receivesBatch = (role: string, op: string) => (role === 'target') === (op === 'WRITE');

async function runRow(row: RowSpec, iters: number): Promise<Timing> {
  setRow(row, 'initiator');
  const post: number[] = [];
  const tx: number[] = [];
  const now = () => performance.now() * 1000;
  const start = now();
  for (let i = 0; i < iters; i++) {
    const done = new Promise<void>((resolve) => (onMessage = resolve));
    const a = now();
    if (row.op === 'WRITE') sendBatch();
    else socket.write(one);
    const b = now();
    await done;
    post.push(b - a);
    tx.push(now() - b);
  }
  return { totalUs: now() - start, prep: summarize([]), post: summarize(post), tx: summarize(tx) };
}

serve({
  async init(m) {
    buf = Buffer.alloc(m.bytes as number);
    if (receivesBatch(m.role as string, m.op as string)) return {};
    const server = net.createServer((s) => {
      socket = s.setNoDelay(true);
      s.on('error', () => process.exit(1)); // the peer died: the orchestrator sees this process exit
      s.on('data', (chunk) => {
        for (let i = 0; i < chunk.length; i++) onMessage();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, m.address as string, resolve));
    return { port: (server.address() as net.AddressInfo).port };
  },
  async connect(m) {
    await new Promise<void>((resolve, reject) => {
      socket = net.connect({
        host: m.address as string,
        port: m.port as number,
        noDelay: true,
        onread: {
          buffer: () => buf.subarray(received, batchBytes || buf.length),
          callback: (n: number) => {
            received += n;
            if (received === batchBytes) {
              received = 0;
              onMessage();
            }
            return true;
          },
        },
      }, resolve);
      socket.once('error', reject);
      socket.on('close', () => process.exit(1));
    });
  },
  row(m) {
    setRow(m.row as RowSpec, 'target');
  },
  async warmup(m) {
    const row = m.row as RowSpec;
    await runRow(row, row.warmup);
  },
  async run(m) {
    const row = m.row as RowSpec;
    return { timing: await runRow(row, row.iters) };
  },
});
