// Side effects of a patch, measured the way model-editing work measures locality (EasyEdit's locality, T-Patcher's
// and GRACE's retention), all by teacher-forced forwards where they can be:
//   token locality     share of the regression prompts' greedy-continuation tokens (decoded before the patch)
//                      whose argmax under the patch is still that token, teacher-forced: robust to the near-ties
//                      late in a line that make "greedy line unchanged" flip;
//   correct lines kept guard lines (the model completed them exactly right before) still exactly right;
//   held-out loss      mean next-token loss (nats per token) over held-out code, before and after, relative change;
//   mean KL, next token  KL(p_before ‖ p_after) and argmax agreement at the end of each regression prompt;
//   lines unchanged    the regression prompts' greedy lines, strictly (secondary).
// A line or guard line whose every position keeps its token by at least TIE is unchanged without decoding; only the
// others are decoded again (a different token can still spell the same text).
import { DEFAULT_MAX_NEW_TOKENS, preparePrompt } from '../generate';
import { cachedDerived, inputsHash } from '../model/derivedCache';
import { logSumExp } from '../linalg';
import type { LoadedModel } from '../model/load';
import { type LayerEdits, padRows } from '../model/session';
import { logitRows, positionStates, repairTarget } from '../trace/teacher';
import { NeuronpatchError, type SideEffectSummary } from '../types';
import { baselineLines, baselineNextToken } from './baseline';
import { type KnownInputs, unchangedOn } from './unchanged';
import { silentOn } from './earlier';
import { completions, type GreedyLine, greedyLines, nextTokenIds, nextTokenLogits, nextTokenShift, shiftBetween } from './verify';

/** A line the model completes exactly right: the prompt up to the cursor and the rest of the line. */
export interface GuardLine {
  prompt: string;
  desired: string;
  /** Where it came from (file:line, "accepted completion"). */
  source?: string;
}

const CHECK_BATCH = 8;
/** Next-token logit rows (before and after, float32) a side-effect check may keep in memory and cache on disk. */
const NEXT_ROWS_BYTES = 16 * 2 ** 20;
const TIE = 1e-4;
/** Guard lines a summary names when the patch breaks them. */
const BROKEN_SHOWN = 5;

export interface SideEffectMeasures {
  tokenLocality: number | null;
  tokens: number;
  linesUnchanged: number | null;
  nextToken: number | null;
  meanKl: number | null;
  changed: { prompt: string; before: string; after: string }[];
  kept: { kept: number; of: number } | null;
  broken: { prompt: string; desired: string; after: string }[];
  lossChange: number | null;
  summary: SideEffectSummary;
}

export interface MeasureInputs {
  /** Regression prompts (unrelated code): token locality, lines unchanged, next token, KL. */
  prompts: string[];
  /** Their greedy lines under `base`, when the caller has them. */
  before?: GreedyLine[];
  /** Lines the model completes exactly right under `base`. */
  guard?: GuardLine[];
  /** Held-out code for the loss (default: none). */
  heldOut?: string[];
  /** Lines the model completes right that no method was given (measured only: correct lines kept, unseen). */
  unseenGuard?: GuardLine[];
  /**
   * x̂ of some token sequences on the unpatched model (the keyed method's protected code): held-out texts among them
   * on which the patches' added neurons are all exactly silent are not run again (unchanged.ts).
   */
  known?: KnownInputs;
  /**
   * Items checked under the patch so far, of all: the regression prompts (token locality), the guard lines, the
   * unseen guard lines and the held-out texts (their loss), in that order, reported after each batch.
   */
  onProgress?: (done: number, total: number) => void;
}

