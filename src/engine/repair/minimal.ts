// Minimal repair (MINT-style): at a failing position, change one neuron's value vector (or a correlated pair's)
// along the semantic steer by a step set from the linearization, confirm it with a batched line search, and go
// on until the whole desired text is produced. A round takes every weak position at once (one neuron each, steps
// from one linear solve, one line search over their common scale) and falls back to the first position alone,
// searched over several candidates, when that does not improve things. A single-position step is chosen among
// candidates predicted to break no other position of the desired text, and a neuron that only traded one position
// for another is not offered again: long completions otherwise ping-pong until the budget is spent.
import { dot, norm, row, solveSymmetric } from '../linalg';
import type { LoadedModel } from '../model/load';
import { tokensPerForward } from '../budget';
import type { ForwardResult, LayerEdits } from '../model/session';
import type { Patch } from '../types';
import { contrast } from '../trace/attribution';
import { type Forced, logitRows, type PositionState, positionStates, type RepairTarget, teacherForce, weakPositions } from '../trace/teacher';
import { combine } from '../patches/patchset';
import { accumulate, type Edit, orthogonalize, priorDeltas } from './edits';
import type { ReferenceStats } from './reference';
import type { Steer } from './steer';

export interface SolveContext {
  model: LoadedModel;
  target: RepairTarget;
  /** Edits of the patches already active: the new patch is solved on top of them. */
  base?: LayerEdits;
  active: readonly Patch[];
  steer: Steer;
  /** Second moments of the neurons on reference code. */
  ref: ReferenceStats;
  /** `target` teacher-forced under `base` (every layer's activations, the residual), when the caller has it. */
  start?: Forced;
  /** Logits by which the desired token should win. */
  margin: number;
  maxNeurons: number;
  maxRounds: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface SolveResult {
  edits: Edit[];
  rounds: number;
  /** Positions still failing under `edits` when teacher-forced: 0 when the edits produce every desired token. */
  failing: number;
}

const CANDIDATES = 6;
// Beyond the linearization: the final norm's scale grows with the change, so larger steps are tried too.
const STEPS = [0.5, 1, 2, 4];

/** Floor of E_ref[z²] per layer, so a neuron silent on reference code does not look infinitely specific. */
export function refFloor(ref: ReferenceStats): number[] {
  return ref.meanSquare.map((r) => 0.05 * (r.reduce((acc, v) => acc + v, 0) / Math.max(1, r.length)) + 1e-8);
}

/** Part of a candidate change: Δv = w · step · direction, with Σ z_i w_i = 1 at the failing position. */
interface Part {
  layer: number;
  neuron: number;
  w: number;
}

interface Candidate {
  parts: Part[];
  /** Expected size of the change on reference code, relative: 1 / sqrt(zᵀ C⁻¹ z). */
  cost: number;
}

const SHORTLIST = 24;
/** A pair of neurons must cut the expected side effect by this factor to be worth its second neuron. */
const PAIR_GAIN = 2;

/**
 * The cheapest changes at one position, by their expected effect on reference code: single neurons (cost
 * sqrt(E[z_j²]) / |z_j|) and pairs of neurons of one layer, whose changes can cancel where the two are
 * correlated (cost 1 / sqrt(zᵀ C⁻¹ z) over the 2×2 second moments).
 */
export function candidates(f: Forced, pos: number, ref: ReferenceStats, floor: number[], m: number): Candidate[] {
  const out: Candidate[] = [];
  for (const [L, acts] of f.activations) {
    const diag = ref.meanSquare[L];
    const z = acts.subarray(pos * m, (pos + 1) * m);
    const singles: { j: number; v: number }[] = [];
    for (let j = 0; j < m; j++) {
      if (Math.abs(z[j]) < 1e-6) continue;
      singles.push({ j, v: (z[j] * z[j]) / (diag[j] + floor[L]) });
    }
    singles.sort((a, b) => b.v - a.v);
    const short = singles.slice(0, SHORTLIST);
    for (const x of short) out.push({ parts: [{ layer: L, neuron: x.j, w: 1 / z[x.j] }], cost: 1 / Math.sqrt(x.v) });
    // The second moments among the shortlist only (read from the reference statistics' file).
    const C = short.length > 1 ? ref.block(L, short.map((x) => x.j)) : new Float64Array(1);
    const k = short.length;
    for (let a = 0; a < short.length; a++) {
      for (let b = a + 1; b < short.length; b++) {
        const [i, j] = [short[a].j, short[b].j];
        const cii = C[a * k + a] + floor[L], cjj = C[b * k + b] + floor[L], cij = C[a * k + b];
        const det = cii * cjj - cij * cij;
        if (det <= 1e-12 * cii * cjj) continue;
        const ui = (cjj * z[i] - cij * z[j]) / det;
        const uj = (cii * z[j] - cij * z[i]) / det;
        const v = z[i] * ui + z[j] * uj;
        if (!(v > PAIR_GAIN * Math.max(short[a].v, short[b].v))) continue;
        out.push({ parts: [{ layer: L, neuron: i, w: ui / v }, { layer: L, neuron: j, w: uj / v }], cost: 1 / Math.sqrt(v) });
      }
    }
  }
  return out.sort((a, b) => a.cost - b.cost);
}

export class Cancelled extends Error {
  constructor() {
    super('The repair was cancelled.');
  }
}

export async function solveMinimal(ctx: SolveContext): Promise<SolveResult> {
  const { model, target } = ctx;
  const { layers, width: d } = model.info;
  const all = [...Array(layers).keys()];
  let edits: Edit[] = [];
  let rounds = 0;
  // Neurons whose last step fixed one position only by breaking another: offering them again makes two
  // positions trade one neuron back and forth (a layer-0 neuron's indirect effects escape the linearization).
  const tabu = new Set<string>();
  // The teacher-forced state under the current edits; usually the line search's chosen row.
  let f: Forced = ctx.start ?? (await teacherForce(model, target, combine(ctx.base, edits, d), all, true));
  for (; rounds < ctx.maxRounds; rounds++) {
    if (ctx.signal?.aborted) throw new Cancelled();
    const weak = weakPositions(f.states, target, ctx.margin / 4);
    if (!weak.length) return { edits, rounds, failing: 0 };
    if (edits.length >= ctx.maxNeurons) break;  // accumulate keeps one edit per neuron
    // Every weak position in one round when a single line search can confirm it; else the first one alone.
    const step = (await allPositions(ctx, f, weak, edits)) ?? (await firstPosition(ctx, f, weak[0], edits, tabu));
    if (!step) break;  // nothing moves the first weak position: give up honestly
    for (const n of step.traded ?? []) tabu.add(n);
    edits = step.edits;
    f = step.f ?? (await teacherForce(model, target, combine(ctx.base, edits, d), all, true));
    ctx.log?.(`round ${rounds + 1}: ${step.label}`);
  }
  return { edits, rounds, failing: f.states.filter((s) => s.failing).length };
}

interface Step {
  edits: Edit[];
  /** The teacher-forced state under `edits`, when the line search already has it. */
  f?: Forced;
  label: string;
  /** The step's neurons, when it won its position without fewer positions failing. */
  traded?: string[];
}

/** A change carried by one candidate's neurons along one direction, at the scale its own position asks for. */
interface Move {
  parts: (Part & { dir: Float64Array })[];
  /** Position index in the input. */
  pos: number;
  /** The contrast at `pos`, the gap change asked there, and the move's own gain there (its step: need / own). */
  contrast: Float64Array;
  need: number;
  own: number;
  label: string;
}

const neuronKey = (n: { layer: number; neuron: number }) => `${n.layer}:${n.neuron}`;
const label = (parts: Part[]) => parts.map((p) => `${p.layer}.${p.neuron}`).join(' + ');

/** The candidate's parts with their directions: the steer, kept orthogonal to earlier patches' changes. */
function directed(ctx: SolveContext, parts: Part[], s: Float64Array): (Part & { dir: Float64Array })[] {
  return parts.map((p) => {
    const prior = priorDeltas(ctx.active, p.layer, p.neuron);
    return { ...p, dir: prior.length ? orthogonalize(s, prior) : s };
  });
}

/** Gap change at `pos` (contrast `c`) per unit of a move: Σ_i z_i(pos) w_i (dir_i · c). */
function gain(f: Forced, parts: Move['parts'], pos: number, c: Float64Array, m: number): number {
  return parts.reduce((acc, p) => acc + f.activations.get(p.layer)![pos * m + p.neuron] * p.w * dot(p.dir, c), 0);
}

/**
 * MINT's step for every weak position at once: in order, each position the moves chosen so far do not already
 * lift (by the linearization) gets its cheapest candidate; the steps of all moves come from one linear solve
 * over the positions' gaps, and a batched line search over a common scale confirms them. Undefined when no
 * scale improves on the current state.
 */
async function allPositions(ctx: SolveContext, f: Forced, weak: PositionState[], edits: Edit[]): Promise<Step | undefined> {
  const { model, target } = ctx;
  const { neurons: m, width: d } = model.info;
  const floor = refFloor(ctx.ref);
  const used = new Set(edits.map(neuronKey));
  const moves: Move[] = [];
  for (const st of weak) {
    const pos = target.first + st.index;
    const c = contrast(model, row(f.residual!, pos, d), st.desired, st.rival);
    const lifted = moves.reduce((acc, mv) => acc + gain(f, mv.parts, pos, c, m) * (mv.need / mv.own), 0);
    if (st.gap + lifted >= ctx.margin / 2) continue;
    const s = ctx.steer.direction(st.desired, st.rival);
    const cand = candidates(f, pos, ctx.ref, floor, m).find((x) => x.parts.every((p) => !used.has(neuronKey(p))));
    if (!cand || used.size + cand.parts.length > ctx.maxNeurons) break;
    const parts = directed(ctx, cand.parts, s);
    const own = gain(f, parts, pos, c, m);
    if (!(Math.abs(own) > 1e-9)) continue;
    for (const p of cand.parts) used.add(neuronKey(p));
    moves.push({ parts, pos, contrast: c, need: ctx.margin - st.gap, own, label: label(cand.parts) });
  }
  if (moves.length < 2) return undefined;  // one position: the single-position search does it better
  // A x = need, A[a][b] = gain of move b at move a's position (least squares, lightly regularized).
  const n = moves.length;
  const A = new Float64Array(n * n);
  moves.forEach((at, a) => moves.forEach((mv, b) => (A[a * n + b] = gain(f, mv.parts, at.pos, at.contrast, m))));
  const AtA = new Float64Array(n * n);
  const Atb = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < n; a++) Atb[i] += A[a * n + i] * moves[a].need;
    for (let j = 0; j < n; j++) for (let a = 0; a < n; a++) AtA[i * n + j] += A[a * n + i] * A[a * n + j];
  }
  const x = solveSymmetric(AtA, n, Atb, 1, 1e-6);
  const withScale = (k: number) => moves.reduce((acc, mv, b) => mv.parts.reduce((e, p) => accumulate(e, p.layer, p.neuron, p.dir.map((v) => v * p.w * x[b] * k)), acc), edits);
  const trials = STEPS.map((k) => ({ k, edits: withScale(k) }));
  const all = [...f.activations.keys()];
  // Fewest failing positions, then fewest weak ones, then the scale nearest the linearization.
  const score = (st: PositionState[], k = 1) => [st.filter((s) => s.failing).length, weakPositions(st, target, ctx.margin / 4).length, Math.abs(Math.log(k))];
  const order = (a: number[], b: number[]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
  // The trials in forwards of rowsPerForward rows: only the best row so far keeps its activations (copied out).
  let best: { t: (typeof trials)[number]; st: PositionState[]; score: number[]; f: Forced } | undefined;
  for (const [, rows] of chunks(trials, rowsPerForward(model, target.input.length))) {
    if (ctx.signal?.aborted) throw new Cancelled();
    const res = await model.session.forward({
      ids: rows.map(() => target.input), edits: rows.map((t) => combine(ctx.base, t.edits, d)), activations: all, residual: true, logitsFrom: target.first,
    });
    rows.forEach((t, r) => {
      const st = positionStates(model, target, logitRows(res), r);
      const sc = score(st, t.k);
      if (!best || order(sc, best.score) < 0) best = { t, st, score: sc, f: rowOf(res, r, st, target) };
    });
  }
  const [failNow, weakNow] = score(f.states);
  if (!best || !(best.score[0] < failNow || (best.score[0] === failNow && best.score[1] < weakNow))) return undefined;
  return { edits: best.t.edits, f: best.f, label: `${moves.length} positions, ${moves.map((mv) => mv.label).join(', ')} × ${best.t.k}` };
}

