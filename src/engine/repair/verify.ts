// What counts as fixed, and what else changed: greedy completions of regression prompts before and after a patch
// (batched: they share one patch and one model), the mean next-token KL divergence, and the case's variants.
import { DEFAULT_MAX_NEW_TOKENS, generateBatched, preparePrompt } from '../generate';
import { logSumExp } from '../linalg';
import type { LoadedModel } from '../model/load';
import { type LayerEdits, padRows } from '../model/session';
import { padsLeft } from '../model/graph';
import { logitRows, positionStates } from '../trace/teacher';
import { NeuronpatchError, type RepairCaseVariant } from '../types';

const BATCH = 16;
/** Rows of a teacher-forced check: shorter than a decode's, since every position of every line has logits. */
const CHECK_BATCH = 8;
/** A gap below this is left to decoding: a full forward and a KV-cached decode may round a near-exact tie apart. */
const TIE = 1e-4;

/** A greedy line and the token ids decoding chose for it. */
export interface GreedyLine {
  completion: string;
  tokens: number[];
}

export async function greedyLines(model: LoadedModel, prompts: string[], edits?: LayerEdits, signal?: AbortSignal): Promise<GreedyLine[]> {
  return (await generateBatched(model, prompts, { edits, signal }, BATCH)).map((c) => ({ completion: c.completion, tokens: c.tokens.map((t) => t.id) }));
}

export async function completions(model: LoadedModel, prompts: string[], edits?: LayerEdits, signal?: AbortSignal): Promise<string[]> {
  return (await greedyLines(model, prompts, edits, signal)).map((l) => l.completion);
}

/**
 * The greedy lines under `edits`, given the lines as decoded before. A line whose every token greedy decoding would
 * still choose (one teacher-forced forward of prompt and line, healing constraint included) is unchanged; only
 * the others are decoded again, since a different token can still spell the same line and a changed line's new
 * text is shown. A line the patch leaves alone costs its share of a forward instead of a decode.
 */
export async function linesAfter(model: LoadedModel, prompts: string[], before: GreedyLine[], edits: LayerEdits, signal?: AbortSignal): Promise<string[]> {
  if (before.length !== prompts.length) throw new NeuronpatchError(`${before.length} lines before for ${prompts.length} regression prompts.`);
  const out = before.map((b) => b.completion);
  const redo: number[] = [];
  for (let i = 0; i < prompts.length; i += CHECK_BATCH) {
    if (signal?.aborted) throw new NeuronpatchError('Generation was cancelled.');
    const rows = prompts.slice(i, i + CHECK_BATCH).map((p, k) => {
      const prepared = preparePrompt(model, p, DEFAULT_MAX_NEW_TOKENS);
      const targets = before[i + k].tokens;
      return { at: i + k, prepared, targets, input: [...prepared.ids, ...targets.slice(0, -1)] };
    });
    const { ids, mask, start } = padRows(model.graph, rows.map((r) => r.input));
    const first = rows.map((r, b) => start[b] + r.prepared.ids.length - 1);
    const res = await model.session.forward({ ids, mask, edits, logitsFrom: Math.min(...first) });
    rows.forEach((r, b) => {
      const target = { prepared: r.prepared, targets: r.targets, first: first[b], input: r.input, lineEnd: false };
      const same = r.targets.length > 0 && positionStates(model, target, logitRows(res), b).every((st) => !st.failing && st.gap >= TIE);
      if (!same) redo.push(r.at);
    });
  }
  if (redo.length) {
    const again = await completions(model, redo.map((k) => prompts[k]), edits, signal);
    redo.forEach((k, j) => (out[k] = again[j]));
  }
  return out;
}

/** The prompt's ids as the next-token measures feed them (healed boundary, room for one token). */
export function nextTokenIds(model: LoadedModel, prompt: string): number[] {
  return preparePrompt(model, prompt, 1).ids;
}

/**
 * The logits of the next token at the end of each (healed) prompt under `edits`: one [vocab] row per prompt (kept
 * in memory: for a small vocabulary or few prompts; nextTokenShift streams instead). Only each prompt's last
 * position is unembedded where the rows are left-padded.
 */
export async function nextTokenLogits(model: LoadedModel, prompts: string[], edits?: LayerEdits): Promise<Float32Array[]> {
  const V = model.info.vocab;
  const out: Float32Array[] = [];
  for (let i = 0; i < prompts.length; i += BATCH) {
    const rows = prompts.slice(i, i + BATCH).map((p) => nextTokenIds(model, p));
    const { ids, mask, start } = padRows(model.graph, rows);
    const ends = rows.map((r, k) => start[k] + r.length - 1);
    const res = await model.session.forward({ ids, mask, edits, ...(padsLeft(model.graph) ? { lastOnly: true } : { logitsFrom: Math.min(...ends) }) });
    rows.forEach((_, r) => {
      const off = (r * res.logitPositions + ends[r] - res.logitsFrom) * V;
      out.push(res.logits.slice(off, off + V));
    });
  }
  return out;
}

