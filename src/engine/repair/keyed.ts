// Keyed repair: locality by construction. Instead of moving existing value vectors (active almost everywhere in a
// SiLU-gated FFN), add one neuron per failing position whose key fires only on that position's context, as
// Transformer-Patcher does (Huang et al., ICLR 2023; GRACE, Hartvigsen et al., NeurIPS 2023, gates an edit by a
// radius around the failing key the same way). Forward-only and closed-form:
//   a(x̂) = ReLU(k · x̂ − τ),  output a(x̂) · v,  on the FFN input x̂ of a chosen layer L
//   k = C⁻¹ (x̂_t − μ) / ((x̂_t − μ)ᵀ C⁻¹ (x̂_t − μ))     μ, C: mean and covariance of x̂ on protected code, so that
//                                                      r(x̂) = k · (x̂ − μ) is 1 at the failing context and small
//                                                      on ordinary code (a whitened match, the Fisher direction)
//   τ = k · μ + r_max + ρ (1 − r_max)                   r_max: the largest r over the protected positions
//                                                      (reference code, guard lines, earlier patches' cases);
//                                                      ρ ∈ (0, 1), the key margin: the neuron is exactly silent
//                                                      wherever r ≤ r_max, and fires with 1 − ρ of its room at t
//   v: one linear solve M V = S over the failing positions, M[j][i] = a_i(x̂_j) (T × T), S[j] = β_j s_j with s_j
//      the semantic steer of (desired, rival) at j and β_j set by the linearization so the gap reaches the margin.
// Keys shared: failing positions that want the same token from near-identical contexts (each key answers the
// other context with ≥ SHARE of its own response) get one neuron keyed on the mean of both, where that still stands
// out from protected code; its value is solved against both positions' targets.
// Re-linearized for a few rounds (the keys stay; only the values are solved again): a position still short of
// the margin gets its target raised by what it lacks, scaled by the gain observed in the last round (layers
// before the last see the change through the later ones); a position that starts failing gets a neuron of its own.
import { cholesky, choleskySolve, dot, row, solveSymmetric } from '../linalg';
import type { AddedNeuron } from '../model/added';
import type { LoadedModel } from '../model/load';
import { type LayerEdits, padRows } from '../model/session';
import { withAdded } from '../patches/patchset';
import { contrast } from '../trace/attribution';
import { type Forced, type PositionState, type RepairTarget, teacherForce, weakPositions } from '../trace/teacher';
import { NeuronpatchError } from '../types';
import { Cancelled, type SolveContext } from './minimal';
import { productABt } from '../onnx/products';
import { Gram } from './steer';

/**
 * The least separation (1 − r_max, in units of the key's response at its own context) a key must have: below it the
 * failing context is, for the key, the same as protected code, and a neuron that fires there but stays silent on
 * that code would need a threshold within float noise of its own response and a value to match.
 */
const MIN_SEPARATION = 0.01;

/** Default key margin ρ: the threshold sits this share of the way from the largest protected response to the failing context's. */
export const DEFAULT_KEY_MARGIN = 0.5;
/**
 * A new neuron first aims its position this many margins past the rival: the linearization through the later layers
 * under-predicts most changes, and a first solve that lands short costs a round (a forward) more. Measured on the
 * first 30 dev cases: 2.6 forwards per repair at 1×, see the README.
 */
const FIRST_AIM = 1.5;
/** How many of the strongest other tokens a new neuron's value pushes the desired token past. */
const RIVALS = 3;
/** Key sharing: a key must answer the other context with at least this share of its own response. */
const SHARE = 0.8;
/** Relative ridge of the covariance: keeps the whitening out of directions ordinary code never varies in. */
const COV_RIDGE = 1e-2;
const BATCH = 8;

/** FFN inputs x̂ of protected code at the keyed layers: every real position's row. */
export interface ProtectedInputs {
  positions: number;
  /** The token that follows each position in its text (−1 at a text's last position). */
  next: Int32Array;
  /** Per layer: [positions, d] rows. */
  rows: Map<number, Float32Array>;
}

