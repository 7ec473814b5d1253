/** --check-consistency: a per-row byte pattern for the source, and hashes to compare sides. */
import crypto from 'node:crypto';

/** A prime length, so that blocks at power-of-two offsets see different bytes. */
const PERIOD = 4093;

/** Fills bytes with a pattern derived from seed (fast: Buffer.fill of a template). */
export function fillPattern(bytes: Uint8Array, seed: number): void {
  const template = Buffer.alloc(PERIOD);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < PERIOD; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    template[i] = x & 0xff;
  }
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).fill(template);
}

export function hash(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}
