// Every model folder is recognised as what it is: layers, neurons, width and vocabulary as its config and weights
// say; gated or not; the final norm's kind; the cache layout and the I/O types; each layer's FFN output projection
// at the module the architecture names. And the recognised final residual, final norm and unembedding are the
// real ones: normalising the exposed residual and applying the unembedding gives back the model's logits.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { onnx } from 'onnx-proto';
import type { Model } from '../../src/engine';
import { maxAbs, MODELS, modelOf, onnxFile, releaseAll, sampleIds, type ModelEntry } from '../helpers/models';

after(releaseAll);

interface Expected {
  architecture: string;
  layers: number;
  neurons: number;
  width: number;
  vocab: number;
  context?: number;
  tied?: boolean;
}

/** The sizes a folder's own config.json gives (Hugging Face names of every family). */
function fromHfConfig(dir: string): Expected | undefined {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) return undefined;
  const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, number | string | boolean | null | undefined>;
  const n = (...keys: string[]): number | undefined => keys.map((k) => c[k]).find((v): v is number => typeof v === 'number');
  const width = n('hidden_size', 'n_embd')!;
  return {
    architecture: String(c.model_type), layers: n('num_hidden_layers', 'n_layer')!, width,
    neurons: n('intermediate_size', 'n_inner') ?? 4 * width, vocab: n('vocab_size')!,
    context: n('max_position_embeddings', 'n_positions'), tied: typeof c.tie_word_embeddings === 'boolean' ? c.tie_word_embeddings : undefined,
  };
}

/** The two third-party folders (genai_config.json only): from ../shared/fixtures/README.md and their weights' dims. */
const THIRD_PARTY: Record<string, Expected> = {
  'ortgenai-tiny-llama-fp16': { architecture: 'llama', layers: 2, neurons: 64, width: 16, vocab: 32000, context: 2048 },
  'ortgenai-tiny-gpt2-fp32': { architecture: 'gpt2', layers: 5, neurons: 128, width: 32, vocab: 1000, context: 512 },
};

const GATED = new Set(['llama', 'qwen2', 'mistral']);

/** Where each family's FFN output projection lives (node or weight name), for layer L. */
const FFN_OUT: Record<string, (L: number) => RegExp> = {
  llama: (L) => new RegExp(`layers\\.${L}[./]mlp[./]down_proj`),
  qwen2: (L) => new RegExp(`layers\\.${L}[./]mlp[./]down_proj`),
  gpt2: (L) => new RegExp(`h\\.${L}[./]mlp[./]c_proj`),
  gpt_bigcode: (L) => new RegExp(`h\\.${L}[./]mlp[./]c_proj`),
  gpt_neox: (L) => new RegExp(`layers\\.${L}[./]mlp[./]dense_4h_to_h`),
  codegen: (L) => new RegExp(`h\\.${L}[./]mlp[./]fc_out`),
};

function expected(e: ModelEntry): Expected {
  const x = fromHfConfig(e.dir) ?? THIRD_PARTY[e.name];
  assert.ok(x, `${e.name}: no config.json and no expectations written here`);
  return x;
}

interface PlainNode {
  name: string;
  opType: string;
  input: string[];
  output: string[];
}

/** The original graph's nodes and input declarations, decoded here (without its external data). */
function originalGraph(e: ModelEntry): { node: PlainNode[]; input: { name: string; elemType: number; dims: number[] }[] } {
  const g = onnx.ModelProto.decode(fs.readFileSync(onnxFile(e))).graph!;
  return {
    node: (g.node ?? []).map((n) => ({ name: n.name ?? '', opType: n.opType ?? '', input: (n.input ?? []).map(String), output: (n.output ?? []).map(String) })),
    input: (g.input ?? []).map((i) => ({
      name: i.name ?? '', elemType: i.type?.tensorType?.elemType ?? 0,
      dims: (i.type?.tensorType?.shape?.dim ?? []).map((d) => Number(d.dimValue ?? 0)),
    })),
  };
}

function describeModel(m: Model): string {
  const i = m.info;
  const g = m.loaded.graph;
  return `${i.architecture}: ${i.layers} layers × ${i.neurons} neurons, width ${i.width}, vocab ${i.vocab}, context ${i.context}, ` +
    `${i.gated ? 'gated' : 'not gated'}, final norm ${i.finalNorm}${g.finalNorm.fusedWith ? ' (fused)' : ''}, ` +
    `unembedding ${i.tiedUnembedding ? 'tied' : 'separate'}, ${i.weightType} weights, ${g.indexType} ids, cache ${g.cache.kind}`;
}