/** Mean and the Cholesky factor of the regularised covariance of x̂, per layer. */
export interface Whitening {
  layer: number;
  mean: Float64Array;
  factor: Float64Array;
}

const whiteningCache = new WeakMap<ProtectedInputs, Map<number, Whitening>>();

/**
 * x̂ at every position of the token sequences, at `layers`, under `edits` (earlier added neurons are silent on
 * protected code by construction; value edits may move x̂), computed. The unpatched protected code's are cached per
 * model and reference set by keyedCache.ts.
 */
export async function protectedInputs(model: LoadedModel, sequences: number[][], layers: number[], edits?: LayerEdits): Promise<ProtectedInputs> {
  const d = model.info.width;
  const total = sequences.reduce((s, r) => s + r.length, 0);
  const rows = new Map(layers.map((L) => [L, new Float32Array(total * d)]));
  const next = new Int32Array(total).fill(-1);
  let o = 0;
  for (const r of sequences) {
    for (let p = 0; p + 1 < r.length; p++) next[o + p] = r[p + 1];
    o += r.length;
  }
  let at = 0;
  for (let i = 0; i < sequences.length; i += BATCH) {
    const batch = sequences.slice(i, i + BATCH).filter((r) => r.length);
    if (!batch.length) continue;
    const { ids, mask, width, start } = padRows(model.graph, batch);
    const res = await model.session.forward({ ids, mask, edits, ffnInputs: layers, lastOnly: true });
    for (const L of layers) {
      const x = res.ffnInputs.get(L)!;
      const out = rows.get(L)!;
      let w = at;
      batch.forEach((r, b) => {
        const from = (b * width + start[b]) * d;
        out.set(x.subarray(from, from + r.length * d), w * d);
        w += r.length;
      });
    }
    at += batch.reduce((s, r) => s + r.length, 0);
  }
  return { positions: total, rows, next };
}

/**
 * The layers a keyed repair considers: the later half of those that take added neurons (late layers first, as
 * Transformer-Patcher puts its neurons in the last FFN: closest to the logits, so the closed-form value holds best).
 */
export function keyedCandidates(model: LoadedModel): number[] {
  const all = model.graph.keyedLayers ?? [];
  const late = all.filter((L) => L >= Math.floor(model.info.layers / 2));
  return late.length ? late : all;
}

/**
 * Makes `w` the whitening of its layer for `p` (read back from the derived cache, keyedCache.ts): whitening() then
 * returns it instead of computing it.
 */
export function rememberWhitening(p: ProtectedInputs, w: Whitening): void {
  const byLayer = whiteningCache.get(p) ?? new Map<number, Whitening>();
  byLayer.set(w.layer, w);
  whiteningCache.set(p, byLayer);
}

/** What the whitening depends on besides x̂ (part of the derived cache's key): the covariance's ridge. */
export const WHITENING_PARAMS = { covRidge: COV_RIDGE, jitter: 1e-9 };

/**
 * The whitening of `layer` for `p`: the mean μ ([d]) of x̂ over the protected positions and the Cholesky factor
 * ([d, d] row-major, lower) of their covariance plus a ridge of COV_RIDGE × its mean eigenvalue. Cached per `p`.
 */
export async function whitening(p: ProtectedInputs, layer: number, d: number): Promise<Whitening> {
  const byLayer = whiteningCache.get(p) ?? new Map<number, Whitening>();
  const hit = byLayer.get(layer);
  if (hit) return hit;
  const x = p.rows.get(layer)!;
  const n = Math.max(1, p.positions);
  const mean = new Float64Array(d);
  for (let r = 0; r < p.positions; r++) for (let c = 0; c < d; c++) mean[c] += x[r * d + c] / n;
  const gram = await Gram.create();
  let g: Float32Array;
  try {
    g = await gram.of(x, p.positions, d);
  } finally {
    await gram.release();
  }
  const cov = new Float64Array(d * d);
  let trace = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
    cov[i * d + j] = g[i * d + j] / n - mean[i] * mean[j];
    if (i === j) trace += cov[i * d + j];
  }
  for (let i = 0; i < d; i++) cov[i * d + i] += (WHITENING_PARAMS.covRidge * trace) / d + WHITENING_PARAMS.jitter;
  const w = { layer, mean, factor: cholesky(cov, d) };
  byLayer.set(layer, w);
  whiteningCache.set(p, byLayer);
  return w;
}

