// The instrumented graph against the model it was made from, on every model folder present:
// - with neutral interventions it reproduces a plain onnxruntime session on the ORIGINAL file;
// - ablating neuron (l, j) takes exactly z_j·v_j out of the FFN output (checked on the final residual for the last
//   layer, and on the layer's own activations for every layer), per example;
// - a patch fed through the edit inputs gives the logits of a model file whose W_out was edited;
// - per-example edits in a batch give what separate runs give.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { type Model, NeuronpatchError, type Patch } from '../../src/engine';
import { exportPatched } from '../../src/engine/export/export';
import { logSumExp } from '../../src/engine/linalg';
import type { LayerEdits } from '../../src/engine/model/session';
import { findInitializer, loadModel as loadOnnx, onnx } from '../../src/engine/onnx/proto';
import { combine } from '../../src/engine/patches/patchset';
import { readTensor, tensorDims, writeTensorData } from '../../src/engine/onnx/tensor';
import { loadModel } from '../../src/engine';
import {
  copyModelFolder, folderHashes, gaussian, logitTolerance, maxAbs, maxAbsDiff, MODELS, modelOf, plainLoadError, plainLogits, releaseAll, sampleIds,
  tempDir, testCacheDir, type ModelEntry,
} from '../helpers/models';

after(releaseAll);

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const fp16 = (m: Model): boolean => m.info.weightType === 'float16';

/**
 * Tolerance of a comparison of two computations whose values reach `scale` in magnitude: float32 rounding, or for
 * an fp16 model a few units in the last place of fp16 at that magnitude (its outputs are rounded to fp16).
 */
const tolerance = (m: Model, scale: number, fp16Ulps = 4): number =>
  fp16(m) ? fp16Ulps * 2 ** (Math.floor(Math.log2(Math.max(scale, 2 ** -14))) - 10) : 1e-5 * Math.max(1, scale);
/** Tolerance of two logit computations that differ in where a patch is applied (inputs or weights). */
const patchTolerance = (m: Model, logits: Float32Array): number => (fp16(m) ? tolerance(m, maxAbs(logits), 8) : 1e-4);
/**
 * Tolerance of an ablation against a file whose v_j are zero: z·0 and a zero column are both exact, so only the
 * graphs' summation order differs (measured: no difference at all on every model here); 2 fp16 ulps, or fp32's.
 */
const ablationTolerance = (m: Model, logits: Float32Array): number => (fp16(m) ? tolerance(m, maxAbs(logits), 2) : 1e-4);
/** Deltas of a few times the weights' own scale move fp32 logits visibly; fp16 ones need more to clear fp16 rounding. */
const deltaScale = (m: Model): number => (fp16(m) ? 40 : 4);

/** A patch's edits as the session consumes them: per layer, neuron indices and K×d deltas. */
/** Root-mean-square of a layer's W_out entries: the scale of a delta that visibly moves the logits. */
function weightRms(m: Model, layer: number): number {
  const w = m.loaded.weights.valueVectors(layer);
  let s = 0;
  for (const x of w) s += x * x;
  return Math.sqrt(s / w.length);
}

/**
 * Writes a copy of the model folder whose W_out columns carry the edits, through onnx-proto and the tensor
 * reader/writer only: the stored layout is worked out here from the initializer's dims.
 */
async function editedCopy(e: ModelEntry, m: Model, edits: { layer: number; neuron: number; delta: Float32Array }[]): Promise<string> {
  const dir = copyModelFolder(e, 'edited');
  const file = path.join(dir, path.relative(e.dir, m.loaded.onnxPath));
  const { model, bytes } = await loadOnnx(file);
  const { neurons, width } = m.info;
  let reencode = false;
  for (const layer of new Set(edits.map((x) => x.layer))) {
    const site = m.loaded.graph.sites[layer];
    const t = findInitializer(model, site.weight.name);
    assert.ok(t, `layer ${layer}: initializer ${site.weight.name} is in the graph`);
    const dims = tensorDims(t);
    const rows = dims[0] === neurons && dims[1] === width;
    assert.ok(rows || (dims[0] === width && dims[1] === neurons), `layer ${layer}: W_out dims [${dims}] fit ${neurons}×${width}`);
    assert.equal(site.weight.layout, rows ? 'rows' : 'cols', `layer ${layer}: the engine's W_out layout`);
    const values = readTensor(t, path.dirname(file));
    for (const x of edits.filter((y) => y.layer === layer)) {
      for (let i = 0; i < width; i++) values[rows ? x.neuron * width + i : i * neurons + x.neuron] += x.delta[i];
    }
    const storage = writeTensorData(t, values, path.dirname(file));
    if (storage === 'fields' || (storage === 'raw' && t.rawData!.buffer !== bytes.buffer)) reencode = true;
  }
  fs.writeFileSync(file, reencode ? onnx.ModelProto.encode(model).finish() : bytes);
  return dir;
}

