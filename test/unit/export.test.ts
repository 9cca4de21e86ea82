// Export: patches baked into a new model folder, checked byte by byte against the source and run in
// onnxruntime-node next to it. Fixtures: fp16 models with external data (test/fixtures/tiny-qwen2-fp16 everywhere,
// onnxruntime-genai's LLaMA from ../shared/fixtures where present) and an fp32 GPT-2 with raw_data (../shared); a
// small model built here covers float_data/int32_data storage and the 'cols' layout.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { ort } from '../../src/engine/onnx/runtime';
import { exportPatched } from '../../src/engine/export/export';
import type { FfnSite } from '../../src/engine/model/graph';
import { f16ToF32, f32ToF16 } from '../../src/engine/onnx/float16';
import { findInitializer, loadModel, loadModelProto, onnx, saveModelProto } from '../../src/engine/onnx/proto';
import { externalRef, readTensor, tensorDims } from '../../src/engine/onnx/tensor';
import { isoNow, newPatchId } from '../../src/engine/patches/id';
import { NeuronpatchError, type Patch } from '../../src/engine/types';
import { absence, argmax, entry, plainFeeds, skipIfAbsent, type ModelEntry } from '../helpers/models';

const gpt2Dir = entry('ortgenai-tiny-gpt2-fp32').dir;
const { FLOAT, FLOAT16 } = onnx.TensorProto.DataType;

function patch(edits: { layer: number; neuron: number; delta: number[] }[], enabled = true): Patch {
  return {
    id: newPatchId(),
    createdAt: isoNow(),
    enabled,
    method: 'minimal',
    case: { prompt: 'def f(x):\n    return', desired: ' x', before: ' None', after: ' x' },
    edits,
    metrics: { success: true, failingTokens: 1, specificity: 1, meanKl: 0, generalization: null, repairMs: 10 },
  };
}

/** sha256 of every file under a folder, by relative path. */
function hashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else out[r] = createHash('sha256').update(fs.readFileSync(path.join(dir, r))).digest('hex');
    }
  };
  walk('');
  return out;
}

function site(model: onnx.IModelProto, layer: number, node: onnx.INodeProto, layout: 'rows' | 'cols' = 'rows'): FfnSite {
  const name = node.input![1];
  return {
    layer,
    node: node.name ?? '',
    activation: node.input![0],
    output: node.output![0],
    weight: { name, dims: tensorDims(findInitializer(model, name)!), layout },
    activationOp: 'Mul',
    gated: true,
  };
}

/** A copy of a model (and its external data) with extra graph outputs, to look inside both models. */
async function probe(srcDir: string, file: string, outputs: { name: string; elemType: number }[], dest: string): Promise<string> {
  const model = await loadModelProto(path.join(srcDir, file));
  for (const o of outputs) model.graph!.output!.push(onnx.ValueInfoProto.create({ name: o.name, type: { tensorType: { elemType: o.elemType } } }));
  fs.mkdirSync(dest, { recursive: true });
  for (const t of model.graph!.initializer!) {
    const ref = externalRef(t, srcDir);
    if (ref && !fs.existsSync(path.join(dest, ref.location))) fs.copyFileSync(ref.file, path.join(dest, ref.location));
  }
  await saveModelProto(model, path.join(dest, file));
  return path.join(dest, file);
}

async function run(file: string, feeds: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(file);
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.type === 'float16' ? f16ToF32(t.data as Uint16Array) : (t.data as Float32Array)]));
  } finally {
    await session.release();
  }
}

const maxAbsDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/**
 * The fp16 folders with external data: the committed tiny-qwen2-fp16 (test/fixtures, present on every clone) and
 * onnxruntime-genai's LLaMA (../shared/fixtures, beside the project's own checkouts only). Everything below is read
 * from the graph: the down_proj MatMuls, their weights and dims, the edited neuron (the largest activation at the
 * last position).
 */