for (const e of MODELS) {
  describe(e.name, () => {
    test('info: layers, neurons, width, vocabulary, gating, final norm, cache and I/O types', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const x = expected(e);
      const { info } = m;
      const g = m.loaded.graph;
      t.diagnostic(`${e.name}: ${describeModel(m)}`);
      assert.equal(info.architecture, x.architecture);
      assert.deepEqual(
        { layers: info.layers, neurons: info.neurons, width: info.width, vocab: info.vocab },
        { layers: x.layers, neurons: x.neurons, width: x.width, vocab: x.vocab },
      );
      if (x.context !== undefined) assert.equal(info.context, x.context, 'context window');
      if (x.tied !== undefined) assert.equal(info.tiedUnembedding, x.tied, 'tied unembedding');
      assert.equal(info.gated, GATED.has(x.architecture), 'gated MLP');
      assert.ok(g.sites.every((s) => s.gated === info.gated), 'every layer gated alike');
      assert.equal(info.finalNorm, GATED.has(x.architecture) ? 'rms' : 'layer', 'final norm kind');
      assert.match(info.hash, /^[0-9a-f]{64}$/, 'sha256 of the model files');

      // I/O types and cache layout, read from the original graph's declarations.
      const graph = originalGraph(e);
      const decl = new Map(graph.input.map((i) => [i.name, i.elemType]));
      const T = onnx.TensorProto.DataType;
      assert.equal(g.indexType, decl.get('input_ids') === T.INT32 ? 'int32' : 'int64', 'ids type');
      const pasts = graph.input.filter((i) => !['input_ids', 'attention_mask', 'position_ids'].includes(i.name));
      assert.equal(info.weightType, decl.get(pasts[0].name) === T.FLOAT16 ? 'float16' : 'float32', 'float type');
      if (pasts.every((p) => /^past_\d+$/.test(p.name))) {
        assert.equal(g.cache.kind, 'stacked');
        assert.equal(pasts.length, x.layers);
      } else {
        assert.equal(g.cache.kind, 'pairs');
        assert.equal(pasts.length, 2 * x.layers);
      }
      const pastDims = pasts[0].dims;
      const off = g.cache.kind === 'stacked' ? 1 : 0;
      assert.deepEqual([g.heads, g.headDim], [pastDims[1 + off], pastDims[3 + off]], 'cache heads and head size');
    });

    test('each layer\'s FFN output projection is the one the architecture names', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const x = expected(e);
      const g = m.loaded.graph;
      assert.equal(g.sites.length, x.layers);
      const where = FFN_OUT[x.architecture];
      assert.ok(where, `no FFN naming known for ${x.architecture}`);
      for (const s of g.sites) {
        // Optimizer exports lose node names but keep the weights' names.
        assert.ok(where(s.layer).test(s.node) || where(s.layer).test(s.weight.name), `layer ${s.layer}: ${s.node} / ${s.weight.name}`);
        const [m0, d0] = s.weight.layout === 'rows' ? s.weight.dims : [s.weight.dims[1], s.weight.dims[0]];
        assert.deepEqual([m0, d0], [x.neurons, x.width], `layer ${s.layer}: W_out is neurons × width`);
        if (GATED.has(x.architecture)) assert.equal(s.activationOp, 'Mul', `layer ${s.layer}: z is the gated product`);
      }
      t.diagnostic(`${e.name}: ${g.sites.map((s) => `${s.layer}: ${s.node || '(unnamed)'} ← ${s.activationOp}`).join('; ')}`);
      if (e.name === 'ortgenai-tiny-gpt2-fp32') {
        assert.ok(g.sites.every((s) => s.activationOp === 'FastGelu'), 'the optimizer export\'s FFN is found through FastGelu');
      }
      if (x.architecture === 'gpt_neox') assert.ok(g.sites.every((s) => /dense_4h_to_h/.test(s.node)));
      if (x.architecture === 'codegen') assert.ok(g.sites.every((s) => /fc_out/.test(s.node)));
    });

    test('the final norm is found where it is fused with the last residual add', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const fn = m.loaded.graph.finalNorm;
      const graph = originalGraph(e);
      const producer = new Map(graph.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
      const lmIn = graph.node.find((n) => n.output.includes('logits'));
      // The op that normalises the lm_head's input, if it is one fused op.
      let head = lmIn;
      while (head && (head.opType === 'Add' || head.opType === 'MatMul' || head.opType === 'Gemm' || head.opType === 'Cast')) {
        head = producer.get(head.input.find((i) => producer.has(i)) ?? '');
        if (head && /Normalization$/.test(head.opType)) break;
      }
      if (head && /^Skip.*Normalization$/.test(head.opType)) {
        assert.ok(fn.fusedWith, `${head.opType} is the final norm: the residual is its sum output`);
        assert.equal(fn.fusedWith, head.output[0]);
        assert.equal(fn.residual, 'final.resid', 'the fused op\'s sum output is exposed as final.resid');
        t.diagnostic(`${e.name}: final residual = output 3 of ${head.opType} ${head.name}`);
      } else {
        assert.equal(fn.fusedWith, undefined, 'no fused norm');
        assert.ok(producer.has(fn.residual), `the residual ${fn.residual} is a tensor of the graph`);
        t.diagnostic(`${e.name}: final residual = ${fn.residual} (${producer.get(fn.residual)?.opType})`);
      }
      if (e.name === 'ortgenai-tiny-llama-fp16') {
        assert.equal(head?.opType, 'SkipSimplifiedLayerNormalization');
        assert.equal(fn.kind, 'rms');
      }
    });

    test('unembedding(final norm(final residual)) gives back the logits', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const { width: d, vocab: V } = m.info;
      const T = 8;
      const ids = [sampleIds(m, T, 1), sampleIds(m, T, 2)];
      const res = await m.loaded.session.forward({ ids, residual: true });
      const r = res.residual!;
      const W = m.loaded.weights.rowsOf(m.loaded.graph.unembedding, 0, V);
      const gain = m.loaded.weights.finalGain();
      const bias = m.loaded.weights.finalBias();
      const fn = m.loaded.graph.finalNorm;
      assert.equal(W.length, V * d, 'W_U is [vocab, width]');
      assert.equal(gain.length, d);
      if (fn.kind === 'layer') assert.ok(bias, 'a LayerNorm has a bias');

      // The lm_head may add its own bias (CodeGen): then the difference is one vector, the same at every position.
      const graph = originalGraph(e);
      const lmBias = graph.node.find((n) => n.output.includes('logits'))?.opType === 'Add';
      const diffs: Float64Array[] = [];
      const normed = new Float64Array(d);
      for (let p = 0; p < 2 * T; p++) {
        const x = r.subarray(p * d, (p + 1) * d);
        let mean = 0;
        if (fn.kind === 'layer') for (const v of x) mean += v / d;
        let sq = 0;
        for (const v of x) sq += (v - mean) ** 2 / d;
        const inv = 1 / Math.sqrt(sq + fn.eps);
        for (let i = 0; i < d; i++) normed[i] = (x[i] - mean) * inv * gain[i] + (bias ? bias[i] : 0);
        const diff = new Float64Array(V);
        for (let v = 0; v < V; v++) {
          let s = 0;
          for (let i = 0; i < d; i++) s += W[v * d + i] * normed[i];
          diff[v] = res.logits[p * V + v] - s;
        }
        diffs.push(diff);
      }
      const scale = maxAbs(res.logits);
      let worst = 0;
      for (const diff of diffs) {
        for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(diff[v] - (lmBias ? diffs[0][v] : 0)));
      }
      // fp16: the residual and the logits come back rounded to fp16 (about 5e-4 relative).
      const tol = m.info.weightType === 'float16' ? 4e-3 * scale : 1e-4 * Math.max(1, scale);
      t.diagnostic(`${e.name}: max |logit − W_U·${fn.kind}norm(final.resid)${lmBias ? ' − lm_head bias' : ''}| = ${worst.toExponential(2)} ` +
        `(logits reach ${scale.toFixed(2)}, eps ${fn.eps.toExponential(1)})`);
      assert.ok(worst < tol, `recomputed logits differ by ${worst} (tolerance ${tol})`);
    });
  });
}