/** Every measure of the module comment for `patched` against `base` (both may carry added neurons). */
export async function measureSideEffects(model: LoadedModel, inputs: MeasureInputs, base: LayerEdits | undefined, patched: LayerEdits, signal?: AbortSignal): Promise<SideEffectMeasures> {
  const { prompts } = inputs;
  const total = prompts.length + (inputs.guard?.length ?? 0) + (inputs.unseenGuard?.length ?? 0) + (inputs.heldOut?.length ?? 0);
  let done = 0;
  const tick = inputs.onProgress ? (n: number) => inputs.onProgress!((done += n), total) : undefined;
  inputs.onProgress?.(0, total);
  let tokenLocality: number | null = null;
  let tokens = 0;
  let linesUnchanged: number | null = null;
  let changed: SideEffectMeasures['changed'] = [];
  let nextToken: number | null = null;
  let meanKl: number | null = null;
  if (prompts.length) {
    // The unpatched model's lines are the same on every run: cached on disk (baseline.ts).
    const before = inputs.before ?? (isEmpty(base) ? (await baselineLines(model, prompts, { signal })).lines : await greedyLines(model, prompts, base, signal));
    if (before.length !== prompts.length) throw new NeuronpatchError(`${before.length} lines before for ${prompts.length} regression prompts.`);
    // Unpatched, with next-token rows that fit NEXT_ROWS_BYTES (the demo model's 240 × 4,096 do; a real vocabulary's
    // 151,936 a row do not): the logits before are cached, and those after are the locality forward's own at each
    // prompt's last position (fed as the next-token measure feeds it), so no forward is added for them.
    const keepNext = isEmpty(base) && prompts.length * model.info.vocab * 4 <= NEXT_ROWS_BYTES;
    const loc = await continuationLocality(model, prompts, before, patched, signal, keepNext, tick);
    tokenLocality = loc.tokens ? loc.same / loc.tokens : 1;
    tokens = loc.tokens;
    changed = prompts.flatMap((prompt, i) => (before[i].completion === loc.lines[i] ? [] : [{ prompt, before: before[i].completion, after: loc.lines[i] }]));
    linesUnchanged = 1 - changed.length / prompts.length;
    const shift = keepNext
      ? shiftBetween((await baselineNextToken(model, prompts)).rows, await fillNext(model, prompts, loc.next, patched))
      : await nextTokenShift(model, prompts, base, patched);
    nextToken = shift.sameNext;
    meanKl = shift.meanKl;
  }
  let kept: SideEffectMeasures['kept'] = null;
  let broken: SideEffectMeasures['broken'] = [];
  if (inputs.guard?.length) {
    const g = await guardKept(model, inputs.guard, patched, signal, tick);
    kept = { kept: g.kept, of: inputs.guard.length };
    broken = g.broken;
  }
  let keptUnseen: SideEffectSummary['keptUnseen'] = null;
  if (inputs.unseenGuard?.length) {
    const g = await guardKept(model, inputs.unseenGuard, patched, signal, tick);
    keptUnseen = { kept: g.kept, of: inputs.unseenGuard.length };
  }
  let heldOutLoss: SideEffectSummary['heldOutLoss'] = null;
  if (inputs.heldOut?.length) {
    // Texts whose x̂ is known (the keyed method's protected code): those the patch (or the base) leaves silent
    // take the unpatched loss, without a forward.
    const seqs = inputs.known ? inputs.heldOut.map((t) => preparePrompt(model, t, 1, false).ids) : [];
    const quiet = (edits: LayerEdits | undefined) => (inputs.known ? unchangedOn(edits, seqs, inputs.known) : undefined);
    const b = await heldOutLossOf(model, inputs.heldOut, base, undefined, quiet(base));
    const a = await heldOutLossOf(model, inputs.heldOut, patched, tick, quiet(patched));
    heldOutLoss = { before: b.loss, after: a.loss, change: (a.loss - b.loss) / b.loss, tokens: b.tokens };
  }
  const summary: SideEffectSummary = {
    tokenLocality, tokens, prompts: prompts.length, kept, keptUnseen, broken: broken.slice(0, BROKEN_SHOWN), heldOutLoss, meanKl, nextToken, linesUnchanged,
  };
  return { tokenLocality, tokens, linesUnchanged, nextToken, meanKl, changed, kept, broken, lossChange: heldOutLoss?.change ?? null, summary };
}

/**
 * Teacher-forced agreement on the continuations decoded before: per line, the positions whose argmax (healing
 * constraint included) is still the token decoded before; the lines, with those not kept at every position by
 * TIE decoded again; with `keepNext`, each prompt's next-token logits under `edits` ([vocab] each, undefined where
 * the prompt is fed otherwise than the next-token measures feed it).
 */
