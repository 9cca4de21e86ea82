// The regression prompts' greedy lines before a repair, kept while the model, the active patches and the prompts
// stay the same: the next repair (the other method, another case) then skips decoding them again.
import { createHash } from 'node:crypto';
import type { GreedyLine } from '../engine/repair/verify';
import type { Patch } from '../engine/types';

/** What the lines are read from: the engine's Model in-process, or the extension's worker-hosted one. */
export interface LineSource {
  info: { hash: string };
  greedyLines(prompts: string[], active: readonly Patch[], signal?: AbortSignal): Promise<GreedyLine[]>;
}

const KEEP = 4;

export class RegressionLines {
  private readonly memo = new Map<string, GreedyLine[]>();

  async get(model: LineSource, prompts: string[], active: readonly Patch[], signal?: AbortSignal): Promise<GreedyLine[]> {
    // The patches' edits, not only their ids: a patch file edited by hand keeps its ids.
    const key = createHash('sha256').update(JSON.stringify([model.info.hash, active.map((p) => [p.id, p.edits]), prompts])).digest('hex');
    const hit = this.memo.get(key);
    if (hit) return hit;
    const lines = await model.greedyLines(prompts, active, signal);
    this.memo.set(key, lines);
    if (this.memo.size > KEEP) this.memo.delete(this.memo.keys().next().value as string);
    return lines;
  }
}