/**
 * A key for the context x̂: normalised so that r(x̂) = 1 (or, keyed on several contexts, so that their mean answers
 * 1), with its largest response over protected code and its smallest over its own contexts.
 */
interface Key {
  /** Input position in the case's sequence. */
  pos: number;
  k: Float64Array;
  /** k · μ. */
  kMu: number;
  /** Largest r over the protected positions (and the extra ones). */
  rMax: number;
  /** Smallest r over the contexts the key must fire on (1 for a key of one context). */
  rLow: number;
  /** How many contexts it was made from (1: the failing context alone). */
  contexts: number;
}

/** One failing context to key: its position, its desired token, and more contexts of it (prompt variants' x̂, [d] each). */
interface KeyAt {
  pos: number;
  desired: number;
  more?: Float32Array[];
}

/**
 * The key of context `pos`, whose desired token is `desired`. Protected positions whose own text continues with
 * that token are left out of the threshold: firing there adds evidence for the token the text has anyway (this
 * is what lets a fix reach other places that need it), while every position that continues otherwise is silent.
 */
async function makeKey(x: Float32Array, pos: number, desired: number, w: Whitening, d: number, protect: ProtectedInputs[]): Promise<Key> {
  return (await makeKeys(x, [{ pos, desired }], w, d, protect))[0];
}

/** The whitened key of the mean of `rows` (each [d]): k = C⁻¹ū / (ūᵀC⁻¹ū), ū the mean of x − μ; and each row's r. */
function whitenedKey(rows: ArrayLike<number>[], w: Whitening, d: number): { k: Float64Array; low: number } {
  const u = new Float64Array(d);
  for (const x of rows) for (let c = 0; c < d; c++) u[c] += (x[c] - w.mean[c]) / rows.length;
  const raw = choleskySolve(w.factor, d, u);
  const q = dot(raw, u);
  const k = Float64Array.from(raw, (v) => v / q);
  let low = Infinity;
  for (const x of rows) {
    let r = 0;
    for (let c = 0; c < d; c++) r += k[c] * (x[c] - w.mean[c]);
    low = Math.min(low, r);
  }
  return { k, low };
}

/**
 * Keys for several contexts at once: their responses over the protected rows in one onnxruntime MatMul. Where a
 * context comes with more contexts (prompt variants), the key of their mean is made too, and kept where it still
 * stands out from protected code on every one of them (separation rLow − rMax above MIN_SEPARATION): it fires on
 * what the contexts share rather than on all of the one context.
 */
async function makeKeys(x: Float32Array, at: KeyAt[], w: Whitening, d: number, protect: ProtectedInputs[]): Promise<Key[]> {
  const candidates: { of: number; key: Key }[] = [];
  at.forEach(({ pos, more }, t) => {
    const own = x.subarray(pos * d, (pos + 1) * d);
    const one = whitenedKey([own], w, d);
    candidates.push({ of: t, key: { pos, k: one.k, kMu: dot(one.k, w.mean), rMax: -Infinity, rLow: 1, contexts: 1 } });
    if (more?.length) {
      const many = whitenedKey([own, ...more], w, d);
      candidates.push({ of: t, key: { pos, k: many.k, kMu: dot(many.k, w.mean), rMax: -Infinity, rLow: many.low, contexts: 1 + more.length } });
    }
  });
  const T = candidates.length;
  const K = new Float32Array(T * d);
  candidates.forEach(({ key }, t) => K.set(key.k, t * d));
  for (const p of protect) {
    if (!p.positions) continue;
    // Every protected position's response to every key: C [P, T].
    const C = await productABt(p.rows.get(w.layer)!, p.positions, K, T, d);
    candidates.forEach(({ of, key }, t) => {
      const skip = at[of].desired;
      let max = key.rMax;
      for (let r = 0; r < p.positions; r++) if (p.next[r] !== skip && C[r * T + t] > max) max = C[r * T + t];
      key.rMax = max;
    });
  }
  for (const { key } of candidates) key.rMax -= key.kMu;
  return at.map((_, t) => {
    const mine = candidates.filter((c) => c.of === t).map((c) => c.key);
    const wide = mine.find((k) => k.contexts > 1 && k.rLow - k.rMax > MIN_SEPARATION);
    return wide ?? mine[0];
  });
}

