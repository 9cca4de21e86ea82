// The vocabulary-wide and model-size hot paths of tracing and repair, checked against the direct computation they
// replace: the one-pass best/rival scan, the KL divergence without log-softmax arrays, the logit lens ranked inside
// onnxruntime (TopK over each block of the unembedding), and the reference second moments read in blocks from
// their cache file instead of held whole.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { logSoftmax, topK } from '../../src/engine/linalg';
import { productABt, productTopK } from '../../src/engine/onnx/products';
import { bestTwo } from '../../src/engine/trace/teacher';
import { FORWARD_MACS, macsPerToken, tokensPerForward } from '../../src/engine/budget';
import { sessionOptions } from '../../src/engine/model/session';
import { klDivergence } from '../../src/engine/repair/verify';
import { referenceStats } from '../../src/engine/repair/reference';
import { logitLenses } from '../../src/engine/trace/attribution';
import { ablationEffects, layerOcclusion } from '../../src/engine/trace/index';
import { preparePrompt } from '../../src/engine/generate';
import { entry, modelOf, rng } from '../helpers/models';

test('bestTwo gives the argmax and the best token other than the desired one, as a full scan does (ties: lower id)', () => {
  const r = rng(7);
  for (let trial = 0; trial < 50; trial++) {
    const V = 1 + Math.floor(r() * 40);
    // Few distinct values, so that ties are common.
    const x = Float32Array.from({ length: V + 3 }, () => Math.floor(r() * 5));
    const off = 3;
    const y = Math.floor(r() * V);
    let argmax = -1;
    let rival = -1;
    for (let v = 0; v < V; v++) {
      if (argmax < 0 || x[off + v] > x[off + argmax]) argmax = v;
      if (v !== y && (rival < 0 || x[off + v] > x[off + rival])) rival = v;
    }
    assert.deepEqual(bestTwo(x, off, V, y), { argmax, rival }, `V ${V}, y ${y}, ${Array.from(x.subarray(off))}`);
  }
});

test('klDivergence equals Σ p (log p − log q) over log-softmaxed rows, with both argmaxes', () => {
  const r = rng(3);
  const n = 1000;
  const p = Float32Array.from({ length: 2 * n }, () => 8 * r());
  const q = Float32Array.from({ length: 2 * n }, () => 8 * r());
  const lp = logSoftmax(p, n, n);
  const lq = logSoftmax(q, n, n);
  let kl = 0;
  for (let v = 0; v < n; v++) kl += Math.exp(lp[v]) * (lp[v] - lq[v]);
  const got = klDivergence(p, q, n, n);
  assert.ok(Math.abs(got.kl - kl) < 1e-9, `${got.kl} vs ${kl}`);
  assert.equal(got.argmaxP, topK(lp, 1)[0]);
  assert.equal(got.argmaxQ, topK(lq, 1)[0]);
  assert.ok(Math.abs(klDivergence(p, p, 0, n).kl) < 1e-12);
});

test('productTopK returns each row\'s largest and smallest entries of A·Bᵀ, as ranking the full product does', async () => {
  const r = rng(11);
  const [n, k, d] = [3, 300, 16];
  const a = Float32Array.from({ length: n * d }, r);
  const b = Float32Array.from({ length: k * d }, r);
  const full = await productABt(a, n, b, k, d);
  const e = await productTopK(a, n, b, k, d, 5);
  assert.equal(e.K, 5);
  for (let i = 0; i < n; i++) {
    const rowVals = full.subarray(i * k, (i + 1) * k);
    assert.deepEqual(Array.from(e.topIndex.subarray(i * 5, i * 5 + 5)), topK(rowVals, 5));
    assert.deepEqual(Array.from(e.bottomIndex.subarray(i * 5, i * 5 + 5)), topK(rowVals, 5, true));
    assert.deepEqual(Array.from(e.top.subarray(i * 5, i * 5 + 5)), topK(rowVals, 5).map((j) => rowVals[j]));
  }
  // K beyond the block's width is cut to it.
  assert.equal((await productTopK(a, n, b.subarray(0, 2 * d), 2, d, 5)).K, 2);
});

test('the logit lens ranked in onnxruntime block by block equals a scan of the whole unembedding', async (t) => {
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  const m = model.loaded;
  const d = m.info.width;
  const vs = [m.weights.valueVector(0, 3, d), m.weights.valueVector(m.info.layers - 1, 17, d)];
  const lenses = await logitLenses(m, vs, 5);
  const g = m.weights.finalGain();
  vs.forEach((v, r) => {
    const scores = new Float64Array(m.info.vocab);
    for (let tok = 0; tok < m.info.vocab; tok++) {
      const w = m.weights.unembeddingRow(tok);
      let s = 0;
      for (let i = 0; i < d; i++) s += w[i] * g[i] * v[i];
      scores[tok] = s;
    }
    const show = (ids: number[]) => ids.map((id) => m.tokenizer.tokenDisplay(id));
    assert.deepEqual(lenses[r].promotes.map((x) => x.text), show(topK(scores, 5)));
    assert.deepEqual(lenses[r].suppresses.map((x) => x.text), show(topK(scores, 5, true)));
    lenses[r].promotes.forEach((x, i) => assert.ok(Math.abs(x.score - scores[topK(scores, 5)[i]]) < 1e-4));
  });
});

