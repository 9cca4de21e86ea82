// Joint repair (ASTRA-style, gradient-free): one weighted minimum-norm least-squares solve over all failing
// positions for a budget of neurons in the layers that matter most, re-linearized for a bounded number of rounds.
//   minimize E_ref‖Σ_j z_j ΔV_j‖² = tr(ΔVᵀ C ΔV)  subject to  Z ΔV ≈ S,   C = E_ref[z zᵀ] + λI
//   ΔV = C⁻¹ Zᵀ (Z C⁻¹ Zᵀ + μI)⁻¹ S
// (with C diagonal this is ASTRA's weighting by 1 / (E_ref[z_j²] + λ)).
// Z: activations of the chosen neurons at the failing positions (T × k); S: the steers, scaled to reach the margin.
import { dot, row, solveSymmetric, topK } from '../linalg';
import { contrast, valueProjections } from '../trace/attribution';
import { teacherForce, weakPositions } from '../trace/teacher';
import { combine } from '../patches/patchset';
import { accumulate, assertFinite, type Edit, orthogonalize, priorDeltas } from './edits';
import { Cancelled, refFloor, type SolveContext, type SolveResult } from './minimal';

const NEURONS_PER_TOKEN = 8;
const RIDGE = 1e-3;

export async function solveJoint(ctx: SolveContext): Promise<SolveResult> {
  const { model, target } = ctx;
  const { layers, neurons: m, width: d } = model.info;
  const all = [...Array(layers).keys()];
  const floor = refFloor(ctx.ref);
  let edits: Edit[] = [];
  let chosenLayers: number[] | undefined;
  const chosen: { layer: number; neuron: number }[] = [];
  let rounds = 0;
  for (; rounds < ctx.maxRounds; rounds++) {
    if (ctx.signal?.aborted) throw new Cancelled();
    const f = rounds === 0 && ctx.start ? ctx.start : await teacherForce(model, target, combine(ctx.base, edits, d), all, true);
    const failing = weakPositions(f.states, target, ctx.margin / 4);
    if (!failing.length) return { edits, rounds, failing: 0 };
    const positions = failing.map((s) => target.first + s.index);

    if (!chosenLayers) {
      // A quarter of the layers (at least one), ranked by their direct effect on the first failing gap,
      // Σ_j z_j (v_j · c): read from the activations at hand, where occluding each layer would cost a forward.
      const first = failing[0];
      const c = contrast(model, row(f.residual!, positions[0], d), first.desired, first.rival);
      const effect = all.map((L) => {
        const proj = valueProjections(model, L, c);
        const z = f.activations.get(L)!;
        let e = 0;
        for (let j = 0; j < m; j++) e += z[positions[0] * m + j] * proj[j];
        return Math.abs(e);
      });
      chosenLayers = topK(effect, Math.max(1, Math.ceil(layers / 4)));
      // The last layer writes straight into the logits: always worth including.
      if (!chosenLayers.includes(layers - 1)) chosenLayers.push(layers - 1);
    }
    // Neuron budget: for each failing position, the neurons most specific to it (active here, quiet elsewhere).
    for (const pos of positions) {
      const scores: { layer: number; neuron: number; score: number }[] = [];
      for (const L of chosenLayers) {
        const z = f.activations.get(L)!;
        for (let j = 0; j < m; j++) scores.push({ layer: L, neuron: j, score: Math.abs(z[pos * m + j]) / Math.sqrt(ctx.ref.meanSquare[L][j] + floor[L]) });
      }
      scores.sort((a, b) => b.score - a.score);
      let added = 0;
      for (const s of scores) {
        if (added >= NEURONS_PER_TOKEN || chosen.length >= ctx.maxNeurons) break;
        if (!chosen.some((c) => c.layer === s.layer && c.neuron === s.neuron)) {
          chosen.push({ layer: s.layer, neuron: s.neuron });
          added++;
        }
      }
    }
    const k = chosen.length;
    const T = positions.length;
    // Z (T × k), weights, and S (T × d): each row the steer scaled so the gap reaches the margin.
    const Z = new Float64Array(T * k);
    positions.forEach((pos, t) => chosen.forEach((n, i) => (Z[t * k + i] = f.activations.get(n.layer)![pos * m + n.neuron])));
    const S = new Float64Array(T * d);
    failing.forEach((st, t) => {
      const c = contrast(model, row(f.residual!, positions[t], d), st.desired, st.rival);
      const s = ctx.steer.direction(st.desired, st.rival);
      const scale = (ctx.margin - st.gap) / dot(s, c);
      for (let i = 0; i < d; i++) S[t * d + i] = s[i] * scale;
    });
    // C: second moments of the chosen neurons on reference code (within a layer; none across layers), floored.
    const C = new Float64Array(k * k);
    for (const L of new Set(chosen.map((n) => n.layer))) {
      const at = chosen.flatMap((n, i) => (n.layer === L ? [i] : []));
      const block = ctx.ref.block(L, at.map((i) => chosen[i].neuron));
      at.forEach((i, a) => at.forEach((j, b) => (C[i * k + j] = block[a * at.length + b] + (i === j ? floor[L] : 0))));
    }
    // P = C⁻¹ Zᵀ (k × T); A = Z P (T × T); X = (A + μI)⁻¹ S; ΔV = P X (k × d).
    const Zt = new Float64Array(k * T);
    for (let t = 0; t < T; t++) for (let i = 0; i < k; i++) Zt[i * T + t] = Z[t * k + i];
    const P = solveSymmetric(C, k, Zt, T, 1e-6);
    const A = new Float64Array(T * T);
    for (let a = 0; a < T; a++) for (let b = 0; b < T; b++) {
      let acc = 0;
      for (let i = 0; i < k; i++) acc += Z[a * k + i] * P[i * T + b];
      A[a * T + b] = acc;
    }
    const X = solveSymmetric(A, T, S, d, RIDGE);
    chosen.forEach((n, i) => {
      let delta: Float64Array = new Float64Array(d);
      for (let t = 0; t < T; t++) {
        const w = P[i * T + t];
        for (let c = 0; c < d; c++) delta[c] += w * X[t * d + c];
      }
      const prior = priorDeltas(ctx.active, n.layer, n.neuron);
      if (prior.length) delta = orthogonalize(delta, prior);
      edits = accumulate(edits, n.layer, n.neuron, delta);
    });
    assertFinite(edits, 'joint', rounds + 1);
    ctx.log?.(`round ${rounds + 1}: ${T} failing positions, ${k} neurons in layers ${chosenLayers.join(', ')}`);
  }
  const f = await teacherForce(model, target, combine(ctx.base, edits, d));
  return { edits, rounds, failing: f.states.filter((s) => s.failing).length };
}
