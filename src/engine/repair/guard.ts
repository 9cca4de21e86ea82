// Guard lines harvested from reference code: lines of the texts that the model completes exactly right, prompted
// with the text before them (from the start of the line), or from after the line's first word (a cursor in the
// middle of a line, as an editor's ghost text has it). A cheap filter first: one forward of each whole text, and a
// line is a candidate where the argmax predicts every token from the line's first to the one ending it; then each
// candidate is decoded greedily (healed boundary, end-of-line stop) and kept only if it spells the line exactly.
// Cached per model and texts in the model's cache folder.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { preparePrompt } from '../generate';
import type { LoadedModel } from '../model/load';
import { padRows } from '../model/session';
import type { GuardLine } from './measures';
import { completions } from './verify';

const BATCH = 8;
const FORMAT = 1;
/** Lines shorter than this (stripped) say little about the model: a lone `)` or `else:`. */
const MIN_CHARS = 4;

export interface HarvestOptions {
  /** At most this many guard lines (default 200), in the texts' order. */
  max?: number;
  /** Also harvest from after each line's first word (default true). */
  midLine?: boolean;
  signal?: AbortSignal;
}

/** Lines the model completes exactly right in `texts` (see the module comment). */
export async function harvestGuard(model: LoadedModel, texts: string[], opts: HarvestOptions = {}): Promise<GuardLine[]> {
  const max = opts.max ?? 200;
  const midLine = opts.midLine ?? true;
  const key = createHash('sha256').update(JSON.stringify([FORMAT, max, midLine, texts])).digest('hex').slice(0, 16);
  const file = path.join(model.cacheDir, `guard-${key}.json`);
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as GuardLine[];
    } catch {
      // rebuilt below
    }
  }
  const candidates: GuardLine[] = [];
  const tok = model.tokenizer;
  const V = model.info.vocab;
  for (let i = 0; i < texts.length; i += BATCH) {
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
    const part = candidates.slice(i, i + 32);
    const got = await completions(model, part.map((c) => c.prompt), undefined, opts.signal);
    part.forEach((c, k) => {
      if (got[k] === c.desired && out.length < max) out.push(c);
    });
  }
  await writeFileAtomic(file, JSON.stringify(out));
  return out;
}
