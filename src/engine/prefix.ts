// Completions while typing: the document before the cursor grows by a keystroke at a time, so the KV cache of the
// last prompt decoded already holds all but its last few tokens. PrefixCache keeps that cache and hands back the
// part of it that the next prompt shares, so that only the new tokens run.
import { ort } from './onnx/runtime';
import type { KvCache, LayerEdits } from './model/session';

/** The KV cache of one prompt (batch 1), reused for the next prompt that begins with the same tokens. */
export class PrefixCache {
  private ids: number[] = [];
  private cache: KvCache | undefined;
  private edits: LayerEdits | undefined;
  /** Prompt tokens served from the cache by the last `take`, and tokens it left to run. */
  last = { reused: 0, run: 0 };

  /**
   * The cache of the longest common prefix of `ids` and the kept prompt (at most ids.length − 1 tokens, so that
   * at least one token runs and yields logits), and the tokens still to run. Nothing is reused when the patches
   * differ (another `edits` object) or nothing is shared.
   */
  take(ids: number[], edits: LayerEdits | undefined): { past?: KvCache; rest: number[] } {
    let p = 0;
    const max = Math.min(ids.length - 1, this.ids.length);
    if (this.cache && edits === this.edits) while (p < max && ids[p] === this.ids[p]) p++;
    this.last = { reused: p, run: ids.length - p };
    if (!p || !this.cache) return { rest: ids };
    return { past: p === this.cache.length ? this.cache : truncate(this.cache, p), rest: ids.slice(p) };
  }

  /** Keeps the cache of `ids` (as run with `edits`): [1, heads, ids.length, headDim] per tensor. */
  keep(ids: number[], cache: KvCache | undefined, edits: LayerEdits | undefined): void {
    if (!cache || cache.batch !== 1 || cache.length !== ids.length) return this.clear();
    this.ids = ids.slice();
    this.cache = cache;
    this.edits = edits;
  }

  /**
   * The kept cache also holds under `edits` for the positions where the kept prompt agrees with `ids`, up to
   * `upTo` of them (the caller has shown that `edits` change nothing there: added neurons exactly silent at those
   * positions); the rest is dropped.
   */
  reuseUnder(edits: LayerEdits | undefined, ids: readonly number[], upTo: number): void {
    let p = 0;
    const max = Math.min(upTo, ids.length, this.ids.length);
    while (p < max && ids[p] === this.ids[p]) p++;
    if (!p || !this.cache) return this.clear();
    this.ids = this.ids.slice(0, p);
    this.edits = edits;
  }

  clear(): void {
    this.ids = [];
    this.cache = undefined;
    this.edits = undefined;
  }
}

/** The first `p` positions of a batch-1 cache; the sequence axis is the second to last of each tensor. */
function truncate(cache: KvCache, p: number): KvCache {
  const tensors = cache.tensors.map((t) => {
    const dims = [...t.dims];
    const axis = dims.length - 2;
    const L = dims[axis];
    const inner = dims[axis + 1];
    const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
    const src = t.data as Float32Array | Uint16Array;
    const out = new (src.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(outer * p * inner);
    for (let o = 0; o < outer; o++) out.set(src.subarray(o * L * inner, (o * L + p) * inner), o * p * inner);
    dims[axis] = p;
    return new ort.Tensor(t.type as 'float32', out as Float32Array, dims);
  });
  return { tensors, length: p, batch: 1 };
}

/**
 * A batch-1 cache repeated as `n` identical rows (the batch axis: 1 for a stacked cache [2, batch, …], else 0),
 * so that `n` different continuations of one prefix run as one batch on top of it.
 */
export function repeatRows(cache: KvCache, n: number, stacked: boolean): KvCache {
  if (cache.batch !== 1) throw new Error(`repeatRows: a batch-1 cache expected, got batch ${cache.batch}.`);
  const axis = stacked ? 1 : 0;
  const tensors = cache.tensors.map((t) => {
    const dims = [...t.dims];
    const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
    const src = t.data as Float32Array | Uint16Array;
    const out = new (src.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(outer * n * inner);
    for (let o = 0; o < outer; o++) {
      const block = src.subarray(o * inner, (o + 1) * inner);
      for (let r = 0; r < n; r++) out.set(block, (o * n + r) * inner);
    }
    dims[axis] = n;
    return new ort.Tensor(t.type as 'float32', out as Float32Array, dims);
  });
  return { tensors, length: cache.length, batch: n };
}