const FP16_EXTERNAL: { entry: ModelEntry; onnx: string; data: string; ids: number[] }[] = [
  { entry: entry('tiny-qwen2-fp16'), onnx: 'model.onnx', data: 'model.onnx.data', ids: [0, 5, 99, 123, 7, 319] },
  { entry: entry('ortgenai-tiny-llama-fp16'), onnx: 'model.onnx', data: 'model.onnx.data', ids: [0, 5, 99, 1234, 7, 31999] },
];

for (const fx of FP16_EXTERNAL) {
  const dir = fx.entry.dir;
  describe(`exportPatched on ${fx.entry.name} (fp16, external data)`, () => {
    let tmp: string;
    let model: onnx.ModelProto;
    let sites: FfnSite[];
    let sourceHashes: Record<string, string>;
    let out: string;
    let result: { outDir: string; files: string[] };
    let neuron: number;
    let width: number;
    let neurons: number;
    let delta: number[];
    let feeds: () => Record<string, ort.Tensor>;
    const T = fx.ids.length;
    const weightOf = (l: number): string => sites[l].weight.name;

    /** Skips (in CI: fails, for the committed folder) when the folder is absent; true when the test can run. */
    const ready = (t: TestContext): boolean => !skipIfAbsent(t, fx.entry) && !!result;

    before(async () => {
      if (absence(fx.entry)) return;
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'np-export-'));
      model = await loadModelProto(path.join(dir, fx.onnx));
      const layers = model.graph!.node!.filter((n) => /^\/model\/layers\.\d+\/mlp\/down_proj\/MatMul$/.test(n.name ?? ''));
      assert.ok(layers.length >= 2, 'two or more down_proj MatMuls');
      sites = layers.map((n, l) => site(model, l, n));
      [neurons, width] = sites[0].weight.dims;
      const session = await ort.InferenceSession.create(path.join(dir, fx.onnx));
      feeds = () => plainFeeds(session, [fx.ids]);
      // The edited neuron: the largest |activation| entering layer 0's down_proj at the last position.
      const z = (await run(await probe(dir, fx.onnx, [{ name: sites[0].activation, elemType: FLOAT16 }], path.join(tmp, 'probe-pick')), feeds()))[sites[0].activation];
      neuron = argmax(Float32Array.from(z.subarray((T - 1) * neurons, T * neurons), Math.abs));
      delta = Array.from({ length: width }, (_, i) => (i % 2 ? -1 : 1) * (0.25 + i / (2 * width)));
      sourceHashes = hashes(dir);
      out = path.join(tmp, 'patched');
      result = await exportPatched({
        sourceFolder: dir,
        onnxPath: fx.onnx,
        graph: { sites },
        patches: [patch([{ layer: 0, neuron, delta }]), patch([{ layer: 1, neuron: 3, delta: delta.map((v) => v * 100) }], false)],
        outDir: out,
      });
    });
    after(() => tmp && fs.rmSync(tmp, { recursive: true, force: true }));

    it('writes the folder: model, new external data, the other files, PATCHES.md; nothing else', (t) => {
      if (!ready(t)) return;
      assert.equal(result.outDir, out);
      // Everything but the unpatched model's reference logits (they describe other weights).
      assert.deepEqual(result.files, [...fs.readdirSync(dir).filter((f) => f !== 'reference_logits.json'), 'PATCHES.md'].sort());
      assert.ok(result.files.includes(fx.data), 'the external data file is written');
      assert.ok(!fs.readdirSync(tmp).some((f) => f.includes('.tmp-')), 'no temp folder is left beside it');
      for (const f of result.files.filter((f) => f.endsWith('.json'))) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(dir, f))), f);
      const md = fs.readFileSync(path.join(out, 'PATCHES.md'), 'utf8');
      assert.match(md, /^# Patches baked into this model/);
      assert.match(md, /1 neuronpatch patch baked into/);
      assert.match(md, new RegExp(`Neurons edited: layer 0: ${neuron}\\.`));
      assert.doesNotMatch(md, /L1\.N3/, 'the disabled patch is not baked in');
      assert.doesNotMatch(md, /MODEL_CARD/, 'the source has no model card');
    });

    it('removes its temp folder when the source turns out to be truncated', async (t) => {
      if (!ready(t)) return;
      const broken = path.join(tmp, 'broken-src');
      fs.mkdirSync(broken);
      fs.copyFileSync(path.join(dir, fx.onnx), path.join(broken, fx.onnx));
      // Cut the data file one byte short of the end of the weight the patch edits.
      const { offset, length } = externalRef(findInitializer(model, weightOf(0))!, dir)!;
      const cut = offset + length - 1;
      fs.writeFileSync(path.join(broken, fx.data), fs.readFileSync(path.join(dir, fx.data)).subarray(0, cut));
      await assert.rejects(
        exportPatched({ sourceFolder: broken, onnxPath: fx.onnx, graph: { sites }, patches: [patch([{ layer: 0, neuron, delta }])], outDir: path.join(tmp, 'never') }),
        new RegExp(`initializer "${weightOf(0).replace(/\./g, '\\.')}": its external data ends at byte ${cut + 1}, but .* has only ${cut} bytes`),
      );
      assert.deepEqual(fs.readdirSync(tmp).sort(), ['broken-src', 'patched', 'probe-pick']);
      fs.rmSync(broken, { recursive: true });
    });

    it('leaves the source folder byte for byte as it was', (t) => {
      if (!ready(t)) return;
      assert.deepEqual(hashes(dir), sourceHashes);
    });

    it('changes exactly the edited row of down_proj, by the delta in fp16, and no other byte', async (t) => {
      if (!ready(t)) return;
      // The .onnx itself is unchanged (its external data locations are relative); the data file differs only in the row.
      assert.ok(fs.readFileSync(path.join(out, fx.onnx)).equals(fs.readFileSync(path.join(dir, fx.onnx))));
      const exported = await loadModelProto(path.join(out, fx.onnx));
      const name = weightOf(0);
      const w = findInitializer(exported, name)!;
      assert.equal(w.dataType, FLOAT16);
      const { offset } = externalRef(w, out)!;
      const a = fs.readFileSync(path.join(dir, fx.data));
      const b = fs.readFileSync(path.join(out, fx.data));
      assert.equal(b.length, a.length);
      const rowStart = offset + neuron * width * 2;
      const rowEnd = rowStart + width * 2;
      assert.ok(a.subarray(0, rowStart).equals(b.subarray(0, rowStart)), 'bytes before the row are identical');
      assert.ok(a.subarray(rowEnd).equals(b.subarray(rowEnd)), 'bytes after the row are identical');
      assert.ok(!a.subarray(rowStart, rowEnd).equals(b.subarray(rowStart, rowEnd)), 'the row changed');
      const before = readTensor(findInitializer(model, name)!, dir);
      const afterW = readTensor(w, out);
      for (let i = 0; i < width; i++) {
        const k = neuron * width + i;
        const want = before[k] + delta[i];
        assert.ok(Math.abs(afterW[k] - want) <= Math.abs(want) * 2 ** -11, `element ${i}: ${afterW[k]} vs ${want}`);
      }
      for (const init of exported.graph!.initializer!)
        if (init.name !== name) assert.deepEqual(readTensor(init, out), readTensor(findInitializer(model, init.name!)!, dir), init.name!);
    });

    it('runs in onnxruntime: the layer-0 FFN output moves by z_j·Δv_j, layer 0 attention is untouched, logits move', async (ctx) => {
      if (!ready(ctx)) return;
      const z = sites[0].activation;
      const y = sites[0].output;
      const extra = [z, y].map((name) => ({ name, elemType: FLOAT16 }));
      const src = await run(await probe(dir, fx.onnx, extra, path.join(tmp, 'probe-src')), feeds());
      const exp = await run(await probe(out, fx.onnx, extra, path.join(tmp, 'probe-exp')), feeds());
      // The exported model itself, unmodified, gives the same logits as its probe.
      const plain = await run(path.join(out, fx.onnx), feeds());
      assert.deepEqual(plain.logits, exp.logits);

      assert.deepEqual(exp[z], src[z], 'the activations entering the edited projection are unchanged');
      assert.deepEqual(exp['present.0.key'], src['present.0.key'], 'layer 0 attention runs before the edit');
      assert.deepEqual(exp['present.0.value'], src['present.0.value']);
      const w0 = readTensor(findInitializer(model, weightOf(0))!, dir);
      const w1 = readTensor(findInitializer(await loadModelProto(path.join(out, fx.onnx)), weightOf(0))!, out);
      let worst = 0;
      let moved = 0;
      for (let t = 0; t < T; t++) {
        const zj = src[z][t * neurons + neuron];
        for (let i = 0; i < width; i++) {
          const expected = zj * (w1[neuron * width + i] - w0[neuron * width + i]);
          const got = exp[y][t * width + i] - src[y][t * width + i];
          const tol = (Math.abs(exp[y][t * width + i]) + Math.abs(src[y][t * width + i])) * 2 ** -10 + 1e-7; // fp16 outputs
          worst = Math.max(worst, Math.abs(got - expected) / tol);
          moved = Math.max(moved, Math.abs(got));
        }
      }
      ctx.diagnostic(`${fx.entry.name}: neuron ${neuron}; FFN output change vs z_j·Δv_j: worst ${worst.toFixed(3)}× the fp16 tolerance; largest change ${moved.toExponential(2)}`);
      assert.ok(worst <= 1, `FFN output change off by ${worst.toFixed(2)}× the fp16 tolerance`);
      assert.ok(moved > 1e-3, `the FFN output moved by up to ${moved}`);
      assert.ok(maxAbsDiff(exp['present.1.key'], src['present.1.key']) > 0, 'layer 1 sees the edited residual stream');
      const dl = maxAbsDiff(exp.logits, src.logits);
      ctx.diagnostic(`largest logit change ${dl.toExponential(2)}`);
      assert.ok(dl > 1e-3, `logits moved by up to ${dl}`);
    });
  });
}