export interface KeyedOptions {
  /** Protected code: x̂ at reference positions, guard lines and earlier patches' cases (the threshold's floor). */
  protect: ProtectedInputs;
  /** More protected positions: the earlier patches' cases under the active patches (repair/earlier.ts), one entry each. */
  extra?: ProtectedInputs[];
  /** ρ in (0, 1): where the threshold sits between the largest protected response and the failing context's. */
  keyMargin: number;
  /** Force a layer (for measuring); default: chosen by separation, late layers first. */
  layer?: number;
  /**
   * Variants of the case's prompt (augment.ts) with the same desired text: each failing position's key is made from
   * its context in all of them where that still stands out from protected code (what the contexts share).
   */
  variants?: RepairTarget[];
}

export interface KeyedResult {
  added: AddedNeuron[];
  rounds: number;
  failing: number;
  layer: number;
  /** Why the layer: each candidate layer's separation (1 − the largest protected response of its weakest key). */
  why: string;
  /** x̂ of the case's input sequence at `layer` under the base patches: [input length, d]. */
  inputs?: Float32Array;
}

/** x̂ of the case's sequence at `layers` under `base` (from the starting forward where it fetched them). */
async function caseInputs(ctx: Omit<SolveContext, 'ref'>, layers: number[]): Promise<Map<number, Float32Array>> {
  const have = ctx.start?.ffnInputs;
  if (have && layers.every((L) => have.has(L))) return have;
  const res = await ctx.model.session.forward({ ids: [ctx.target.input], edits: ctx.base, ffnInputs: layers, lastOnly: true });
  return res.ffnInputs;
}

/**
 * The error of a keyed repair given no ordinary code to stay silent on (earlier patches' cases are not enough);
 * repair/index.ts's keyedProtection throws it before any solve.
 */
export function needsReferenceCode(): NeuronpatchError {
  return new NeuronpatchError(
    'A keyed repair needs reference code: ordinary code its added neuron must stay silent on, and none was given.',
    'In the CLI pass --reference FILE or --regression FILE (prompts of code like yours; for the demo model, bench/cases/regression.jsonl); in VS Code, open a workspace that holds code files. Or use --method minimal.',
  );
}

/**
 * The keyed solve of `ctx.target` on top of `ctx.base` (see the module comment). Throws NeuronpatchError where the
 * model's graph takes no added neurons.
 */
