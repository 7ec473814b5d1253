/**
 * Frames of the TCP side channel. Whatever arrives on a socket is untrusted:
 * the header is checked before the payload is buffered (so a claimed size over
 * the cap costs nothing), and with a shared secret the whole frame must carry
 * a valid HMAC-SHA256.
 *
 * Layout (little-endian), version 1:
 *   u32 magic "IXMX", u8 version, u8 type, u8 flags (1 = MAC follows), u8 reserved (0)
 *   u8[16] request id (random in a request, echoed by its answer)
 *   u32 payload length, payload
 *   u8[32] HMAC-SHA256(secret, header and payload)      when flags & 1
 */
import crypto from 'node:crypto';

import { InvalidParamError } from '../errors.js';

const MAGIC = 0x584d5849; // "IXMX" read as little-endian u32
export const FRAME_VERSION = 1;
export const HEADER_BYTES = 28;
export const MAC_BYTES = 32;
export const ID_BYTES = 16;
const FLAG_MAC = 1;

export const FrameType = {
  /** Request: the payload is the sender's metadata; load it. */
  PUSH: 1,
  /** Request: answer with your metadata. */
  FETCH: 2,
  /** Request: the payload is the sender's name; drop its metadata. */
  INVALIDATE: 3,
  /** Answer: done; for FETCH the payload is the metadata. */
  OK: 0x10,
  /** Answer: refused; the payload is "CODE\nmessage". */
  ERROR: 0x11,
} as const;
const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export interface Frame {
  type: number;
  id: Buffer;
  payload: Buffer;
}

/** Why a frame was refused; each has its counter in ExchangeStats. */
export type FrameFault = 'malformed' | 'oversized' | 'unauthenticated';

export class FrameError extends InvalidParamError {
  constructor(
    readonly fault: FrameFault,
    message: string,
  ) {
    super(message);
  }
}

function mac(secret: Buffer, header: Buffer, payload: Buffer): Buffer {
  return crypto.createHmac('sha256', secret).update(header).update(payload).digest();
}

export function encodeFrame(type: number, id: Buffer, payload: Uint8Array, secret?: Buffer): Buffer {
  const body = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(MAGIC, 0);
  header[4] = FRAME_VERSION;
  header[5] = type;
  header[6] = secret ? FLAG_MAC : 0;
  id.copy(header, 8, 0, ID_BYTES);
  header.writeUInt32LE(body.length, 24);
  return Buffer.concat(secret ? [header, body, mac(secret, header, body)] : [header, body]);
}

/**
 * Reads the one frame of a connection (one request, or one answer) from a
 * byte stream; bytes after it are not looked at. Chunks are kept as they come
 * and joined only once a whole header, then a whole frame, is there: O(size).
 */
export class FrameReader {
  #chunks: Buffer[] = [];
  #size = 0;
  #frameBytes = 0; // once the header is checked
  #done = false;

  constructor(
    readonly maxPayload: number,
    readonly secret: Buffer | undefined,
  ) {}

  /** Whether part of the frame is buffered. */
  get partial(): boolean {
    return this.#size > 0;
  }

  /** Adds bytes and returns the frame once they complete it; throws FrameError if it is bad. */
  push(chunk: Buffer): Frame | undefined {
    if (this.#done) return undefined;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    if (!this.#frameBytes) {
      if (this.#size < HEADER_BYTES) return undefined;
      this.#frameBytes = this.#checkHeader(this.#joined());
    }
    if (this.#size < this.#frameBytes) return undefined;
    const frame = this.#joined().subarray(0, this.#frameBytes);
    this.#chunks = [];
    this.#size = 0;
    this.#done = true;
    return this.#open(frame);
  }

  #joined(): Buffer {
    if (this.#chunks.length > 1) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0]!;
  }

  /** Returns the size of the whole frame. */
  #checkHeader(b: Buffer): number {
    if (b.readUInt32LE(0) !== MAGIC) throw new FrameError('malformed', 'not an ixfer exchange frame (wrong magic)');
    if (b[4] !== FRAME_VERSION) throw new FrameError('malformed', `frame version ${b[4]}, this ixfer speaks ${FRAME_VERSION}`);
    if (!KNOWN_TYPES.has(b[5]!)) throw new FrameError('malformed', `unknown frame type ${b[5]}`);
    const flags = b[6]!;
    if (flags & ~FLAG_MAC || b[7] !== 0) throw new FrameError('malformed', `unknown flags 0x${flags.toString(16)}`);
    const len = b.readUInt32LE(24);
    if (len > this.maxPayload) throw new FrameError('oversized', `frame of ${len} bytes exceeds the cap of ${this.maxPayload}`);
    const hasMac = (flags & FLAG_MAC) !== 0;
    if (this.secret && !hasMac) throw new FrameError('unauthenticated', 'frame has no MAC and a shared secret is set');
    if (!this.secret && hasMac) throw new FrameError('unauthenticated', 'frame has a MAC but no shared secret is set here');
    return HEADER_BYTES + len + (hasMac ? MAC_BYTES : 0);
  }

  #open(frame: Buffer): Frame {
    const end = frame.length - (this.secret ? MAC_BYTES : 0);
    const header = frame.subarray(0, HEADER_BYTES);
    const payload = frame.subarray(HEADER_BYTES, end);
    if (this.secret && !crypto.timingSafeEqual(frame.subarray(end), mac(this.secret, header, payload))) {
      throw new FrameError('unauthenticated', 'frame MAC does not match the shared secret');
    }
    return { type: frame[5]!, id: frame.subarray(8, 8 + ID_BYTES), payload };
  }
}
