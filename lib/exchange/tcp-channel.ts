/**
 * The TCP side channel: a listener that answers PUSH, FETCH and INVALIDATE
 * frames for its agent, and request(), one connection per request.
 *
 * A bad frame closes only its own connection (counted in ExchangeStats and
 * logged); a wrong MAC gets no answer, so a guesser learns nothing. A
 * connection carries one request and its answer, then closes.
 */
import crypto from 'node:crypto';
import net from 'node:net';

import { BackendError, InvalidParamError, IxferError, RemoteDisconnectError } from '../errors.js';
import type { ExchangeContext } from './context.js';
import { withDeadline, type Wait } from '../core/deadline.js';
import { encodeFrame, FrameError, FrameReader, FrameType, ID_BYTES, type Frame, type FrameFault } from './frame.js';

export interface SocketAddress {
  host: string;
  port: number;
}

export function formatAddress({ host, port }: SocketAddress): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Whether a bound address is reachable only from this host. */
export function isLoopback(host: string): boolean {
  return /^(::ffff:)?127\./.test(host) || host === '::1';
}

/**
 * A peer's listener answered ERROR: it refused our request. The code is
 * ERR_REMOTE_DISCONNECT, not the peer's: a peer's answer must not pass for
 * something that happened here (a timeout, a cancel); its code is `remoteCode`.
 */
export class RemoteRefusedError extends RemoteDisconnectError {
  constructor(
    readonly remoteCode: string,
    message: string,
  ) {
    super(message);
  }
}

/** Idle closes, evictions and drops are logged once a minute per source, not once per connection. */
const WARN_EVERY_MS = 60_000;
/** The source address of every local client that does not pick one. */
const LOCAL_SOURCES = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

export class TcpListener {
  readonly #ctx: ExchangeContext;
  readonly #server: net.Server;
  /** Open connections and their source address. */
  readonly #sockets = new Map<net.Socket, string>();
  /** Connections still reading their request, oldest first (a Map keeps insertion order). */
  readonly #reading = new Map<net.Socket, number>();
  readonly #perSource = new Map<string, number>();
  readonly #warned = new Map<string, number>();

  private constructor(ctx: ExchangeContext, server: net.Server) {
    this.#ctx = ctx;
    this.#server = server;
    server.on('connection', (socket) => this.#admit(socket));
  }

  /**
   * Admission: at most maxConnections, and maxConnectionsPerSource from one
   * address other than 127.0.0.1 and ::1. When full, the oldest connection still reading its request
   * (of that source, for the per-source cap) is closed to make room, so
   * idle connections cannot keep requests out; only when every slot is busy
   * answering is the newcomer closed (dropped).
   */
  #admit(socket: net.Socket): void {
    const { maxConnections, maxConnectionsPerSource } = this.#ctx.options;
    const source = socket.remoteAddress ?? '?';
    let full: string | undefined;
    // Every local client comes from 127.0.0.1 (or ::1): there the cap would only refuse bursts; eviction protects instead.
    const capped = !LOCAL_SOURCES.has(source) && (this.#perSource.get(source) ?? 0) >= maxConnectionsPerSource;
    if (capped && !this.#evict(source)) {
      full = `maxConnectionsPerSource (${maxConnectionsPerSource}) are open from it`;
    } else if (this.#sockets.size >= maxConnections && !this.#evict()) {
      full = `maxConnections (${maxConnections}) are open`;
    }
    if (full) {
      this.#ctx.stats.dropped++;
      this.#warnOnce(source, `metadata listener dropped a connection from ${formatAddress({ host: source, port: socket.remotePort ?? 0 })}: ${full}`);
      socket.on('error', () => {});
      socket.destroy();
      return;
    }
    this.#sockets.set(socket, source);
    this.#perSource.set(source, (this.#perSource.get(source) ?? 0) + 1);
    this.#reading.set(socket, performance.now());
    this.#serve(socket, source);
  }

  /**
   * Closes the oldest connection still reading its request (from `source` if
   * given). Honest requests arrive within milliseconds of connecting, so they
   * are never the oldest for long; idle connections only recycle their own slots.
   */
  #evict(source?: string): boolean {
    const now = performance.now();
    for (const [socket, since] of this.#reading) {
      if (source !== undefined && this.#sockets.get(socket) !== source) continue;
      this.#timedOut(socket, `closed a connection that sent no complete request in ${Math.round(now - since)} ms, to admit another`);
      return true;
    }
    return false;
  }

  /** A connection closed for not sending its request in time: counted in timedOut. */
  #timedOut(socket: net.Socket, why: string): void {
    const source = this.#sockets.get(socket) ?? '?';
    this.#ctx.stats.timedOut++;
    this.#warnOnce(source, `metadata listener ${why} (from ${source}; logged once a minute per source)`);
    this.#forget(socket);
    socket.destroy();
  }

