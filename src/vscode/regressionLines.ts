// The regression prompts' greedy lines before a repair, kept per prompt while the model and the active patches
// stay the same: the next repair (the other method, another case, a prompt set that differs by the line being
// repaired) decodes only the prompts it has not seen. Decoded in small batches so the panel can count them.
import { createHash } from 'node:crypto';
import type { GreedyLine } from '../engine/repair/verify';
import type { Patch } from '../engine/types';

/** What the lines are read from: the engine's Model in-process, or the extension's worker-hosted one. */
export interface LineSource {
  info: { hash: string };
  greedyLines(prompts: string[], active: readonly Patch[], signal?: AbortSignal): Promise<GreedyLine[]>;
}

/** The most prompts decoded together: the engine's own batch. */
const CHUNK = 16;
/** A batch is grown while it takes less than this (ms), and shrunk while it takes more than 4×: the count moves. */
const TICK_MS = 1000;

/**
 * The next batch size after a batch of `size` prompts took `ms`: doubled (to CHUNK at most) while batches are quick,
 * halved (to 1) while they take seconds, so a large model's count moves per completion and a small one still
 * decodes in the engine's full batches.
 */
export function nextChunk(size: number, ms: number): number {
  if (ms < TICK_MS) return Math.min(CHUNK, size * 2);
  if (ms > 4 * TICK_MS) return Math.max(1, Math.floor(size / 2));
  return size;
}
/** Lines kept (one greedy line each), across models and patch sets. */
const KEEP = 2000;

/**
 * The model and patch set a line was decoded with: the patches' edits and added neurons, not only their ids (a patch
 * file edited by hand keeps its ids).
 */
function setKey(model: LineSource, active: readonly Patch[]): string {
  return createHash('sha256').update(JSON.stringify([model.info.hash, active.map((p) => [p.id, p.edits, p.added ?? []])])).digest('hex');
}

export class RegressionLines {
  private readonly memo = new Map<string, GreedyLine>();
  /** One decode at a time: a repair that starts while lines are prefetched reuses what the prefetch decoded. */
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * The greedy line of each prompt with the active patches, decoding the ones not known yet. `onProgress(done,
   * total)` after each batch (done counts the known ones too). Throws the engine's cancellation error when
   * `signal` aborts.
   */
  get(
    model: LineSource,
    prompts: string[],
    active: readonly Patch[],
    signal?: AbortSignal,
    onProgress?: (done: number, total: number) => void,
  ): Promise<GreedyLine[]> {
    const run = this.queue.then(() => this.decode(model, prompts, active, signal, onProgress));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async decode(...[model, prompts, active, signal, onProgress]: Parameters<RegressionLines['get']>): Promise<GreedyLine[]> {
    const set = setKey(model, active);
    const key = (p: string): string => `${set}:${p}`;
    const missing = [...new Set(prompts.filter((p) => !this.memo.has(key(p))))];
    let done = prompts.length - missing.length;
    let last = 0;
    onProgress?.(done, prompts.length);
    // The first batch is one prompt: its time says how many the next one can take while the count still moves.
    let size = 1;
    for (let i = 0; i < missing.length; i += size) {
      if (i > 0) size = nextChunk(size, last);
      const chunk = missing.slice(i, i + size);
      const started = Date.now();
      const lines = await model.greedyLines(chunk, active, signal);
      last = Date.now() - started;
      chunk.forEach((p, k) => this.remember(key(p), lines[k]));
      done += chunk.length;
      onProgress?.(Math.min(done, prompts.length), prompts.length);
    }
    return prompts.map((p) => this.memo.get(key(p))!);
  }

  /** How many of `prompts` are known for this model and patch set (what a repair would not decode again). */
  known(model: LineSource, prompts: string[], active: readonly Patch[]): number {
    const set = setKey(model, active);
    return prompts.filter((p) => this.memo.has(`${set}:${p}`)).length;
  }

  clear(): void {
    this.memo.clear();
  }

  private remember(key: string, line: GreedyLine): void {
    this.memo.set(key, line);
    if (this.memo.size > KEEP) this.memo.delete(this.memo.keys().next().value as string);
  }
}