test('reference second moments: the blocks read from the cache file are E[z zᵀ] over the reference tokens', async (t) => {
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  const m = model.loaded;
  const { layers, neurons } = m.info;
  const prompts = ['def add(a, b):\n    return a + b\n', 'for i in range(10):\n    print(i)\n', 'x = 1'];
  const stats = await referenceStats(m, prompts);
  // Direct: one forward per prompt, every position's activations.
  const L = layers - 1;
  const picks = [0, 5, 17, neurons - 1];
  const sums = new Float64Array(picks.length * picks.length);
  const diag = new Float64Array(neurons);
  let count = 0;
  for (const p of prompts) {
    const ids = preparePrompt(m, p, 1, false).ids;
    const res = await m.session.forward({ ids: [ids], activations: [L], lastOnly: true });
    const z = res.activations.get(L)!;
    for (let s = 0; s < ids.length; s++) {
      picks.forEach((i, a) => picks.forEach((j, b) => (sums[a * picks.length + b] += z[s * neurons + i] * z[s * neurons + j])));
      for (let j = 0; j < neurons; j++) diag[j] += z[s * neurons + j] ** 2;
    }
    count += ids.length;
  }
  assert.equal(stats.positions, count);
  const block = stats.block(L, picks);
  const scale = Math.max(...sums.map(Math.abs)) / count;
  block.forEach((v, i) => assert.ok(Math.abs(v - sums[i] / count) <= 1e-4 * scale + 1e-7, `block[${i}] ${v} vs ${sums[i] / count}`));
  const maxDiag = Math.max(...diag) / count;
  stats.meanSquare[L].forEach((v, j) => assert.ok(Math.abs(v - diag[j] / count) <= 1e-4 * maxDiag + 1e-7));
  // Read again from the cache file: the same numbers.
  const again = await referenceStats(m, prompts);
  assert.deepEqual(Array.from(again.block(L, picks)), Array.from(block));
});

test('ablation effects at the last position over the cached prefix: a last-layer neuron\'s equals ablating it over the whole input', async (t) => {
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  const m = model.loaded;
  const ids = preparePrompt(m, 'def add(a, b):\n    return a', 1, false).ids;
  const full = await m.session.forward({ ids: [ids], lastOnly: true });
  const V = m.info.vocab;
  const order = topK(full.logits.subarray(0, V), 2);
  const [y, a] = [order[1], order[0]];
  const L = m.info.layers - 1;
  const act = (await m.session.forward({ ids: [ids], activations: [L], lastOnly: true })).activations.get(L)!;
  const neurons = topK(Array.from(act.subarray((ids.length - 1) * m.info.neurons)).map(Math.abs), 3);
  const effects = await ablationEffects(m, ids, y, a, neurons.map((j) => ({ layer: L, neuron: j })));
  const gap = (logits: Float32Array) => logits[y] - logits[a];
  for (const [i, j] of neurons.entries()) {
    const ablated = await m.session.forward({ ids: [ids], lastOnly: true, ablations: [{ example: 0, layer: L, neurons: [j] }] });
    const want = gap(ablated.logits) - gap(full.logits);
    assert.ok(Math.abs(effects[i] - want) < 1e-3 * Math.max(1, Math.abs(want)), `neuron ${L}.${j}: ${effects[i]} vs ${want}`);
  }
  // Layer occlusion reads the same unablated log-probability as a whole forward.
  const occ = await layerOcclusion(m, ids, y, a);
  assert.equal(occ.length, m.info.layers);
  assert.ok(occ.every((o) => Number.isFinite(o.effect)));
});

test('one run\'s budget: Qwen2.5-Coder-0.5B-shaped work is cut into runs of about 5·10¹⁰ multiply-adds', () => {
  const qwen05 = { layers: 24, width: 896, neurons: 4864 };
  const perToken = macsPerToken(qwen05);
  assert.equal(perToken, 24 * (4 * 896 * 896 + 3 * 896 * 4864));
  const n = tokensPerForward(qwen05);
  assert.ok(n * perToken <= FORWARD_MACS && (n + 1) * perToken > FORWARD_MACS, `${n} tokens`);
  assert.equal(tokensPerForward({ layers: 2, width: 64, neurons: 128 }) > 10_000, true, 'a tiny model runs whole');
  assert.equal(tokensPerForward({ layers: 28, width: 1536, neurons: 8960 }, 64), 64, 'the floor holds');
});

test('sessionOptions: spinning false asks onnxruntime\'s intra-op threads to sleep, beside the external data folder', () => {
  const { options } = sessionOptions({ bytes: new Uint8Array(), externalDataFolder: '/x' }, { spinning: false });
  assert.deepEqual(options.extra, { session: { model_external_initializers_file_folder_path: '/x', intra_op: { allow_spinning: '0' } } });
  assert.equal(sessionOptions('/m.onnx').options.extra, undefined);
});