describe('exportPatched on the fp32 GPT-2 with raw_data', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'np-export-gpt2-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('patches the weight in place in the .onnx bytes, and the last layer FFN output moves by z_j·Δv_j', async (t) => {
    if (skipIfAbsent(t, entry('ortgenai-tiny-gpt2-fp32'))) return;
    const model = await loadModelProto(path.join(gpt2Dir, 'past.onnx'));
    const nodes = model.graph!.node!;
    const producer = new Map(nodes.flatMap((n) => n.output!.map((o) => [o, n] as const)));
    // The FFN output projection found by structure: the MatMul fed by FastGelu, in graph order = layer order.
    const projections = nodes.filter((n) => n.opType === 'MatMul' && producer.get(n.input![0])?.opType === 'FastGelu');
    assert.equal(projections.length, 5);
    const sites = projections.map((n, l) => ({ ...site(model, l, n), activationOp: 'FastGelu', gated: false }));
    const before = hashes(gpt2Dir);
    const neuron = 77;
    const delta = Array.from({ length: 32 }, (_, i) => Math.sin(i + 1) / 2);
    const out = path.join(tmp, 'out');
    const { files } = await exportPatched({ sourceFolder: gpt2Dir, onnxPath: path.join(gpt2Dir, 'past.onnx'), graph: { sites }, patches: [patch([{ layer: 4, neuron, delta }])], outDir: out });
    assert.deepEqual(files, ['PATCHES.md', 'genai_config.json', 'past.onnx', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']);
    assert.deepEqual(hashes(gpt2Dir), before);

    // Same length, and only the edited row's 128 bytes differ.
    const a = fs.readFileSync(path.join(gpt2Dir, 'past.onnx'));
    const b = fs.readFileSync(path.join(out, 'past.onnx'));
    assert.equal(b.length, a.length);
    const { model: srcModel, bytes } = await loadModel(path.join(gpt2Dir, 'past.onnx'));
    const w = findInitializer(srcModel, sites[4].weight.name)!;
    const rowStart = w.rawData!.byteOffset - bytes.byteOffset + neuron * 32 * 4;
    assert.ok(a.subarray(0, rowStart).equals(b.subarray(0, rowStart)));
    assert.ok(a.subarray(rowStart + 128).equals(b.subarray(rowStart + 128)));
    const w0 = readTensor(w, gpt2Dir);
    const w1 = readTensor(findInitializer(await loadModelProto(path.join(out, 'past.onnx')), sites[4].weight.name)!, out);
    for (let i = 0; i < 32; i++) assert.equal(w1[neuron * 32 + i], Math.fround(w0[neuron * 32 + i] + delta[i]));

    const T = 5;
    const feeds = (): Record<string, ort.Tensor> => {
      const f: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int32', Int32Array.from([1, 20, 300, 4, 999]), [1, T]),
        position_ids: new ort.Tensor('int32', Int32Array.from({ length: T }, (_, i) => i), [1, T]),
        attention_mask: new ort.Tensor('int32', new Int32Array(T).fill(1), [1, T]),
      };
      for (let l = 0; l < 5; l++) f[`past_${l}`] = new ort.Tensor('float32', new Float32Array(0), [2, 1, 4, 0, 8]);
      return f;
    };
    const z = sites[4].activation;
    const y = sites[4].output;
    const extra = [z, y].map((name) => ({ name, elemType: FLOAT }));
    const src = await run(await probe(gpt2Dir, 'past.onnx', extra, path.join(tmp, 'probe-src')), feeds());
    const exp = await run(await probe(out, 'past.onnx', extra, path.join(tmp, 'probe-exp')), feeds());
    for (let l = 0; l < 5; l++) assert.deepEqual(exp[`present_${l}`], src[`present_${l}`], `layer ${l} attention runs before the edited FFN`);
    assert.deepEqual(exp[z], src[z]);
    for (let t = 0; t < T; t++) {
      const zj = src[z][t * 128 + neuron];
      for (let i = 0; i < 32; i++) {
        const got = exp[y][t * 32 + i] - src[y][t * 32 + i];
        const want = zj * (w1[neuron * 32 + i] - w0[neuron * 32 + i]);
        assert.ok(Math.abs(got - want) <= 1e-5 * (1 + Math.abs(exp[y][t * 32 + i])), `t=${t} i=${i}: ${got} vs ${want}`);
      }
    }
    assert.ok(maxAbsDiff(exp.logits, src.logits) > 1e-4);
  });
});