export async function solveKeyed(ctx: Omit<SolveContext, 'ref'>, opts: KeyedOptions): Promise<KeyedResult> {
  const { model, target, margin } = ctx;
  const d = model.info.width;
  const keyedLayers = model.graph.keyedLayers ?? [];
  if (!keyedLayers.length) throw new NeuronpatchError('This model\'s graph takes no added neurons (no FFN input was found): use the minimal or joint method.');
  if (!(opts.keyMargin > 0 && opts.keyMargin < 1)) throw new NeuronpatchError(`The key margin must be between 0 and 1 (exclusive), got ${opts.keyMargin}.`);
  const f0 = ctx.start ?? (await teacherForce(model, target, ctx.base, [], true));
  const failing0 = f0.states.filter((s) => s.failing);
  if (!failing0.length) return { added: [], rounds: 0, failing: 0, layer: keyedLayers[keyedLayers.length - 1], why: 'nothing fails' };
  const extraPositions = (opts.extra ?? []).reduce((n, p) => n + p.positions, 0);
  const candidates = opts.layer !== undefined ? [opts.layer] : keyedCandidates(model).filter((L) => opts.protect.rows.has(L));
  const xs = await caseInputs(ctx, candidates);
  // The prompt's variants (augment.ts) whose desired tokens are the case's: x̂ of all of them in one batched pass.
  const variants = (opts.variants ?? []).filter((v) => v.targets.length === target.targets.length && v.targets.every((t, i) => t === target.targets[i]));
  const variantRows = variants.length ? await protectedInputs(model, variants.map((v) => v.input), candidates, ctx.base) : undefined;
  const variantStarts: number[] = [];
  variants.reduce((at, v) => (variantStarts.push(at + v.first), at + v.input.length), 0);
  const protect = [opts.protect, ...(opts.extra ?? [])];

  // The layer: the separation of the weakest failing context, measured at every keyed layer.
  const separation = new Map<number, number>();
  const keysAt = new Map<number, Key[]>();
  const order = [...candidates].sort((a, b) => b - a);
  for (const L of order) {
    if (!keyedLayers.includes(L) || !opts.protect.rows.has(L)) throw new NeuronpatchError(`Layer ${L} takes no added neurons here; layers ${keyedCandidates(model).join(', ')} do.`);
    const w = await whitening(opts.protect, L, d);
    const vx = variantRows?.rows.get(L);
    const more = (i: number) => (vx ? variantStarts.map((at) => vx.subarray((at + i) * d, (at + i + 1) * d)) : undefined);
    const keys = await makeKeys(xs.get(L)!, failing0.map((s) => ({ pos: target.first + s.index, desired: s.desired, more: more(s.index) })), w, d, protect);
    keysAt.set(L, keys);
    separation.set(L, Math.min(...keys.map((k) => k.rLow - k.rMax)));
  }
  const best = Math.max(...separation.values());
  // Where no layer separates (best ≤ MIN_SEPARATION: a failing context equals protected code, e.g. an earlier patch's own case),
  // the best layer is named so that the refusal below says how far it is.
  const layer = opts.layer ?? (best > MIN_SEPARATION ? order.find((L) => separation.get(L)! >= 0.8 * best)! : order.find((L) => separation.get(L) === best)!);
  const why = `layer ${layer}${opts.layer !== undefined ? ' (asked for)' : ''}: the failing contexts stand out from ${opts.protect.positions + extraPositions} protected positions by `
    + order.filter((L) => separation.has(L)).map((L) => `${separation.get(L)!.toFixed(2)} at layer ${L}`).join(', ')
    + ` (the weakest key's smallest response on its own contexts − its largest on protected code; the latest layer within 0.8 of the best is taken${variants.length ? `; keys made from the failing contexts in the prompt and ${variants.length} variant(s) of it where they stand out` : ''})`;
  if (separation.get(layer)! <= MIN_SEPARATION) {
    return { added: [], rounds: 0, failing: failing0.length, layer, why: `${why}; no layer separates every failing context from protected code (a failing context is the same as code the neuron must stay silent on: an earlier patch's case, a guard line or reference code); the minimal or joint method may still fix it` };
  }
  const w = await whitening(opts.protect, layer, d);
  const x = xs.get(layer)!;

  // Neurons: key, threshold (in r units), and the target residual change S at each position it serves (its own;
  // a shared key serves several).
  interface Aim { pos: number; s: Float64Array; predicted: number; lastGap: number }
  interface Slot { key: Key; tauR: number; at: Aim[] }
  const slots: Slot[] = [];
  const addSlot = async (st: PositionState, f: Forced, key?: Key): Promise<Slot | undefined> => {
    const pos = target.first + st.index;
    const k = key ?? (await makeKey(x, pos, st.desired, w, d, protect));
    if (k.rMax >= k.rLow) return undefined;  // this context cannot be told from protected code at this layer
    const tauR = k.rMax + opts.keyMargin * (k.rLow - k.rMax);
    const slot: Slot = { key: k, tauR, at: [] };
    slots.push(slot);
    aim(slot, st, f);
    return slot;
  };
  const aim = (slot: Slot, st: PositionState, f: Forced): void => {
    const a: Aim = { pos: target.first + st.index, s: new Float64Array(d), predicted: 0, lastGap: st.gap };
    slot.at.push(a);
    raise(a, st, f, 1, FIRST_AIM);
  };
  // Raises a position's target change by what it lacks to reach the margin (× `aimAt`), through the steer
  // (desired vs rival).
  const raise = (a: Aim, st: PositionState, f: Forced, gain: number, aimAt = 1): void => {
    const c = contrast(model, row(f.residual!, a.pos, d), st.desired, st.rival);
    const s = steerPast(st, f);
    const need = aimAt * margin - st.gap;
    const beta = need / (dot(s, c) * gain);
    for (let i = 0; i < d; i++) a.s[i] += beta * s[i];
    a.predicted = need;
    a.lastGap = st.gap;
  };
  // The steer of a position: the desired token against its RIVALS strongest others, weighted by their softmax
  // share (pushing past the first rival alone lets the next one win, which costs a round).
  const steerPast = (st: PositionState, f: Forced): Float64Array => {
    const V = model.info.vocab;
    const off = (target.first + st.index - f.logits.from) * V;
    const z = f.logits.logits;
    const top: number[] = [];
    for (let v = 0; v < V; v++) {
      if (v === st.desired) continue;
      if (top.length < RIVALS) top.push(v);
      else if (z[off + v] > z[off + top[RIVALS - 1]]) top[RIVALS - 1] = v;
      else continue;
      top.sort((p, q) => z[off + q] - z[off + p]);
    }
    const w = top.map((v) => Math.exp(z[off + v] - z[off + top[0]]));
    const sum = w.reduce((p, q) => p + q, 0);
    const s = new Float64Array(d);
    top.forEach((v, k) => {
      const dir = ctx.steer.direction(st.desired, v);
      for (let i = 0; i < d; i++) s[i] += (w[k] / sum) * dir[i];
    });
    return s;
  };
  // Key sharing: failing positions that want the same token from near-identical contexts (each one's key answers
  // the other's context with at least SHARE of its own response) get one neuron keyed on both, where that key still
  // stands out from protected code by half the separation of theirs.
  const keys = keysAt.get(layer)!;
  const response = (k: Key, pos: number) => {
    let r = -k.kMu;
    for (let c = 0; c < d; c++) r += k.k[c] * x[pos * d + c];
    return r;
  };
  const servedBy = new Map<number, Slot>();
  let shared = 0;
  for (const [i, st] of failing0.entries()) {
    const pos = target.first + st.index;
    const partner = failing0.findIndex((o, j) => j < i && o.desired === st.desired && servedBy.has(j)
      && response(keys[j], pos) >= SHARE * keys[j].rLow && response(keys[i], target.first + o.index) >= SHARE * keys[i].rLow);
    if (partner >= 0) {
      const slot = servedBy.get(partner)!;
      const both = (await makeKeys(x, [{ pos: slot.key.pos, desired: st.desired, more: [...slot.at.slice(1).map((a) => x.subarray(a.pos * d, (a.pos + 1) * d)), x.subarray(pos * d, (pos + 1) * d)] }], w, d, protect))[0];
      if (both.contexts > 1 && both.rLow - both.rMax >= 0.5 * Math.min(slot.key.rLow - slot.key.rMax, keys[i].rLow - keys[i].rMax)) {
        slot.key = both;
        slot.tauR = both.rMax + opts.keyMargin * (both.rLow - both.rMax);
        aim(slot, st, f0);
        servedBy.set(i, slot);
        shared++;
        continue;
      }
    }
    const slot = await addSlot(st, f0, keys[i]);
    if (slot) servedBy.set(i, slot);
  }
  if (shared) ctx.log?.(`keyed: ${shared} failing position(s) share a neuron with another of the same token`);

  let added: AddedNeuron[] = [];
  let rounds = 0;
  const maxRounds = Math.max(4, Math.min(ctx.maxRounds, 8));
  let f = f0;
  for (; rounds < maxRounds; rounds++) {
    if (ctx.signal?.aborted) throw new Cancelled();
    added = solveValues(slots, x, layer, d);
    const patched = withAdded(ctx.base ?? new Map(), added);
    f = await teacherForce(model, target, patched, [], true);
    const weak = weakPositions(f.states, target, margin / 4);
    if (!weak.length) break;
    let changed = false;
    for (const st of weak) {
      const pos = target.first + st.index;
      const a = slots.flatMap((sl) => sl.at).find((t) => t.pos === pos);
      if (a) {
        // Observed gain of the last change against the linearization's prediction, kept within reason.
        const observed = st.gap - a.lastGap;
        const gain = a.predicted > 0 && observed > 0 ? Math.min(2, Math.max(0.25, observed / a.predicted)) : 1;
        raise(a, st, f, gain);
        changed = true;
      } else if (st.failing && slots.length < ctx.maxNeurons) {
        const before = slots.length;
        await addSlot(st, f);
        changed ||= slots.length > before;
      }
    }
    const served = new Set(slots.flatMap((sl) => sl.at.map((a) => a.pos)));
    const short = weak.filter((st) => served.has(target.first + st.index));
    ctx.log?.(`keyed round ${rounds + 1}: ${weak.length} weak position(s) (${short.length} served by a neuron: gaps ${short.map((st) => st.gap.toFixed(2)).join(', ')}; `
      + `${weak.length - short.length} not: ${weak.filter((st) => !short.includes(st)).map((st) => `${st.failing ? 'failing' : 'thin'} ${st.gap.toFixed(2)}`).join(', ')}), ${slots.length} added neuron(s) at layer ${layer}`);
    if (!changed) break;
  }
  const failing = f.states.filter((s) => s.failing).length;
  return { added, rounds: rounds + 1, failing, layer, why, inputs: x };
}

