/**
 * Where one iteration's bytes lie: block b of the batch at b * blockSize, cut
 * into numIovs pieces, at the same offsets on both sides. The C baseline
 * (bench/fi_rma_baseline.c, layout()) uses the same layout.
 */
import type { RowSpec } from './options.js';

export interface Piece {
  off: number;
  len: number;
}

export function pieces(row: Pick<RowSpec, 'blockSize' | 'batchSize' | 'numIovs'>): Piece[] {
  const piece = Math.floor(row.blockSize / row.numIovs);
  const out: Piece[] = [];
  for (let b = 0; b < row.batchSize; b++) {
    for (let i = 0; i < row.numIovs; i++) {
      const last = i + 1 === row.numIovs;
      out.push({ off: b * row.blockSize + i * piece, len: last ? row.blockSize - i * piece : piece });
    }
  }
  return out;
}