describe('exportPatched on a model with typed-field weights', () => {
  let tmp: string;
  let source: string;
  const m = 6;
  const d = 4;
  const w = Float32Array.from({ length: m * d }, (_, k) => ((k * 7) % 11) / 10 - 0.5);

  /** proj(z) with W_out stored as float_data [d, m] (Gemm transB: 'cols') or fp16 int32_data [m, d] (MatMul: 'rows'). */
  function build(kind: 'cols-f32' | 'rows-f16'): onnx.ModelProto {
    const f16 = kind === 'rows-f16';
    const elemType = f16 ? FLOAT16 : FLOAT;
    const weight = f16
      ? onnx.TensorProto.create({ name: 'W', dims: [m, d], dataType: FLOAT16, int32Data: Array.from(f32ToF16(w)) })
      : onnx.TensorProto.create({ name: 'W', dims: [d, m], dataType: FLOAT, floatData: Array.from({ length: m * d }, (_, k) => w[(k % m) * d + Math.floor(k / m)]) });
    const node = f16
      ? onnx.NodeProto.create({ name: 'proj', opType: 'MatMul', input: ['z', 'W'], output: ['y'] })
      : onnx.NodeProto.create({ name: 'proj', opType: 'Gemm', input: ['z', 'W'], output: ['y'], attribute: [{ name: 'transB', type: onnx.AttributeProto.AttributeType.INT, i: 1 }] });
    const io = (name: string, dims: number[]): onnx.IValueInfoProto => ({ name, type: { tensorType: { elemType, shape: { dim: dims.map((v) => ({ dimValue: v })) } } } });
    return onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      producerName: 'neuronpatch-test',
      graph: { name: 'proj', node: [node], initializer: [weight], input: [io('z', [3, m])], output: [io('y', [3, d])] },
    });
  }

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'np-export-fields-'));
    source = path.join(tmp, 'src');
    for (const [f, text] of Object.entries({
      'config.json': '{"model_type": "test"}',
      'tokenizer.json': '{}',
      'MODEL_CARD.md': '# the unpatched model',
      'PATCHES.md': '# Patches baked into this model\n\nan earlier export',
      'other.onnx': 'x',
      'other.onnx_data': 'x',
      'onnx/model.onnx_data': 'stale weights of onnx/model.onnx, which keeps them inside',
      '.git/HEAD': 'ref',
      'sub/vocab.txt': 'a\nb',
    })) {
      fs.mkdirSync(path.dirname(path.join(source, f)), { recursive: true });
      fs.writeFileSync(path.join(source, f), text);
    }
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  for (const kind of ['cols-f32', 'rows-f16'] as const) {
    it(`${kind}: re-encodes the model with the edited values, which onnxruntime runs`, async () => {
      const dir = path.join(tmp, kind);
      fs.cpSync(source, dir, { recursive: true });
      await saveModelProto(build(kind), path.join(dir, 'onnx', 'model.onnx'));
      const before = hashes(dir);
      const f16 = kind === 'rows-f16';
      const sites: FfnSite[] = [{ layer: 0, node: 'proj', activation: 'z', output: 'y', weight: { name: 'W', dims: f16 ? [m, d] : [d, m], layout: f16 ? 'rows' : 'cols' }, activationOp: 'Mul', gated: false }];
      const j = 2;
      const delta = [0.5, -0.25, 1, 0.125];
      const out = path.join(tmp, `${kind}-out`);
      fs.mkdirSync(out); // an existing empty folder is fine
      const { files } = await exportPatched({ sourceFolder: dir, onnxPath: 'onnx/model.onnx', graph: { sites }, patches: [patch([{ layer: 0, neuron: j, delta }])], outDir: out });
      assert.deepEqual(files, ['PATCHES.md', 'config.json', path.join('onnx', 'model.onnx'), path.join('sub', 'vocab.txt'), 'tokenizer.json']);
      assert.deepEqual(hashes(dir), before);
      const md = fs.readFileSync(path.join(out, 'PATCHES.md'), 'utf8');
      assert.match(md, /its PATCHES\.md follows\.\n\n# Patches baked into this model\n\nan earlier export\n$/);
      assert.match(md, /The source MODEL_CARD\.md was not copied/);
      assert.match(md, /baked into `onnx\/model\.onnx`/);
      assert.match(md, /Edited neurons \(fp(16|32) FFN output weights\)/);

      const exported = await loadModelProto(path.join(out, 'onnx', 'model.onnx'));
      const t = findInitializer(exported, 'W')!;
      assert.equal(f16 ? t.int32Data!.length : t.floatData!.length, m * d, 'stored in its own fields');
      const values = readTensor(t, out);
      const orig = readTensor(findInitializer(build(kind), 'W')!, dir);
      for (let k = 0; k < m * d; k++) {
        const [row, col] = f16 ? [Math.floor(k / d), k % d] : [k % m, Math.floor(k / m)]; // (neuron, dim)
        const want = row === j ? orig[k] + delta[col] : orig[k];
        if (f16) assert.ok(Math.abs(values[k] - want) <= Math.abs(want) * 2 ** -11, `${k}`);
        else assert.equal(values[k], Math.fround(want), `${k}`);
      }

      const zs = Float32Array.from({ length: 3 * m }, (_, k) => (k % 5) - 1.5);
      const input = f16 ? new ort.Tensor('float16', f32ToF16(zs), [3, m]) : new ort.Tensor('float32', zs, [3, m]);
      const a = (await run(path.join(dir, 'onnx', 'model.onnx'), { z: input })).y;
      const b = (await run(path.join(out, 'onnx', 'model.onnx'), { z: input })).y;
      for (let n = 0; n < 3; n++)
        for (let i = 0; i < d; i++) {
          const got = b[n * d + i] - a[n * d + i];
          const want = zs[n * m + j] * delta[i];
          const tol = f16 ? (Math.abs(a[n * d + i]) + Math.abs(b[n * d + i])) * 2 ** -10 + 1e-6 : 1e-6;
          assert.ok(Math.abs(got - want) <= tol, `row ${n} dim ${i}: ${got} vs ${want}`);
        }
    });
  }

  it('refuses bad destinations and patches that do not fit, leaving nothing behind', async () => {
    const dir = path.join(tmp, 'refuse');
    fs.cpSync(source, dir, { recursive: true });
    await saveModelProto(build('cols-f32'), path.join(dir, 'model.onnx'));
    const before = hashes(dir);
    const sites: FfnSite[] = [{ layer: 0, node: 'proj', activation: 'z', output: 'y', weight: { name: 'W', dims: [d, m], layout: 'cols' }, activationOp: 'Mul', gated: false }];
    const good = patch([{ layer: 0, neuron: 1, delta: [1, 2, 3, 4] }]);
    const base = { sourceFolder: dir, onnxPath: 'model.onnx', graph: { sites }, patches: [good] };
    const full = path.join(tmp, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'keep.txt'), 'mine');
    const cases: [Partial<Parameters<typeof exportPatched>[0]>, RegExp][] = [
      [{ outDir: dir }, /it is the source model folder/],
      [{ outDir: path.join(dir, 'patched') }, /inside the source model folder/],
      [{ outDir: full }, /the folder exists and is not empty/],
      [{ outDir: path.join(dir, 'config.json') }, /inside the source model folder/],
      [{ outDir: path.join(tmp, 'x1'), patches: [patch(good.edits, false)] }, /No enabled patches to export/],
      [{ outDir: path.join(tmp, 'x2'), patches: [patch([{ layer: 3, neuron: 0, delta: [1, 2, 3, 4] }])] }, /edit layer 3, but the model has FFN sites only for layers 0/],
      [{ outDir: path.join(tmp, 'x3'), patches: [patch([{ layer: 0, neuron: 6, delta: [1, 2, 3, 4] }])] }, /neuron 6 of layer 0, which has 6 neurons/],
      [{ outDir: path.join(tmp, 'x4'), patches: [patch([{ layer: 0, neuron: 0, delta: [1, 2, 3] }])] }, /deltas have 3 numbers, but the model's residual width is 4/],
      [{ outDir: path.join(tmp, 'x5'), graph: { sites: [{ ...sites[0], weight: { ...sites[0].weight, name: 'W_q' } }] } }, /weight "W_q" is not an initializer of model\.onnx/],
      [{ outDir: path.join(tmp, 'x6'), onnxPath: '../elsewhere.onnx' }, /is not inside the model folder/],
      [{ outDir: path.join(tmp, 'x7'), onnxPath: 'missing.onnx' }, /ONNX model not found/],
    ];
    const listing = fs.readdirSync(tmp).sort();
    for (const [over, re] of cases) {
      await assert.rejects(exportPatched({ ...base, outDir: '', ...over }), (e: unknown) => e instanceof NeuronpatchError && re.test(e.message), String(re));
    }
    assert.deepEqual(fs.readdirSync(tmp).sort(), listing, 'no temp or output folder was left');
    assert.deepEqual(fs.readdirSync(full), ['keep.txt']);
    assert.deepEqual(hashes(dir), before);
  });
});
