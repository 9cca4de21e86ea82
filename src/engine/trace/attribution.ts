// Reading neurons through the unembedding: the contrast direction at a failing position, direct attribution of
// every neuron, and a neuron's logit lens (the tokens its value vector promotes and suppresses).
import { dot, row } from '../linalg';
import { productTopK } from '../onnx/products';
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
  const wy = model.weights.unembeddingRow(y);
  const wa = model.weights.unembeddingRow(a);
  const g = model.weights.finalGain();
  const c = new Float64Array(d);
  for (let i = 0; i < d; i++) c[i] = g[i] * (wy[i] - wa[i]);
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
export async function logitLens(model: LoadedModel, v: ArrayLike<number>, k = 5): Promise<{ promotes: TokenScore[]; suppresses: TokenScore[] }> {
  return (await logitLenses(model, [v], k))[0];
}

/**
 * The logit lens of several directions in one pass over the unembedding: W_U is read in row blocks (never whole)
 * and each block multiplied by the [n, d] stack of γ ⊙ v and ranked in onnxruntime (productTopK): per block only
 * each direction's k best and k worst tokens come back, merged here. Nothing vocabulary-sized is held in JS.
 */
export async function logitLenses(model: LoadedModel, vs: ArrayLike<number>[], k = 5): Promise<{ promotes: TokenScore[]; suppresses: TokenScore[] }[]> {
  const d = model.info.width;
  const n = vs.length;
  if (!n) return [];
  const g = model.weights.finalGain();
  const gv = new Float32Array(n * d);
  vs.forEach((v, r) => {
    for (let i = 0; i < d; i++) gv[r * d + i] = g[i] * v[i];
  });
  type Hit = { token: number; score: number };
  const high: Hit[][] = vs.map(() => []);
  const low: Hit[][] = vs.map(() => []);
  for (const { from, rows } of model.weights.unembeddingBlocks()) {
    const e = await productTopK(gv, n, rows, rows.length / d, d, k);
    for (let r = 0; r < n; r++) {
      for (let j = 0; j < e.K; j++) {
        high[r].push({ token: from + e.topIndex[r * e.K + j], score: e.top[r * e.K + j] });
        low[r].push({ token: from + e.bottomIndex[r * e.K + j], score: e.bottom[r * e.K + j] });
      }
    }
  }
  const tok = model.tokenizer;
  // Best first; equal scores keep the lower token id first, as one scan of the whole vocabulary would.
  const rank = (hits: Hit[], sign: number) => hits.sort((a, b) => sign * (b.score - a.score) || a.token - b.token).slice(0, k)
    .map((h): TokenScore => ({ text: tok.tokenDisplay(h.token), score: h.score }));
  return high.map((h, r) => ({ promotes: rank(h, 1), suppresses: rank(low[r], -1) }));
}