export async function continuationLocality(
  model: LoadedModel, prompts: string[], before: GreedyLine[], edits: LayerEdits, signal?: AbortSignal, keepNext = false,
  tick?: (items: number) => void,
): Promise<{ same: number; tokens: number; lines: string[]; next: (Float32Array | undefined)[] }> {
  const lines = before.map((b) => b.completion);
  const V = model.info.vocab;
  // Patches of added neurons only: where every neuron is exactly silent at every position of a row (x̂ read from the
  // same forward, layer by layer: see unchanged.ts), the patched model computes that row as the unpatched one, and
  // greedy decoding under it gives the line decoded before (under a base of such neurons, silent there too):
  // it is not decoded again, near-ties or not. Any value edit acts everywhere: then nothing is known.
  const added = edits.added ?? [];
  const addedOnly = edits.size === 0 && added.length > 0;
  const addedLayers = [...new Set(added.map((a) => a.layer))];
  const d = model.info.width;
  const silentRow = (x: Map<number, Float32Array>, b: number, width: number, from: number, n: number): boolean => {
    const rows = new Map(addedLayers.map((L) => [L, x.get(L)!.subarray((b * width + from) * d, (b * width + from + n) * d)]));
    return added.every((a) => silentOn(a, { positions: n, rows }));
  };
  // The next-token logits at each prompt's end, where the prompt's ids are the ones the next-token measure feeds.
  const next: (Float32Array | undefined)[] = prompts.map(() => undefined);
  const redo: number[] = [];
  let same = 0;
  let tokens = 0;
  for (let i = 0; i < prompts.length; i += CHECK_BATCH) {
    if (signal?.aborted) throw new NeuronpatchError('Measuring side effects was cancelled.');
    const rows = prompts.slice(i, i + CHECK_BATCH).map((p, k) => {
      const prepared = preparePrompt(model, p, DEFAULT_MAX_NEW_TOKENS);
      const targets = before[i + k].tokens;
      return { at: i + k, prepared, targets, input: [...prepared.ids, ...targets.slice(0, -1)] };
    });
    tick?.(rows.length);
    const live = rows.filter((r) => r.targets.length > 0);
    if (!live.length) continue;
    const { ids, mask, start, width } = padRows(model.graph, live.map((r) => r.input));
    const first = live.map((r, b) => start[b] + r.prepared.ids.length - 1);
    const res = await model.session.forward({ ids, mask, edits, logitsFrom: Math.min(...first), ...(addedOnly ? { ffnInputs: addedLayers } : {}) });
    live.forEach((r, b) => {
      const target = { prepared: r.prepared, targets: r.targets, first: first[b], input: r.input, lineEnd: false };
      const states = positionStates(model, target, logitRows(res), b);
      if (keepNext && sameIds(r.prepared.ids, nextTokenIds(model, prompts[r.at]))) {
        const off = (b * res.logitPositions + first[b] - res.logitsFrom) * V;
        next[r.at] = res.logits.slice(off, off + V);
      }
      tokens += states.length;
      same += states.filter((st) => !st.failing).length;
      if (!states.every((st) => !st.failing && st.gap >= TIE) && !(addedOnly && silentRow(res.ffnInputs, b, width, start[b], r.input.length))) redo.push(r.at);
    });
  }
  if (redo.length) {
    const again = await completions(model, redo.map((k) => prompts[k]), edits, signal);
    redo.forEach((k, j) => (lines[k] = again[j]));
  }
  return { same, tokens, lines, next };
}

