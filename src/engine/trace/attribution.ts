// Reading neurons through the unembedding: the contrast direction at a failing position, direct attribution of
// every neuron, and a neuron's logit lens (the tokens its value vector promotes and suppresses).
import { dot, row, topK } from '../linalg';
import type { LoadedModel } from '../model/load';
import type { TokenScore } from '../types';

/** Scale of the final norm at one position: RMS, or the standard deviation for LayerNorm. */
export function normScale(model: LoadedModel, r: Float32Array): number {
  const d = r.length;
  const eps = model.graph.finalNorm.eps;
  if (model.graph.finalNorm.kind === 'rms') return Math.sqrt(dot(r, r) / d + eps);
  let mean = 0;
  for (const v of r) mean += v / d;
  let v2 = 0;
  for (const v of r) v2 += (v - mean) ** 2 / d;
  return Math.sqrt(v2 + eps);
}

/** γ ⊙ (W_U[y] − W_U[a]), centred for LayerNorm: the logit-gap direction before the norm's 1/σ. */
export function gapDirection(model: LoadedModel, y: number, a: number): Float64Array {
  const d = model.info.width;
  const wu = model.weights.unembedding();
  const g = model.weights.finalGain();
  const c = new Float64Array(d);
  for (let i = 0; i < d; i++) c[i] = g[i] * (wu[y * d + i] - wu[a * d + i]);
  if (model.graph.finalNorm.kind === 'layer') {
    let mean = 0;
    for (const v of c) mean += v / d;
    for (let i = 0; i < d; i++) c[i] -= mean;
  }
  return c;
}

/** c = gapDirection / σ_t: adding u to the residual at t moves logit_y − logit_a by about u · c. */
export function contrast(model: LoadedModel, residualAtT: Float32Array, y: number, a: number): Float64Array {
  const c = gapDirection(model, y, a);
  const s = normScale(model, residualAtT);
  for (let i = 0; i < c.length; i++) c[i] /= s;
  return c;
}

/** W_outᵀ c for one layer: each neuron's value vector projected on c. */
export function valueProjections(model: LoadedModel, layer: number, c: Float64Array): Float64Array {
  const { neurons: m, width: d } = model.info;
  const w = model.weights.valueVectors(layer);
  const out = new Float64Array(m);
  for (let j = 0; j < m; j++) out[j] = dot(row(w, j, d), c, d);
  return out;
}

/** Tokens a direction promotes and suppresses: W_U (γ ⊙ v), ranked. */
export function logitLens(model: LoadedModel, v: ArrayLike<number>, k = 5): { promotes: TokenScore[]; suppresses: TokenScore[] } {
  const { vocab: V, width: d } = model.info;
  const wu = model.weights.unembedding();
  const g = model.weights.finalGain();
  const gv = new Float64Array(d);
  for (let i = 0; i < d; i++) gv[i] = g[i] * v[i];
  const scores = new Float64Array(V);
  for (let t = 0; t < V; t++) scores[t] = dot(row(wu, t, d), gv, d);
  const tok = model.tokenizer;
  const show = (t: number): TokenScore => ({ text: tok.tokenText(t), score: scores[t] });
  return { promotes: topK(scores, k).map(show), suppresses: topK(scores, k, true).map(show) };
}
