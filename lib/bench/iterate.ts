/**
 * nixlbench's iteration, timed in a worker: post one transfer, await it, and
 * only then the next; prep, post and tx samples in µs.
 */
import type { Transfer } from '../core/transfer.js';
import { summarize, type Timing } from './stats.js';

const now = () => performance.now() * 1000;

/**
 * Runs iters iterations. make() builds the transfer: once for the row, posted
 * again every iteration (one prep sample), or, with perIteration, anew for
 * each iteration and released after it (a prep sample each).
 */
export async function timeIterations(iters: number, make: () => Transfer, perIteration: boolean): Promise<Timing> {
  const prep: number[] = [];
  const post: number[] = [];
  const tx: number[] = [];
  const build = () => {
    const a = now();
    const t = make();
    prep.push(now() - a);
    return t;
  };
  const start = now();
  const shared = perIteration ? undefined : build();
  for (let i = 0; i < iters; i++) {
    const t = shared ?? build();
    const a = now();
    t.post();
    const b = now();
    await t.done();
    post.push(b - a);
    tx.push(now() - b);
    if (!shared) t.release();
  }
  shared?.release();
  return { totalUs: now() - start, prep: summarize(prep), post: summarize(post), tx: summarize(tx) };
}