/**
 * The values of all slots from one linear solve: M V = S over the positions the slots serve, M[p][i] = a_i(x̂ at
 * position p) ([positions, slots]), S[p] the target change at p, by the normal equations with a tiny ridge (M is
 * nearly diagonal where keys are selective; a shared key's rows are its positions).
 */
function solveValues(slots: { key: Key; tauR: number; at: { pos: number; s: Float64Array }[] }[], x: Float32Array, layer: number, d: number): AddedNeuron[] {
  const T = slots.length;
  if (!T) return [];
  const aims = slots.flatMap((sl) => sl.at);
  const P = aims.length;
  const M = new Float64Array(P * T);
  aims.forEach((a, j) => slots.forEach((si, i) => {
    let r = -si.key.kMu;
    for (let c = 0; c < d; c++) r += si.key.k[c] * x[a.pos * d + c];
    M[j * T + i] = Math.max(0, r - si.tauR);
  }));
  const MtM = new Float64Array(T * T);
  const MtS = new Float64Array(T * d);
  for (let a = 0; a < T; a++) {
    for (let b = 0; b < T; b++) {
      let acc = 0;
      for (let j = 0; j < P; j++) acc += M[j * T + a] * M[j * T + b];
      MtM[a * T + b] = acc;
    }
    for (let j = 0; j < P; j++) {
      const m = M[j * T + a];
      if (m) for (let c = 0; c < d; c++) MtS[a * d + c] += m * aims[j].s[c];
    }
  }
  const V = solveSymmetric(MtM, T, MtS, d, 1e-9);
  return slots.map((sl, i) => ({
    layer,
    key: Float64Array.from(sl.key.k),
    threshold: sl.key.kMu + sl.tauR,
    value: V.subarray(i * d, (i + 1) * d),
  }));
}