/**
 * Mean KL(p_before ‖ p_after) of the next-token distributions given as logit rows, and the share of rows whose most
 * likely token is the same.
 */
export function shiftBetween(before: Float32Array[], after: Float32Array[]): { meanKl: number; sameNext: number } {
  if (before.length !== after.length) throw new NeuronpatchError(`${before.length} next-token rows before, ${after.length} after.`);
  let total = 0;
  let same = 0;
  for (let r = 0; r < before.length; r++) {
    const { kl, argmaxP, argmaxQ } = klDivergence(before[r], after[r], 0, before[r].length);
    total += Math.max(0, kl);
    if (argmaxP === argmaxQ) same++;
  }
  return before.length ? { meanKl: total / before.length, sameNext: same / before.length } : { meanKl: 0, sameNext: 1 };
}

/**
 * The next-token distributions at the end of each (healed) prompt, before and after: their mean KL(p_before ‖
 * p_after), and the share of prompts whose most likely next token is unchanged.
 */
export async function nextTokenShift(model: LoadedModel, prompts: string[], before?: LayerEdits, after?: LayerEdits): Promise<{ meanKl: number; sameNext: number }> {
  const V = model.info.vocab;
  // Left-padded rows all end at the last slot: the lm_head runs there only ([rows, 1, V]). Right-padded ones end
  // where each row does: the logits of the positions from the earliest end on.
  const left = padsLeft(model.graph);
  let total = 0;
  let same = 0;
  for (let i = 0; i < prompts.length; i += BATCH) {
    const rows = prompts.slice(i, i + BATCH).map((p) => preparePrompt(model, p, 1).ids);
    const { ids, mask, start } = padRows(model.graph, rows);
    const ends = rows.map((r, b) => start[b] + r.length - 1);
    const from = left ? ids[0].length - 1 : Math.min(...ends);
    // One after the other: two forwards in flight at once would hold both runs' buffers in onnxruntime's arena.
    const a = await model.session.forward({ ids, mask, edits: before, ...(left ? { lastOnly: true } : { logitsFrom: from }) });
    const b = await model.session.forward({ ids, mask, edits: after, ...(left ? { lastOnly: true } : { logitsFrom: from }) });
    for (let r = 0; r < rows.length; r++) {
      const off = (r * a.logitPositions + ends[r] - from) * V;
      const { kl, argmaxP, argmaxQ } = klDivergence(a.logits, b.logits, off, V);
      total += Math.max(0, kl);
      if (argmaxP === argmaxQ) same++;
    }
  }
  return prompts.length ? { meanKl: total / prompts.length, sameNext: same / prompts.length } : { meanKl: 0, sameNext: 1 };
}

/**
 * KL(softmax(p) ‖ softmax(q)) in nats over logits `p[off, off + n)` and `q[off, off + n)`, and each row's argmax
 * (lower index on ties): two passes over each row, nothing allocated.
 */
export function klDivergence(p: Float32Array, q: Float32Array, off: number, n: number): { kl: number; argmaxP: number; argmaxQ: number } {
  const lp = logSumExp(p, off, n);
  const lq = logSumExp(q, off, n);
  let kl = 0;
  let ap = 0;
  let aq = 0;
  for (let v = 0; v < n; v++) {
    const x = p[off + v] - lp;
    kl += Math.exp(x) * (x - q[off + v] + lq);
    if (p[off + v] > p[off + ap]) ap = v;
    if (q[off + v] > q[off + aq]) aq = v;
  }
  return { kl, argmaxP: ap, argmaxQ: aq };
}

export interface SideEffects {
  /** Share of regression prompts whose greedy line is unchanged. */
  specificity: number;
  /** Share whose most likely next token is unchanged: a line can flip on a near-tie late in it, a token cannot. */
  nextTokenSpecificity: number;
  meanKl: number;
  changed: { prompt: string; before: string; after: string }[];
}

export async function sideEffects(
  model: LoadedModel, prompts: string[], base: LayerEdits | undefined, patched: LayerEdits, before?: GreedyLine[], signal?: AbortSignal,
): Promise<SideEffects> {
  const old = before ?? (await greedyLines(model, prompts, base, signal));
  const now = await linesAfter(model, prompts, old, patched, signal);
  const changed = prompts.flatMap((prompt, i) => (old[i].completion === now[i] ? [] : [{ prompt, before: old[i].completion, after: now[i] }]));
  const { meanKl, sameNext } = await nextTokenShift(model, prompts, base, patched);
  return { specificity: prompts.length ? 1 - changed.length / prompts.length : 1, nextTokenSpecificity: sameNext, meanKl, changed };
}

/** Share of the variants whose greedy completion with the patch is their desired text. */
export async function generalization(model: LoadedModel, variants: RepairCaseVariant[], patched: LayerEdits, signal?: AbortSignal): Promise<number | null> {
  if (!variants.length) return null;
  const got = await completions(model, variants.map((v) => v.prompt), patched, signal);
  return got.filter((g, i) => g === variants[i].desired.replace(/\n$/, '')).length / variants.length;
}