  #forget(socket: net.Socket): void {
    const source = this.#sockets.get(socket);
    if (source === undefined) return;
    this.#sockets.delete(socket);
    this.#reading.delete(socket);
    const n = (this.#perSource.get(source) ?? 1) - 1;
    if (n > 0) this.#perSource.set(source, n);
    else this.#perSource.delete(source);
  }

  #warnOnce(source: string, message: string): void {
    const now = performance.now();
    const last = this.#warned.get(source);
    if (last !== undefined && now - last < WARN_EVERY_MS) return;
    if (this.#warned.size >= 1024) this.#warned.clear(); // many sources: bounded, at worst a few more warnings
    this.#warned.set(source, now);
    this.#ctx.warn(message);
  }

  static async open(ctx: ExchangeContext, host: string, port: number): Promise<{ listener: TcpListener; address: SocketAddress }> {
    const server = net.createServer();
    const listener = new TcpListener(ctx, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw new BackendError(`cannot listen on ${formatAddress({ host, port })}: ${err.code ?? err.message}`, { cause: err });
    });
    server.unref(); // a listener alone does not keep the process alive, like the agent itself
    const bound = server.address() as net.AddressInfo;
    return { listener, address: { host: bound.address, port: bound.port } };
  }

  #serve(socket: net.Socket, source: string): void {
    const ctx = this.#ctx;
    const from = formatAddress({ host: source, port: socket.remotePort ?? 0 });
    const reader = new FrameReader(ctx.options.maxFrameBytes, ctx.secret);
    const refuse = (fault: FrameFault | 'timedOut', why: string) => {
      ctx.stats[fault]++;
      ctx.warn(`metadata listener refused a frame from ${from}: ${why}`);
      socket.destroy();
    };
    // The request must arrive whole within timeoutMs of the connection, and the answer be taken within timeoutMs after.
    let deadline = setTimeout(() => {
      if (reader.partial) refuse('timedOut', `no complete frame within ${ctx.options.timeoutMs} ms`);
      else this.#timedOut(socket, `closed a connection that sent nothing within ${ctx.options.timeoutMs} ms`);
    }, ctx.options.timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      let frame: Frame | undefined;
      try {
        frame = reader.push(chunk);
      } catch (err) {
        if (!(err instanceof FrameError)) throw err;
        refuse(err.fault, err.message);
        return;
      }
      if (!frame) return;
      // One request per connection: read no more, answer, and close once the answer is handed to the kernel.
      socket.pause();
      this.#reading.delete(socket); // answering: never evicted
      clearTimeout(deadline);
      deadline = setTimeout(() => socket.destroy(), ctx.options.timeoutMs);
      const answer = this.#answer(frame);
      if (!answer) return refuse('malformed', `unexpected frame type ${frame.type}`);
      ctx.stats.served++;
      socket.end(answer, () => socket.destroy());
    });
    socket.on('end', () => {
      if (reader.partial) refuse('malformed', 'connection ended inside a frame (truncated)');
      else socket.end();
    });
    socket.on('error', () => {}); // a peer's reset is its own business
    socket.on('close', () => {
      clearTimeout(deadline);
      this.#forget(socket);
    });
  }

  /** The answer frame to a request, or undefined for a frame that is not a request. */
  #answer(frame: Frame): Buffer | undefined {
    const ctx = this.#ctx;
    const reply = (type: number, payload: Uint8Array) => encodeFrame(type, frame.id, payload, ctx.secret);
    try {
      switch (frame.type) {
        case FrameType.PUSH:
          ctx.load(frame.payload, 'tcp');
          return reply(FrameType.OK, Buffer.alloc(0));
        case FrameType.FETCH:
          return reply(FrameType.OK, ctx.host.getLocalMetadata());
        case FrameType.INVALIDATE:
          ctx.drop(frame.payload.toString('utf8'), 'tcp');
          return reply(FrameType.OK, Buffer.alloc(0));
        default:
          return undefined;
      }
    } catch (err) {
      if (!(err instanceof IxferError)) throw err;
      ctx.stats.loadFailures++;
      return reply(FrameType.ERROR, Buffer.from(`${err.code}\n${err.message}`));
    }
  }

  async close(): Promise<void> {
    for (const s of this.#sockets.keys()) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * Sends one request to a peer's listener and returns the payload of its OK
 * answer. Connect and answer share one deadline (ERR_TIMEOUT naming the
 * address and the phase); an ERROR answer is a RemoteRefusedError.
 */
export function request(
  ctx: ExchangeContext,
  to: SocketAddress,
  type: number,
  payload: Uint8Array,
  wait: Wait,
): Promise<Buffer> {
  const where = formatAddress(to);
  if (payload.length > ctx.options.maxFrameBytes) {
    return Promise.reject(new InvalidParamError(`${payload.length} bytes for ${where} exceed maxFrameBytes (${ctx.options.maxFrameBytes})`));
  }
  let phase = `connecting to the metadata listener at ${where}`;
  return withDeadline<Buffer>({ what: () => phase, ...wait }, ({ resolve, reject }, abort) => {
    const id = crypto.randomBytes(ID_BYTES);
    const reader = new FrameReader(ctx.options.maxFrameBytes, ctx.secret);
    const socket = net.connect({ host: to.host, port: to.port });
    const fail = (err: Error) => {
      reject(err);
      socket.destroy();
    };
    abort.addEventListener('abort', () => socket.destroy(), { once: true });
    socket.once('connect', () => {
      phase = `waiting for the answer of the metadata listener at ${where}`;
      socket.write(encodeFrame(type, id, payload, ctx.secret));
    });
    socket.on('data', (chunk: Buffer) => {
      let answer: Frame | undefined;
      try {
        answer = reader.push(chunk);
      } catch (err) {
        return fail(new InvalidParamError(`answer of ${where} refused: ${(err as Error).message}`));
      }
      if (!answer) return;
      if (!answer.id.equals(id)) return fail(new InvalidParamError(`answer of ${where} is not for this request`));
      if (answer.type === FrameType.OK) {
        resolve(answer.payload);
        socket.end();
      } else if (answer.type === FrameType.ERROR) {
        const text = answer.payload.toString('utf8');
        const [code = '', ...message] = text.split('\n');
        fail(new RemoteRefusedError(code, `${where} refused the request with ${code}: ${message.join('\n')}`));
      } else {
        fail(new InvalidParamError(`answer of ${where} has request type ${answer.type}`));
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) =>
      fail(new RemoteDisconnectError(`metadata listener at ${where}: ${err.code ?? err.message}`, { cause: err })),
    );
    socket.on('close', () =>
      fail(
        new RemoteDisconnectError(
          `metadata listener at ${where} closed the connection without answering ` +
            '(it refused the frame: same secret on both sides? or it had maxConnections open)',
        ),
      ),
    );
  });
}