/** Two edits, in the first and the last layer, on strongly active neurons, with deltas of the weights' own scale. */
function chosenEdits(m: Model, z: Map<number, Float32Array>, seed: number): { layer: number; neuron: number; delta: Float32Array }[] {
  const { layers, width, neurons } = m.info;
  return [...new Set([0, layers - 1])].map((layer, k) => {
    const act = z.get(layer)!;
    let neuron = 0;
    for (let i = 0; i < act.length; i++) if (Math.abs(act[i]) > Math.abs(act[neuron])) neuron = i;
    neuron %= neurons;
    return { layer, neuron, delta: gaussian(width, seed + k, deltaScale(m) * weightRms(m, layer)) };
  });
}

/** A 12-token sample, its forward with every layer's activations, chosen edits, and the forward with them. */
async function chosenPatch(m: Model, sample: number, seed: number) {
  const s = m.loaded.session;
  const ids = [sampleIds(m, 12, sample)];
  const base = await s.forward({ ids, activations: range(m.info.layers) });
  const edits = chosenEdits(m, base.activations, seed);
  const patched = await s.forward({ ids, edits: combine(undefined, edits, m.info.width) });
  return { ids, base, edits, patched };
}

for (const e of MODELS) {
  describe(e.name, () => {
    test('neutral instrumentation reproduces the plain model\'s logits', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, neurons, width, vocab } = m.info;
      const ids = [sampleIds(m, 16, 1), sampleIds(m, 16, 7)];
      const res = await s.forward({ ids, residual: true, activations: range(layers) });
      assert.equal(res.logits.length, 2 * 16 * vocab);
      assert.equal(res.residual?.length, 2 * 16 * width);
      for (const L of range(layers)) assert.equal(res.activations.get(L)?.length, 2 * 16 * neurons, `blocks.${L}.mlp.post`);
      const plain = await plainLogits(m.loaded.onnxPath, ids);
      const diff = maxAbsDiff(res.logits, plain);

      // Left-padded rows of different lengths, as batched generation feeds them.
      const short = sampleIds(m, 9, 3);
      const padded = [sampleIds(m, 16, 1), [...new Array<number>(7).fill(short[0]), ...short]];
      const mask = [new Array<number>(16).fill(1), [...new Array<number>(7).fill(0), ...new Array<number>(9).fill(1)]];
      const resPad = await s.forward({ ids: padded, mask });
      const plainPad = await plainLogits(m.loaded.onnxPath, padded, mask);
      // Only the real positions of the padded row mean anything.
      const real = (a: Float32Array) => Float32Array.from([...a.subarray(0, 16 * vocab), ...a.subarray((16 + 7) * vocab)]);
      const diffPad = maxAbsDiff(real(resPad.logits), real(plainPad));
      t.diagnostic(`${e.name}: max |logit(instrumented) − logit(plain)| = ${diff.toExponential(2)} (batch 2×16), ` +
        `${diffPad.toExponential(2)} (left-padded batch); logits reach ${maxAbs(plain).toFixed(2)}` +
        (plainLoadError(m.loaded.onnxPath) ? `; the plain session runs unoptimized: ${plainLoadError(m.loaded.onnxPath)}` : ''));
      const tol = logitTolerance(m);
      assert.ok(diff < tol, `max abs diff ${diff} ≥ ${tol}`);
      assert.ok(diffPad < tol, `left-padded: max abs diff ${diffPad} ≥ ${tol}`);
    });

    test('lastOnly gives the full forward\'s last-position logits, with their log-sum-exp and the same cache', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const V = m.info.vocab;
      const T = 12;
      const ids = [sampleIds(m, T, 4), sampleIds(m, T, 5)];
      const full = await s.forward({ ids, cache: true });
      const last = await s.forward({ ids, cache: true, lastOnly: true });
      assert.equal(last.logits.length, 2 * V);
      assert.equal(last.logSumExp?.length, 2);
      let worstLogit = 0;
      let worstLse = 0;
      for (let b = 0; b < 2; b++) {
        const row = full.logits.subarray((b * T + T - 1) * V, (b * T + T) * V);
        worstLogit = Math.max(worstLogit, maxAbsDiff(row, last.logits.subarray(b * V, (b + 1) * V)));
        const lse = logSumExp(row, 0, V);
        worstLse = Math.max(worstLse, Math.abs(lse - last.logSumExp![b]) / Math.max(1, Math.abs(lse)));
      }
      const cacheDiff = Math.max(...full.cache!.tensors.map((x, i) => maxAbsDiff(x.data as ArrayLike<number>, last.cache!.tensors[i].data as ArrayLike<number>)));
      t.diagnostic(`${e.name}: lastOnly vs full: max |Δ logit| ${worstLogit.toExponential(2)}, relative |Δ log-sum-exp| ${worstLse.toExponential(2)}`);
      assert.ok(worstLogit < logitTolerance(m), `last-position logits differ by ${worstLogit}`);
      assert.ok(worstLse < 1e-6, `log-sum-exp differs by ${worstLse} (relative)`);
      assert.equal(cacheDiff, 0, 'the same KV cache');
    });

    test('logitsFrom gives the full forward\'s logits of the later positions', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const V = m.info.vocab;
      const T = 12;
      const from = 7;
      const ids = [sampleIds(m, T, 6), sampleIds(m, T, 7)];
      const full = await m.loaded.session.forward({ ids });
      const some = await m.loaded.session.forward({ ids, logitsFrom: from });
      assert.equal(some.logitPositions, T - from);
      assert.equal(some.logitsFrom, from);
      assert.equal(some.logits.length, 2 * (T - from) * V);
      let worst = 0;
      for (let b = 0; b < 2; b++) worst = Math.max(worst, maxAbsDiff(full.logits.subarray((b * T + from) * V, (b + 1) * T * V), some.logits.subarray(b * (T - from) * V, (b + 1) * (T - from) * V)));
      assert.ok(worst < logitTolerance(m), `logits differ by ${worst}`);
    });

    test('ablating a last-layer neuron takes exactly z_j·v_j out of the final residual, in its example only', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, neurons, width } = m.info;
      const L = layers - 1;
      const T = 12;
      const ids = [sampleIds(m, T, 2), sampleIds(m, T, 2)];
      const base = await s.forward({ ids, residual: true, activations: [L] });
      const z = base.activations.get(L)!;
      const r = base.residual!;
      // The neuron that writes the most into the residual of example 0.
      let j = 0;
      let best = -1;
      for (let n = 0; n < neurons; n++) {
        const v = maxAbs(m.loaded.weights.valueVector(L, n, width));
        for (let p = 0; p < T; p++) {
          const w = Math.abs(z[p * neurons + n]) * v;
          if (w > best) [best, j] = [w, n];
        }
      }
      const v = m.loaded.weights.valueVector(L, j, width);
      const tol = tolerance(m, maxAbs(r));
      // Scale 0 is the ablation; 2 and 50 check the same linear term where it stands far above rounding (an fp16
      // model's small writes are at the resolution of its fp16 residual).
      const scales = [0, 2, 50];
      assert.ok(49 * best > 20 * tol, `the chosen neuron's write (${best}) is well above the tolerance ${tol}`);

      for (const scale of scales) {
        const abl = await s.forward({ ids, residual: true, activations: [L], ablations: [{ example: 0, layer: L, neurons: [j], scale }] });
        let err = 0;
        for (let p = 0; p < T; p++) {
          const zj = z[p * neurons + j];
          for (let i = 0; i < width; i++) {
            const expected = r[p * width + i] + (scale - 1) * zj * v[i];
            err = Math.max(err, Math.abs(abl.residual![p * width + i] - expected));
          }
        }
        const other = maxAbsDiff(abl.residual!.subarray(T * width), r.subarray(T * width));
        const post = abl.activations.get(L)!;
        // The scaled residual is compared at its own magnitude: scale 50 makes it larger than r (fp16 rounds coarser).
        const tolScaled = tolerance(m, Math.max(maxAbs(r), maxAbs(abl.residual!.subarray(0, T * width))));
        t.diagnostic(`${e.name}: layer ${L} neuron ${j} scaled by ${scale}: max |Δr − (${scale}−1)·z_j·v_j| = ${err.toExponential(2)} ` +
          `(|z_j·v_j| up to ${best.toFixed(3)}, tolerance ${tolScaled.toExponential(1)}); other example moved ${other.toExponential(2)}`);
        assert.ok(err < tolScaled, `residual differs from r + (s−1)·z_j·v_j by ${err} (tolerance ${tolScaled})`);
        assert.ok(other <= tol / 10, `the other example's residual moved by ${other}`);
        // z·0 and z·2 are exact in fp32 and fp16 alike: the exposed activation is exactly the scaled one.
        if (scale === 0 || scale === 2) {
          for (let p = 0; p < T; p++) assert.equal(post[p * neurons + j] + 0, scale * z[p * neurons + j] + 0, `post at position ${p}`);
        }
      }
    });

    test('an ablation silences its own neuron (or layer) and nothing upstream, per example, in every layer', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, neurons } = m.info;
      const T = 8;
      const ids = [sampleIds(m, T, 4), sampleIds(m, T, 5), sampleIds(m, T, 6)];
      const all = range(layers);
      const base = await s.forward({ ids, activations: all });
      const per = T * neurons;
      for (const L of all) {
        const j = (17 * L + 5) % neurons;
        const res = await s.forward({
          ids, activations: all,
          ablations: [{ example: 0, layer: L, neurons: [j] }, { example: 1, layer: L }],
        });
        for (const K of all.filter((k) => k < L)) {
          assert.deepEqual(res.activations.get(K), base.activations.get(K), `layer ${K} < ${L} unchanged`);
        }
        const got = res.activations.get(L)!;
        const want = base.activations.get(L)!;
        for (let p = 0; p < T; p++) {
          for (let n = 0; n < neurons; n++) {
            const i = p * neurons + n;
            assert.equal(got[i] + 0, n === j ? 0 : want[i] + 0, `layer ${L}, example 0, position ${p}, neuron ${n}`);
            assert.equal(got[per + i] + 0, 0, `layer ${L}, example 1 (whole layer ablated), position ${p}, neuron ${n}`);
            assert.equal(got[2 * per + i], want[2 * per + i], `layer ${L}, example 2 (not ablated), position ${p}, neuron ${n}`);
          }
        }
      }
    });

    test('a patch through the edit inputs gives the logits of a model file whose W_out was edited', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const { ids, base, edits, patched } = await chosenPatch(m, 3, 11);
      const moved = maxAbsDiff(patched.logits, base.logits);

      const source = folderHashes(e.dir);
      const dir = await editedCopy(e, m, edits);
      const edited = await loadModel(dir, { cacheDir: testCacheDir() });
      try {
        assert.notEqual(edited.info.hash, m.info.hash, 'the edited file has another hash (and cache entry)');
        const fromFile = await edited.loaded.session.forward({ ids });
        const diff = maxAbsDiff(patched.logits, fromFile.logits);
        const tol = patchTolerance(m, patched.logits);
        t.diagnostic(`${e.name}: edits ${edits.map((x) => `(${x.layer}, ${x.neuron})`).join(' ')}: the patch moves logits by up to ` +
          `${moved.toFixed(3)}; max |logit(patch inputs) − logit(edited file)| = ${diff.toExponential(2)} (tolerance ${tol})`);
        assert.ok(moved > 20 * tol, `the patch must visibly move the logits (moved ${moved})`);
        assert.ok(diff <= tol, `patched logits differ from the edited file's by ${diff}`);
      } finally {
        await edited.dispose();
      }
      assert.deepEqual(folderHashes(e.dir), source, 'the source model folder is byte for byte untouched');
    });

    test('ablating neurons in early and late layers gives the logits of a model file whose v_j are zero', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, width } = m.info;
      const ids = [sampleIds(m, 12, 5)];
      const base = await s.forward({ ids, activations: range(layers) });
      // The most active neurons of the first and the last layer, by their peak |activation|: 16 of each where that
      // moves the logits far beyond the comparison's tolerance (below), else twice as many, up to every neuron (the
      // FFN of a random-weight model can write little into its logits).
      const ranked = [...new Set([0, layers - 1])].map((layer) => {
        const act = base.activations.get(layer)!;
        const peak = new Float64Array(m.info.neurons);
        for (let i = 0; i < act.length; i++) peak[i % m.info.neurons] = Math.max(peak[i % m.info.neurons], Math.abs(act[i]));
        return { layer, order: [...peak.keys()].sort((a, b) => peak[b] - peak[a]) };
      });
      let chosen: { layer: number; neuron: number }[] = [];
      let ablated = base;
      let moved = 0;
      for (let k = Math.min(16, m.info.neurons); ; k = Math.min(2 * k, m.info.neurons)) {
        chosen = ranked.flatMap(({ layer, order }) => order.slice(0, k).sort((a, b) => a - b).map((neuron) => ({ layer, neuron })));
        ablated = await s.forward({ ids, ablations: ranked.map(({ layer, order }) => ({ example: 0, layer, neurons: order.slice(0, k) })) });
        moved = maxAbsDiff(ablated.logits, base.logits);
        if (moved > 20 * ablationTolerance(m, ablated.logits) || k === m.info.neurons) break;
      }
      const zeroed = chosen.map((x) => ({ ...x, delta: Float32Array.from(m.loaded.weights.valueVector(x.layer, x.neuron, width), (v) => -v) }));
      const source = folderHashes(e.dir);
      const edited = await loadModel(await editedCopy(e, m, zeroed), { cacheDir: testCacheDir() });
      try {
        const diff = maxAbsDiff(ablated.logits, (await edited.loaded.session.forward({ ids })).logits);
        const tol = ablationTolerance(m, ablated.logits);
        t.diagnostic(`${e.name}: ablating ${chosen.length} neurons of layers ${[...new Set(chosen.map((x) => x.layer))].join(', ')} moves logits by up to ${moved.toExponential(2)}; ` +
          `max |logit(ablated) − logit(file with v_j = 0)| = ${diff.toExponential(2)} (tolerance ${tol.toExponential(1)})`);
        // Ablating strongly active neurons must move the logits far beyond the comparison's tolerance, or the
        // comparison below would pass for a graph that ignores the ablation.
        assert.ok(moved > 20 * tol, `the ablation must visibly move the logits (moved ${moved}, tolerance ${tol})`);
        assert.ok(diff <= tol, `ablated logits differ from the zeroed file's by ${diff}`);
      } finally {
        await edited.dispose();
      }
      assert.deepEqual(folderHashes(e.dir), source, 'the source model folder is byte for byte untouched');
    });

    test('export bakes a patch into a folder that reproduces the patched logits', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const { ids, base, edits, patched } = await chosenPatch(m, 3, 21);
      const patch: Patch = {
        id: 'p1', createdAt: new Date(0).toISOString(), enabled: true, method: 'minimal',
        case: { prompt: 'p', desired: 'd', before: 'b', after: 'd' },
        edits: edits.map((x) => ({ layer: x.layer, neuron: x.neuron, delta: Array.from(x.delta) })),
        metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 0 },
      };
      const outDir = path.join(tempDir('export'), 'patched');
      const source = folderHashes(e.dir);
      await exportPatched({ sourceFolder: e.dir, onnxPath: m.loaded.onnxPath, graph: m.loaded.graph, patches: [patch], outDir });
      const exported = await loadModel(outDir, { cacheDir: testCacheDir() });
      try {
        const diff = maxAbsDiff(patched.logits, (await exported.loaded.session.forward({ ids })).logits);
        const tol = patchTolerance(m, patched.logits);
        const moved = maxAbsDiff(patched.logits, base.logits);
        t.diagnostic(`${e.name}: the patch moves logits by up to ${moved.toFixed(3)}; ` +
          `max |logit(patch inputs) − logit(exported folder)| = ${diff.toExponential(2)} (tolerance ${tol})`);
        assert.ok(moved > 20 * tol, `the patch must visibly move the logits (moved ${moved})`);
        assert.ok(diff <= tol, `exported logits differ by ${diff}`);
      } finally {
        await exported.dispose();
      }
      assert.deepEqual(folderHashes(e.dir), source, 'the source model folder is byte for byte untouched');
    });

    test('ablations and edits outside the model are refused, not applied to another neuron or example', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, neurons, width } = m.info;
      const ids = [sampleIds(m, 4, 1), sampleIds(m, 4, 1)];
      const edit = (layer: number, neuron: number, n = width): LayerEdits => new Map([[layer, { indices: [neuron], deltas: new Float32Array(n).fill(1) }]]);
      const cases: [string, Parameters<typeof s.forward>[0]][] = [
        [`ablation of neuron ${neurons} (of ${neurons})`, { ids, ablations: [{ example: 0, layer: 0, neurons: [neurons] }] }],
        ['ablation of neuron -1', { ids, ablations: [{ example: 0, layer: 0, neurons: [-1] }] }],
        ['ablation of neuron 1.5', { ids, ablations: [{ example: 0, layer: 0, neurons: [1.5] }] }],
        [`ablation in layer ${layers} (of ${layers})`, { ids, ablations: [{ example: 0, layer: layers }] }],
        [`edit of neuron ${neurons}`, { ids, edits: edit(0, neurons) }],
        ['edit of neuron -1', { ids, edits: edit(0, -1) }],
        [`edit in layer ${layers}`, { ids, edits: edit(layers, 0) }],
        [`edit with a delta of ${width - 1} numbers`, { ids, edits: edit(0, 1, width - 1) }],
      ];
      const accepted: string[] = [];
      for (const [what, req] of cases) {
        try {
          await s.forward(req);
          accepted.push(what);
        } catch (err) {
          assert.ok(err instanceof NeuronpatchError, `${what}: a NeuronpatchError, not ${(err as Error).name}`);
        }
      }
      assert.deepEqual(accepted, [], `refused with a NeuronpatchError: ${accepted.join('; ')}`);
    });

    test('per-example edits in a batch equal separate runs', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const s = m.loaded.session;
      const { layers, width, neurons } = m.info;
      const T = 10;
      const ids = [sampleIds(m, T, 1), sampleIds(m, T, 8), sampleIds(m, T, 9)];
      const rms0 = deltaScale(m) * weightRms(m, 0);
      const rmsL = deltaScale(m) * weightRms(m, layers - 1);
      // Example 0 and 1 share neuron 3 of layer 0 with different deltas; each also edits a neuron the other does not.
      const a = combine(undefined, [
        { layer: 0, neuron: 3, delta: gaussian(width, 1, rms0) },
        { layer: 0, neuron: neurons - 1, delta: gaussian(width, 2, rms0) },
      ], width);
      const b = combine(undefined, [
        { layer: 0, neuron: 3, delta: gaussian(width, 3, rms0) },
        { layer: layers - 1, neuron: 7 % neurons, delta: gaussian(width, 4, rmsL) },
      ], width);
      const none: LayerEdits = new Map();
      const batched = await s.forward({ ids, edits: [a, b, none] });
      const V = m.info.vocab;
      let worst = 0;
      for (const [i, ed] of [a, b, none].entries()) {
        const alone = await s.forward({ ids: [ids[i]], edits: ed });
        worst = Math.max(worst, maxAbsDiff(batched.logits.subarray(i * T * V, (i + 1) * T * V), alone.logits));
      }
      const plain = await s.forward({ ids });
      const movedA = maxAbsDiff(batched.logits.subarray(0, T * V), plain.logits.subarray(0, T * V));
      // One edit set for the whole batch is the same as that set repeated per example.
      const shared = await s.forward({ ids, edits: a });
      const repeated = await s.forward({ ids, edits: [a, a, a] });
      const sharedDiff = maxAbsDiff(shared.logits, repeated.logits);
      const tol = logitTolerance(m);
      t.diagnostic(`${e.name}: max |logit(batched, per-example edits) − logit(separate run)| = ${worst.toExponential(2)}; ` +
        `shared vs repeated edits ${sharedDiff.toExponential(2)}; example 0's edits move its logits by ${movedA.toFixed(3)}`);
      assert.ok(movedA > 10 * tol, `the edits visibly move the logits (moved ${movedA})`);
      assert.ok(worst < tol, `batched per-example edits differ from separate runs by ${worst}`);
      assert.ok(sharedDiff < tol, `shared edits differ from the same edits per example by ${sharedDiff}`);
      assert.ok(maxAbsDiff(batched.logits.subarray(2 * T * V), plain.logits.subarray(2 * T * V)) < tol, 'the unedited example is the plain model');
    });
  });
}
