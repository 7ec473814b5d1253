/**
 * The seam between the front door and the engines that move bytes (like
 * NIXL's backend engine): the network engine (net/) and the file engine
 * (file/) each build postings of their own kind, and a Transfer runs one
 * posting on its engine through this interface alone.
 */
import type { Op } from '../schemas.js';
import type { GiveUpCode } from './deadline.js';
import type { MemoryRegion } from './memory.js';
import type { Telemetry } from './telemetry.js';

/** How a network transfer's bytes travel: host memory only; VRAM the provider reaches (FI_HMEM); VRAM staged through host memory. */
export type TransferPath = 'host' | 'gpudirect' | 'staged';

/** What one transfer moves, resolved and packed by its engine once, posted as often as asked. */
export interface Posting {
  readonly op: Op;
  /** The far side, for messages: a peer's name, a file's path. */
  readonly target: string;
  /** Descriptor pairs. */
  readonly count: number;
  /** Bytes moved by one run. */
  readonly bytes: number;
  /** Local memory the transfer reads or writes: held (not deregistrable) while a run is in flight. */
  readonly memory: readonly MemoryRegion[];
  /** Network transfers: how the bytes travel (staged if any pair is, on either side). */
  readonly path?: TransferPath;
}

/** The end of one run, as the shim reports it (status 0 or an ixfer_status; ERR_CANCELED when the agent closed first). */
export interface Completion {
  /** @internal Transfer's, unpublished: stripped here too, so the published Transfer still implements this. */
  complete(status: number, fiErrno: number, detail: number): void;
}

export interface Engine<P extends Posting = Posting> {
  /** The agent's telemetry: runs report their start and end to it. */
  readonly telemetry: Telemetry;
  /** Deadline of Transfer.done() when the call gives none. */
  readonly defaultTimeoutMs: number | undefined;
  /**
   * Starts one run of `posting`; its end reaches `done` through the agent's
   * completions. Throws, starting nothing, when something the posting names
   * is gone. Returns the id that cancel() takes.
   */
  post(posting: P, done: Completion): number;
  /** Asks run `id` to stop early; it still ends through its Completion. */
  cancel(id: number, code: GiveUpCode): void;
  /** Words for a failed run (detail: the shim's, e.g. the index of the descriptor that failed). */
  describeError(posting: P, status: number, fiErrno: number, detail: number): string;
  /** A run of posting ended: lets go of what post() held. */
  release(posting: P): void;
  /** Stops the engine: runs still in flight end through their completions. */
  close(): void;
  /** Throws ERR_NOT_ALLOWED once the agent is closed (before a post looks at anything else). */
  checkOpen(): void;
  /**
   * Only engines that carry notifications: the posting that also delivers
   * `body` (checked here) to the target once its data is in place.
   */
  notifying?(posting: P, body: unknown): P;
}