/**
 * Rows of `seq` tokens per forward in a line search: as many as fit the budget of one run (budget.ts; at least
 * one). On CPU a batch of rows costs about as much as its rows one by one, while a cancel waits for the whole
 * forward in flight, and each row's activations are held until it is scored.
 */
export function rowsPerForward(model: LoadedModel, seq: number): number {
  return Math.max(1, Math.floor(tokensPerForward(model.info) / seq));
}

/** [first index, slice] of `xs` in slices of `n`. */
function chunks<T>(xs: T[], n: number): [number, T[]][] {
  const out: [number, T[]][] = [];
  for (let i = 0; i < xs.length; i += n) out.push([i, xs.slice(i, i + n)]);
  return out;
}

/** MINT's step for one position: candidates by expected side effect, confirmed by a batched line search. */
async function firstPosition(ctx: SolveContext, f: Forced, at: PositionState, edits: Edit[], tabu: Set<string>): Promise<Step | undefined> {
  const { model, target } = ctx;
  const { neurons: m, width: d } = model.info;
  const floor = refFloor(ctx.ref);
  const pos = target.first + at.index;
  const c = contrast(model, row(f.residual!, pos, d), at.desired, at.rival);
  const s = ctx.steer.direction(at.desired, at.rival);
  const need = ctx.margin - at.gap;
  const sc = dot(s, c);
  const sNorm = norm(s);
  // The other positions as the linearization sees them: a step that fixes this position by breaking another only
  // trades them, so candidates predicted to break fewer positions come first, then the cheapest.
  const last = target.targets.length - 1;
  const others = f.states.filter((q) => q.index !== at.index && !(target.lineEnd && q.index === last)).map((q) => {
    const p = target.first + q.index;
    return { gap: q.gap, pos: p, c: contrast(model, row(f.residual!, p, d), q.desired, q.rival) };
  });
  const breaks = (parts: (Part & { dir: Float64Array; scale: number })[]) =>
    others.filter((o) => o.gap + parts.reduce((acc, p) => acc + f.activations.get(p.layer)![o.pos * m + p.neuron] * p.scale * dot(p.dir, o.c), 0) < 0).length;
  const offered = candidates(f, pos, ctx.ref, floor, m).filter((x) => !x.parts.some((p) => tabu.has(neuronKey(p))));
  const cands = offered.slice(0, CANDIDATES * 4).flatMap((cand) => {
    const parts = directed(ctx, cand.parts, s).map((p) => ({ ...p, scale: (p.w * need) / dot(p.dir, c) }));
    if (parts.some((p) => !Number.isFinite(p.scale) || Math.abs(dot(p.dir, c)) < 1e-3 * Math.abs(sc))) return [];
    return [{ parts, cost: cand.cost * sNorm * Math.abs(need / sc), breaks: breaks(parts) }];
  }).sort((a, b) => a.breaks - b.breaks || a.cost - b.cost).slice(0, CANDIDATES);
  if (!cands.length) return undefined;

  // Batched line search over step sizes: the first-ranked candidate first, the next ones only while none makes
  // progress: this position wins by half the margin and no more positions fail than before (fixing one position
  // by breaking another would only trade them round after round).
  const withTrial = (cand: (typeof cands)[number], k: number) =>
    cand.parts.reduce((acc, p) => accumulate(acc, p.layer, p.neuron, p.dir.map((v) => v * p.scale * k)), edits);
  const tryCandidates = async (group: typeof cands) => {
    const trials = group.map((cand) => STEPS.map((k) => ({ cand, k, edits: withTrial(cand, k) }))).flat();
    const out: { t: (typeof trials)[number]; here: PositionState; failing: number; cost: number }[] = [];
    for (const [, rows] of chunks(trials, rowsPerForward(model, target.input.length))) {
      if (ctx.signal?.aborted) throw new Cancelled();
      const res = await model.session.forward({ ids: rows.map(() => target.input), edits: rows.map((t) => combine(ctx.base, t.edits, d)), logitsFrom: target.first });
      rows.forEach((t, r) => {
        const st = positionStates(model, target, logitRows(res), r);
        out.push({ t, here: st[at.index], failing: st.filter((x) => x.failing).length, cost: t.cand.cost * t.k });
      });
    }
    return out;
  };
  const failNow = f.states.filter((x) => x.failing).length;
  const progress = (o: Awaited<ReturnType<typeof tryCandidates>>[number]) =>
    !o.here.failing && o.here.gap >= ctx.margin / 2 && (o.failing < failNow || (!at.failing && o.failing <= failNow));
  let outcomes: Awaited<ReturnType<typeof tryCandidates>> = [];
  for (const group of [cands.slice(0, 1), cands.slice(1, 3), cands.slice(3)]) {
    if (!group.length || outcomes.some(progress)) break;
    outcomes = outcomes.concat(await tryCandidates(group));
  }
  const confident = outcomes.filter(progress);
  const winners = outcomes.filter((o) => !o.here.failing);
  const pick = confident.length
    ? confident.reduce((a, b) => (b.failing < a.failing || (b.failing === a.failing && b.cost < a.cost) ? b : a))
    : winners.length
      ? winners.reduce((a, b) => (b.failing < a.failing || (b.failing === a.failing && b.here.gap > a.here.gap) ? b : a))
      : outcomes.reduce((a, b) => (b.here.gap > a.here.gap ? b : a));
  if (pick.here.gap <= at.gap) return undefined;
  const traded = pick.failing < failNow ? undefined : pick.t.cand.parts.map(neuronKey);
  return { edits: pick.t.edits, traded, label: `position ${at.index}, neuron ${label(pick.t.cand.parts)} × ${pick.t.k}, gap ${at.gap.toFixed(2)} → ${pick.here.gap.toFixed(2)}` };
}

/**
 * One row of a batched forward, as a teacher-forced state of its own: copied out, so that the batch's arrays
 * (every layer's activations of every trial: hundreds of MB at a real model's size) are not kept alive by it.
 */
function rowOf(res: ForwardResult, r: number, states: PositionState[], target: RepairTarget): Forced {
  const slice = (a: Float32Array) => a.slice((a.length / res.batch) * r, (a.length / res.batch) * (r + 1));
  return {
    target, states, logits: { ...logitRows(res), logits: slice(res.logits) }, residual: res.residual && slice(res.residual),
    activations: new Map([...res.activations].map(([L, z]) => [L, slice(z)])),
  };
}
