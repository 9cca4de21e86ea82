// Guard lines harvested from reference code: lines of the texts that the model completes exactly right, prompted
// with the text before them (from the start of the line), or from after the line's first word (a cursor in the
// middle of a line, as an editor's ghost text has it). A cheap filter first: one forward of each whole text, and a
// line is a candidate where the argmax predicts every token from the line's first to the one ending it; then each
// candidate is decoded greedily (healed boundary, end-of-line stop) and kept only if it spells the line exactly.
// Cached per model hash and texts' hash in the model's cache folder, verified before use (derivedCache.ts): a
// corrupt, edited or foreign entry is harvested again, never trusted.
import { preparePrompt } from '../generate';
import { type CacheOutcome, cachedDerived, inputsHash } from '../model/derivedCache';
import type { LoadedModel } from '../model/load';
import { padRows } from '../model/session';
import type { GuardLine } from './measures';
import { completions } from './verify';

const BATCH = 8;
/** Bumped when what a guard line is (or how it is harvested) changes: older cache entries are harvested again. */
const FORMAT = 2;
/** Lines shorter than this (stripped) say little about the model: a lone `)` or `else:`. */
const MIN_CHARS = 4;

export interface HarvestOptions {
  /** At most this many guard lines (default 200), in the texts' order. */
  max?: number;
  /** Also harvest from after each line's first word (default true). */
  midLine?: boolean;
  signal?: AbortSignal;
  /** Whether the lines came from the cache, or why they were harvested (told once, before returning). */
  onCache?: (outcome: CacheOutcome) => void;
  /**
   * A harvest's progress (a cache hit reports nothing): texts scanned of all (`scanning`), then candidate lines
   * decoded of all candidates (`confirming`).
   */
  onProgress?: (stage: 'scanning' | 'confirming', done: number, total: number) => void;
}

/** What a cached guard set must look like: at most `max` lines of strings. */
function guardShape(max: number): (v: unknown) => string | undefined {
  return (v) => {
    if (!Array.isArray(v)) return 'not a list';
    if (v.length > max) return `${v.length} lines, more than ${max}`;
    const bad = v.findIndex((g) => !g || typeof g !== 'object' || typeof g.prompt !== 'string' || typeof g.desired !== 'string' || (g.source !== undefined && typeof g.source !== 'string'));
    return bad >= 0 ? `line ${bad + 1} is not {prompt, desired}` : undefined;
  };
}

/**
 * Lines the model completes exactly right in `texts` (see the module comment), at most `max`, in the texts' order.
 * Read from the model's cache folder when an entry for these texts and options verifies; harvested (one forward of
 * each text, then a greedy decode of each candidate) and cached otherwise.
 * @throws NeuronpatchError when cancelled through `signal`.
 */
export async function harvestGuard(model: LoadedModel, texts: string[], opts: HarvestOptions = {}): Promise<GuardLine[]> {
  const max = opts.max ?? 200;
  const midLine = opts.midLine ?? true;
  const key = { kind: 'guard', format: FORMAT, model: model.info.hash, inputs: inputsHash([max, midLine, texts]) };
  const { value, cache } = await cachedDerived<GuardLine[]>(model.cacheDir, key, guardShape(max), () => harvest(model, texts, max, midLine, opts));
  opts.onCache?.(cache);
  return value;
}

async function harvest(model: LoadedModel, texts: string[], max: number, midLine: boolean, opts: HarvestOptions): Promise<GuardLine[]> {
  const candidates: GuardLine[] = [];
  const tok = model.tokenizer;
  const V = model.info.vocab;
  for (let i = 0; i < texts.length; i += BATCH) {
    opts.onProgress?.('scanning', i, texts.length);
    const rows = texts.slice(i, i + BATCH).map((t) => preparePrompt(model, t, 1, false).ids);
    const { ids, mask, width, start } = padRows(model.graph, rows);
    const res = await model.session.forward({ ids, mask });
    rows.forEach((r, b) => {
      const text = tok.decode(r);
      // Character offset where each token starts.
      const starts: number[] = [];
      let at = 0;
      for (const id of r) {
        starts.push(at);
        at += tok.decode([id]).length;
      }
      if (at !== text.length) return;  // tokens do not spell the text piecewise (multi-byte characters): skip
      const right = r.map((id, p) => {
        if (p === 0) return false;
        const off = (b * width + start[b] + p - 1) * V;
        let best = 0;
        for (let v = 1; v < V; v++) if (res.logits[off + v] > res.logits[off + best]) best = v;
        return best === id;
      });
      let lineStart = 0;
      let line = 0;
      while (lineStart < text.length) {
        const end = text.indexOf('\n', lineStart);
        if (end < 0) break;  // the last line may be cut: never a guard line
        const body = text.slice(lineStart, end);
        line++;
        if (line > 3 && body.trim().length >= MIN_CHARS && body.trimEnd() === body) {
          const cuts = [lineStart];
          if (midLine) {
            const word = /^\s*[A-Za-z_][A-Za-z0-9_]*/.exec(body);
            if (word && word[0].length < body.length - MIN_CHARS) cuts.push(lineStart + word[0].length);
          }
          for (const cut of cuts) {
            // Every token starting inside [cut, end] (the one ending the line included) is predicted right.
            const ok = r.every((_, p) => starts[p] <= cut || starts[p] > end || right[p]);
            if (ok) candidates.push({ prompt: text.slice(0, cut), desired: text.slice(cut, end), source: `text ${i + b} line ${line}${cut > lineStart ? ' mid' : ''}` });
          }
        }
        lineStart = end + 1;
      }
    });
  }
  const out: GuardLine[] = [];
  for (let i = 0; i < candidates.length && out.length < max; i += 32) {
    opts.onProgress?.('confirming', i, candidates.length);
    const part = candidates.slice(i, i + 32);
    const got = await completions(model, part.map((c) => c.prompt), undefined, opts.signal);
    part.forEach((c, k) => {
      if (got[k] === c.desired && out.length < max) out.push(c);
    });
  }
  return out;
}