const sameIds = (a: number[], b: number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The next-token logit rows under `edits`, computing only those not given. */
async function fillNext(model: LoadedModel, prompts: string[], given: (Float32Array | undefined)[], edits: LayerEdits): Promise<Float32Array[]> {
  const missing = prompts.flatMap((_, i) => (given[i] ? [] : [i]));
  const got = missing.length ? await nextTokenLogits(model, missing.map((i) => prompts[i]), edits) : [];
  const out = [...given];
  missing.forEach((i, k) => (out[i] = got[k]));
  return out as Float32Array[];
}

/** Guard lines still exactly right under `edits`: teacher-forced first, decoded where a position is in doubt. */
export async function guardKept(model: LoadedModel, guard: GuardLine[], edits: LayerEdits | undefined, signal?: AbortSignal, tick?: (items: number) => void): Promise<{ kept: number; broken: { prompt: string; desired: string; after: string }[]; keptFlags: boolean[] }> {
  const flags = new Array<boolean>(guard.length).fill(true);
  const doubt: number[] = [];
  // A line that cannot be teacher-forced (longer than the context leaves room for) is decoded instead.
  const all = guard.map((g) => guardTarget(model, g));
  all.forEach((t, i) => {
    if (!t) doubt.push(i);
  });
  const usable = all.flatMap((t, i) => (t ? [{ t, i }] : []));
  if (usable.length < guard.length) tick?.(guard.length - usable.length);
  for (let k = 0; k < usable.length; k += CHECK_BATCH) {
    if (signal?.aborted) throw new NeuronpatchError('Measuring side effects was cancelled.');
    const part = usable.slice(k, k + CHECK_BATCH);
    tick?.(part.length);
    const targets = part.map((u) => u.t);
    const { ids, mask, start: shift } = padRows(model.graph, targets.map((t) => t.input));
    const res = await model.session.forward({ ids, mask, edits, logitsFrom: Math.min(...targets.map((t, b) => t.first + shift[b])) });
    targets.forEach((t, b) => {
      const states = positionStates(model, { ...t, first: t.first + shift[b] }, logitRows(res), b);
      if (!states.every((st) => !st.failing && (st.gap >= TIE || st.index === states.length - 1))) doubt.push(part[b].i);
    });
  }
  const broken: { prompt: string; desired: string; after: string }[] = [];
  if (doubt.length) {
    const got = await completions(model, doubt.map((k) => guard[k].prompt), edits, signal);
    doubt.forEach((k, j) => {
      if (got[j] !== guard[k].desired) {
        flags[k] = false;
        broken.push({ prompt: guard[k].prompt, desired: guard[k].desired, after: got[j] });
      }
    });
  }
  return { kept: flags.filter(Boolean).length, broken, keptFlags: flags };
}

/** The teacher-forcing target of a guard line, or undefined where it cannot be one (too long for the context). */
export function guardTarget(model: LoadedModel, g: GuardLine): ReturnType<typeof repairTarget> | undefined {
  try {
    return repairTarget(model, g.prompt, g.desired);
  } catch (e) {
    if (e instanceof NeuronpatchError) return undefined;
    throw e;
  }
}

/** Logits one held-out forward may return (a real vocabulary's rows are 0.6 MB each in float32). */
const LOSS_LOGIT_BYTES = 128 * 2 ** 20;

/** The loss of one held-out text: nats summed over its predicted tokens (all but the first), and how many. */
type TextLoss = [sum: number, count: number];

/** What the cache keeps of the unpatched model's held-out loss: the mean, and each text's sum and count. */
interface Losses {
  loss: number;
  tokens: number;
  texts: TextLoss[];
}

const lossCache = new WeakMap<LoadedModel, Map<string, Losses>>();
/** Bumped when the held-out loss is computed differently: older cache entries are recomputed. 2: per-text sums. */
const LOSS_FORMAT = 2;

const isEmpty = (edits?: LayerEdits): boolean => !edits || (edits.size === 0 && !edits.added?.length);

/** The mean over texts' losses, summed text by text in order (the same sum whether a text was computed or known). */
function meanOf(texts: readonly TextLoss[]): Losses {
  let sum = 0;
  let count = 0;
  for (const [s, c] of texts) {
    sum += s;
    count += c;
  }
  return { loss: count ? sum / count : 0, tokens: count, texts: [...texts] };
}

/**
 * Mean next-token loss (nats per token) over every token of the texts but the first, under `edits`. The
 * unpatched model's is cached per model and texts, in memory and in the model's cache folder (verified).
 * `unchanged[i]` true: `edits` provably leave text i as the unpatched model computes it (unchanged.ts), so its
 * loss is the cached unpatched one and no forward runs for it.
 */
export async function heldOutLossOf(
  model: LoadedModel, texts: string[], edits?: LayerEdits, tick?: (items: number) => void, unchanged?: readonly boolean[],
): Promise<{ loss: number; tokens: number }> {
  const known = (l: Losses) => ({ loss: l.loss, tokens: l.tokens });
  if (isEmpty(edits)) return known(await unpatchedLosses(model, texts));
  if (!unchanged?.some(Boolean)) return known(meanOf(await lossesOf(model, texts, edits, tick)));
  const base = await unpatchedLosses(model, texts);
  const redo = texts.flatMap((_, i) => (unchanged[i] ? [] : [i]));
  tick?.(texts.length - redo.length);
  const got = await lossesOf(model, redo.map((i) => texts[i]), edits, tick);
  const per = [...base.texts];
  redo.forEach((i, k) => (per[i] = got[k]));
  return known(meanOf(per));
}

/** The unpatched model's losses of `texts`: memory, the verified cache, or computed. */
async function unpatchedLosses(model: LoadedModel, texts: string[]): Promise<Losses> {
  const key = inputsHash(texts);
  const memo = lossCache.get(model) ?? new Map<string, Losses>();
  lossCache.set(model, memo);
  const hit = memo.get(key);
  if (hit) return hit;
  const shape = (v: unknown): string | undefined => {
    const l = v as Partial<Losses> | null;
    if (!l || typeof l.loss !== 'number' || !Number.isFinite(l.loss) || l.loss < 0 || !Number.isInteger(l.tokens)) return 'not {loss, tokens, texts}';
    if (!Array.isArray(l.texts) || l.texts.length !== texts.length) return `not one loss per text (${texts.length})`;
    if (!l.texts.every((x) => Array.isArray(x) && x.length === 2 && Number.isFinite(x[0]) && x[0] >= 0 && Number.isInteger(x[1]) && x[1] >= 0)) return 'a text\'s loss is not [sum, count]';
    const again = meanOf(l.texts);
    return again.loss === l.loss && again.tokens === l.tokens ? undefined : 'the mean is not that of the texts';
  };
  const { value } = await cachedDerived<Losses>(model.cacheDir, { kind: 'loss', format: LOSS_FORMAT, model: model.info.hash, inputs: key }, shape, async () => meanOf(await lossesOf(model, texts)));
  memo.set(key, value);
  return value;
}

/** Each text's loss under `edits` ([sum, count]; [0, 0] for a text of fewer than two tokens); `tick(n)` after each batch of n texts. */
async function lossesOf(model: LoadedModel, texts: string[], edits?: LayerEdits, tick?: (items: number) => void): Promise<TextLoss[]> {
  const V = model.info.vocab;
  const out: TextLoss[] = texts.map(() => [0, 0]);
  const encoded = texts.map((t, i) => ({ i, ids: preparePrompt(model, t, 1, false).ids })).filter((r) => r.ids.length > 1);
  if (encoded.length < texts.length) tick?.(texts.length - encoded.length);
  for (let i = 0; i < encoded.length;) {
    // Every position's logits come back ([rows, width, V]): as many rows as keep them within LOSS_LOGIT_BYTES.
    let n = 1;
    while (i + n < encoded.length && n < CHECK_BATCH && (n + 1) * Math.max(...encoded.slice(i, i + n + 1).map((r) => r.ids.length)) * V * 4 <= LOSS_LOGIT_BYTES) n++;
    const rows = encoded.slice(i, i + n);
    i += n;
    tick?.(n);
    const { ids, mask, width, start } = padRows(model.graph, rows.map((r) => r.ids));
    const res = await model.session.forward({ ids, mask, edits });
    rows.forEach((r, b) => {
      const off = start[b];
      let total = 0;
      for (let p = 0; p < r.ids.length - 1; p++) {
        const at = (b * width + off + p) * V;
        total -= res.logits[at + r.ids[p + 1]] - logSumExp(res.logits, at, V);
      }
      out[r.i] = [total, r.ids.length - 1];
    });
  }
  return out;
}

export { sideEffectLine } from './sideEffectText';
