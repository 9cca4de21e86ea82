// Minimal repair (MINT-style): at the first failing position, change one neuron's value vector along the semantic
// steer by a step set from the linearization, confirm it with a batched line search over candidates and step
// sizes, and repeat at the next failing position until the whole desired text is produced.
import { dot, norm, row } from '../linalg';
import type { LoadedModel } from '../model/load';
import type { ForwardResult, LayerEdits } from '../model/session';
import type { Patch } from '../types';
import { contrast } from '../trace/attribution';
import { type Forced, type PositionState, positionStates, type RepairTarget, teacherForce, weakPositions } from '../trace/teacher';
import { accumulate, combine, type Edit, orthogonalize, priorDeltas } from './edits';
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
  /** Logits by which the desired token should win. */
  margin: number;
  maxNeurons: number;
  maxRounds: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface SolveResult {
  edits: Edit[];
  /** Teacher forcing with the edits produces every desired token. */
  fixed: boolean;
  rounds: number;
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
    const C = ref.second[L];
    const z = acts.subarray(pos * m, (pos + 1) * m);
    const singles: { j: number; v: number }[] = [];
    for (let j = 0; j < m; j++) {
      if (Math.abs(z[j]) < 1e-6) continue;
      singles.push({ j, v: (z[j] * z[j]) / (C[j * m + j] + floor[L]) });
    }
    singles.sort((a, b) => b.v - a.v);
    const short = singles.slice(0, SHORTLIST);
    for (const x of short) out.push({ parts: [{ layer: L, neuron: x.j, w: 1 / z[x.j] }], cost: 1 / Math.sqrt(x.v) });
    for (let a = 0; a < short.length; a++) {
      for (let b = a + 1; b < short.length; b++) {
        const [i, j] = [short[a].j, short[b].j];
        const cii = C[i * m + i] + floor[L], cjj = C[j * m + j] + floor[L], cij = C[i * m + j];
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
  const { layers, neurons: m, width: d } = model.info;
  const all = [...Array(layers).keys()];
  const floor = refFloor(ctx.ref);
  let edits: Edit[] = [];
  let rounds = 0;
  // The teacher-forced state under the current edits; after the first round it is the line search's chosen row.
  let f: Forced = await teacherForce(model, target, combine(ctx.base, edits, d), all, true);
  for (; rounds < ctx.maxRounds; rounds++) {
    if (ctx.signal?.aborted) throw new Cancelled();
    const at = weakPositions(f.states, target, ctx.margin / 4)[0];
    if (!at) return { edits, fixed: true, rounds };
    const distinct = new Set(edits.map((e) => `${e.layer}:${e.neuron}`)).size;
    if (distinct >= ctx.maxNeurons) break;
    const pos = target.first + at.index;
    const c = contrast(model, row(f.residual!, pos, d), at.desired, at.rival);
    const s = ctx.steer.direction(at.desired, at.rival);
    const need = ctx.margin - at.gap;
    const sc = dot(s, c);
    const sNorm = norm(s);

    // Candidates by expected side effect; each part's direction is kept orthogonal to earlier patches' changes.
    const shortlist = candidates(f, pos, ctx.ref, floor, m).slice(0, CANDIDATES * 2);
    const cands = shortlist.flatMap((cand) => {
      const parts = cand.parts.map((p) => {
        const prior = priorDeltas(ctx.active, p.layer, p.neuron);
        const dir = prior.length ? orthogonalize(s, prior) : s;
        const gain = dot(dir, c);
        return { ...p, dir, scale: (p.w * need) / gain };
      });
      if (parts.some((p) => !Number.isFinite(p.scale) || Math.abs(dot(p.dir, c)) < 1e-3 * Math.abs(sc))) return [];
      return [{ parts, cost: cand.cost * sNorm * Math.abs(need / sc) }];
    }).slice(0, CANDIDATES);
    if (!cands.length) break;
    const label = (cand: (typeof cands)[number]) => cand.parts.map((p) => `${p.layer}.${p.neuron}`).join(' + ');

    // Batched line search over step sizes: the cheapest candidate first, the others only if it cannot win.
    const withTrial = (cand: (typeof cands)[number], k: number) =>
      cand.parts.reduce((acc, p) => accumulate(acc, p.layer, p.neuron, p.dir.map((v) => v * p.scale * k)), edits);
    const tryCandidates = async (group: typeof cands) => {
      const trials = group.map((cand) => STEPS.map((k) => ({ cand, k, edits: withTrial(cand, k) }))).flat();
      const res = await model.session.forward({
        ids: trials.map(() => target.input),
        edits: trials.map((t) => combine(ctx.base, t.edits, d)),
        activations: all, residual: true,
      });
      return trials.map((t, r) => {
        const st = positionStates(model, target, res.logits, r, res.seq);
        return { t, here: st[at.index], failing: st.filter((x) => x.failing).length, cost: t.cand.cost * t.k, row: () => rowOf(res, r, st, target) };
      });
    };
    let outcomes = await tryCandidates(cands.slice(0, 1));
    if (!outcomes.some((o) => !o.here.failing && o.here.gap >= ctx.margin / 2) && cands.length > 1) {
      outcomes = outcomes.concat(await tryCandidates(cands.slice(1)));
    }
    const winners = outcomes.filter((o) => !o.here.failing);
    const confident = winners.filter((o) => o.here.gap >= ctx.margin / 2);
    const pick = confident.length
      ? confident.reduce((a, b) => (b.failing < a.failing || (b.failing === a.failing && b.cost < a.cost) ? b : a))
      : winners.length
        ? winners.reduce((a, b) => (b.here.gap > a.here.gap ? b : a))
        : outcomes.reduce((a, b) => (b.here.gap > a.here.gap ? b : a));
    if (pick.here.gap <= at.gap) break;  // nothing moves this position: give up honestly
    edits = pick.t.edits;
    f = pick.row();
    ctx.log?.(`round ${rounds + 1}: position ${at.index}, neuron ${label(pick.t.cand)} × ${pick.t.k}, gap ${at.gap.toFixed(2)} → ${pick.here.gap.toFixed(2)}`);
  }
  return { edits, fixed: !f.states.some((s) => s.failing), rounds };
}

/** One row of a batched forward, as a teacher-forced state of its own. */
function rowOf(res: ForwardResult, r: number, states: PositionState[], target: RepairTarget): Forced {
  const slice = (a: Float32Array) => a.subarray((a.length / res.batch) * r, (a.length / res.batch) * (r + 1));
  return {
    target, states, seq: res.seq, logits: slice(res.logits), residual: res.residual && slice(res.residual),
    activations: new Map([...res.activations].map(([L, z]) => [L, slice(z)])),
  };
}
