// Minimal repair (MINT-style): at the first failing position, change one neuron's value vector along the semantic
// steer by a step set from the linearization, confirm it with a batched line search over candidates and step
// sizes, and repeat at the next failing position until the whole desired text is produced.
import { dot, norm, row } from '../linalg';
import type { LoadedModel } from '../model/load';
import type { ForwardResult, LayerEdits } from '../model/session';
import type { Patch } from '../types';
import { contrast } from '../trace/attribution';
import { type Forced, type PositionState, positionStates, type RepairTarget, teacherForce } from '../trace/teacher';
import { accumulate, combine, type Edit, orthogonalize, priorDeltas } from './edits';
import type { Steer } from './steer';

export interface SolveContext {
  model: LoadedModel;
  target: RepairTarget;
  /** Edits of the patches already active: the new patch is solved on top of them. */
  base?: LayerEdits;
  active: readonly Patch[];
  steer: Steer;
  /** E_ref[z²] per layer. */
  ref: Float32Array[];
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
export function refFloor(ref: Float32Array[]): number[] {
  return ref.map((r) => 0.05 * (r.reduce((s, v) => s + v, 0) / Math.max(1, r.length)) + 1e-8);
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
    const at = f.states.find((s) => s.failing);
    if (!at) return { edits, fixed: true, rounds };
    const distinct = new Set(edits.map((e) => `${e.layer}:${e.neuron}`)).size;
    if (distinct >= ctx.maxNeurons) break;
    const pos = target.first + at.index;
    const c = contrast(model, row(f.residual!, pos, d), at.desired, at.rival);
    const s = ctx.steer.direction(at.desired, at.rival);
    const need = ctx.margin - at.gap;
    const sc = dot(s, c);
    const sNorm = norm(s);

    // Candidates by expected side effect: the step a neuron needs times how active it is elsewhere.
    const scored: { layer: number; neuron: number; dir: Float64Array; alpha: number; cost: number }[] = [];
    for (let L = 0; L < layers; L++) {
      const z = f.activations.get(L)!;
      for (let j = 0; j < m; j++) {
        const zj = z[pos * m + j];
        if (Math.abs(zj) < 1e-6) continue;
        const elsewhere = Math.sqrt(ctx.ref[L][j] + floor[L]);
        // Cheap bound first: the plain steer's cost; the orthogonalized one only for the survivors.
        const gain = zj * sc;
        if (Math.abs(gain) < 1e-9) continue;
        scored.push({ layer: L, neuron: j, dir: s, alpha: need / gain, cost: Math.abs(need / gain) * sNorm * elsewhere });
      }
    }
    scored.sort((a, b) => a.cost - b.cost);
    const candidates = scored.slice(0, CANDIDATES * 2).map((cand) => {
      const prior = priorDeltas(ctx.active, cand.layer, cand.neuron);
      if (!prior.length) return cand;
      const dir = orthogonalize(s, prior);
      const zj = f.activations.get(cand.layer)![pos * m + cand.neuron];
      const gain = zj * dot(dir, c);
      const elsewhere = Math.sqrt(ctx.ref[cand.layer][cand.neuron] + floor[cand.layer]);
      return { ...cand, dir, alpha: need / gain, cost: Math.abs(need / gain) * norm(dir) * elsewhere };
    }).filter((cand) => Number.isFinite(cand.alpha)).sort((a, b) => a.cost - b.cost).slice(0, CANDIDATES);
    if (!candidates.length) break;

    // Batched line search over step sizes: the cheapest candidate first, the others only if it cannot win.
    const tryCandidates = async (group: typeof candidates) => {
      const trials = group.flatMap((cand) => STEPS.map((k) => ({ cand, k, delta: cand.dir.map((v) => v * cand.alpha * k) })));
      const res = await model.session.forward({
        ids: trials.map(() => target.input),
        edits: trials.map((t) => combine(ctx.base, accumulate(edits, t.cand.layer, t.cand.neuron, t.delta), d)),
        activations: all, residual: true,
      });
      return trials.map((t, r) => {
        const st = positionStates(model, target, res.logits, r, res.seq);
        return { t, here: st[at.index], failing: st.filter((x) => x.failing).length, cost: t.cand.cost * t.k, row: () => rowOf(res, r, st, target) };
      });
    };
    let outcomes = await tryCandidates(candidates.slice(0, 1));
    if (!outcomes.some((o) => !o.here.failing && o.here.gap >= ctx.margin / 2) && candidates.length > 1) {
      outcomes = outcomes.concat(await tryCandidates(candidates.slice(1)));
    }
    const winners = outcomes.filter((o) => !o.here.failing);
    const confident = winners.filter((o) => o.here.gap >= ctx.margin / 2);
    const pick = confident.length
      ? confident.reduce((a, b) => (b.failing < a.failing || (b.failing === a.failing && b.cost < a.cost) ? b : a))
      : winners.length
        ? winners.reduce((a, b) => (b.here.gap > a.here.gap ? b : a))
        : outcomes.reduce((a, b) => (b.here.gap > a.here.gap ? b : a));
    if (!winners.length && pick.here.gap <= at.gap) break;  // nothing moves this position: give up honestly
    edits = accumulate(edits, pick.t.cand.layer, pick.t.cand.neuron, pick.t.delta);
    f = pick.row();
    ctx.log?.(`round ${rounds + 1}: position ${at.index}, neuron ${pick.t.cand.layer}.${pick.t.cand.neuron} × ${pick.t.k}, gap ${at.gap.toFixed(2)} → ${pick.here.gap.toFixed(2)}`);
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
