// The dtype files people download (4-bit MatMulNBits with and without zero points, q4f16, 8-bit dynamic
// quantization int8/uint8 per tensor and per channel, fused MatMulIntegerToFloat, fp16 with fp32 I/O, the
// multi-dtype onnx/ layout), converted at test time from models/demo by tools/formats/convert.py, and the shared
// fixtures of the same kinds where present. For each:
// - recognised through the quantization: the FFN output projections and the unembedding, with value vectors
//   dequantized per the op specs close to the fp32 model's (within the format's quantization error), and exact
//   where onnxruntime's kernel is the judge (ablating a neuron takes z_j·v_j out of the last layer's output);
// - neutral instrumentation gives the plain session's logits;
// - `generate --no-heal` equals a plain onnxruntime greedy loop on the same file;
// - on the formats marked `repair`: a trace and a repair succeed, `generate --patches` reproduces the repair, and
//   an exported folder reproduces the patched logits in a plain session (side branch: float rounding; re-quantized
//   blocks: measured and bounded). NEURONPATCH_TEST_ALL_FORMATS=1 runs that round on every format (slow: the
//   figures of the README's format table).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadModel, type Model, repair, trace } from '../../src/engine';
import { exportPatched } from '../../src/engine/export/export';
import { patchSet } from '../../src/engine/patches/patchset';
import { PatchStore } from '../../src/engine/patches/store';
import type { RepairCase } from '../../src/engine/types';
import { convertedFormats, type FormatEntry, plainGreedy, sharedFormats } from '../helpers/formats';
import { entry, maxAbs, maxAbsDiff, modelOf, plainLogits, present, releaseAll, root, sampleIds, tempDir, testCacheDir } from '../helpers/models';

after(releaseAll);

const demo = entry('demo');
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const loaded = new Map<string, Promise<Model>>();
function open(f: FormatEntry): Promise<Model> {
  const key = `${f.dir}#${f.dtype ?? ''}`;
  let p = loaded.get(key);
  if (!p) loaded.set(key, (p = loadModel(f.dir, { dtype: f.dtype, cacheDir: testCacheDir() })));
  return p;
}
after(async () => {
  for (const p of loaded.values()) await (await p.catch(() => undefined))?.dispose();
});

/** Logit tolerance of the instrumented graph against the plain one: float rounding of the activations' type. */
const tolerance = (f: FormatEntry, logits: ArrayLike<number>): number => (f.fp16 ? 4e-3 * Math.max(1, maxAbs(logits)) : 1e-4 * Math.max(1, maxAbs(logits)));

/** Relative RMS error of dequantized weights against the fp32 source: what each format's rounding allows. */
const weightError = (f: FormatEntry, quant = f.quant): number => (quant === 'nbits' ? 0.25 : quant === 'linear' ? 0.03 : f.fp16 ? 2e-3 : 1e-6);

function relRms(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) (num += (a[i] - b[i]) ** 2), (den += b[i] ** 2);
  return Math.sqrt(num / den);
}

/**
 * Why the shared format fixtures cannot be held to models/demo's weights, or undefined when they can: they were
 * converted (beside the project, read-only) from the models/demo of their day, so after the demo model is retrained
 * their fp16 copy's W_out no longer matches this one's to fp16 rounding. The converted formats still check
 * dequantization against the fp32 model; the other shared-fixture tests need no source.
 */
let sharedSource: Promise<string | undefined> | undefined;
function sharedNotFromThisDemo(ref: { loaded: Model['loaded'] }): Promise<string | undefined> {
  const fp16 = sharedFormats().find((f) => f.name === 'shared/demo-fp16-fp32io');
  if (!fp16) return Promise.resolve(undefined);
  sharedSource ??= open(fp16).then((m) => {
    const e = relRms(m.loaded.weights.valueVectors(0), ref.loaded.weights.valueVectors(0));
    return e < 1e-2 ? undefined : `../shared/fixtures/formats was converted from an earlier models/demo (its fp16 W_out differs from this one by ${e.toExponential(1)} relative RMS): dequantization is checked against the fp32 model on the formats converted at test time`;
  });
  return sharedSource;
}

const devCases = path.join(root, 'bench', 'cases', 'dev.jsonl');
const { entries: converted, why } = convertedFormats();
const formats = [...converted, ...sharedFormats()];

describe('formats', { skip: !present(demo) ? 'models/demo is absent' : why ?? false }, () => {
  if (!sharedFormats().length) test('the shared format fixtures', (t) => t.skip('../shared/fixtures/formats is absent (only beside the project\'s own checkouts); the converted formats are tested'));

  test('a multi-dtype folder: --dtype picks a file, auto says which, a missing dtype names the files there', async (t) => {
    const dtypes = converted.find((f) => f.name === 'dtypes/q4');
    assert.ok(dtypes, 'the converted multi-dtype folder');
    const logs: string[] = [];
    const m = await loadModel(dtypes.dir, { cacheDir: testCacheDir(), log: (l) => logs.push(l) });
    try {
      // No fp32 file there: auto takes 8-bit, the best present for the CPU provider.
      assert.equal(path.relative(dtypes.dir, m.loaded.onnxPath), path.join('onnx', 'model_int8.onnx'));
      assert.match(m.info.dtype?.reason ?? '', /^dtype auto: int8 \(onnx\/model_int8\.onnx\), the best of int8, uint8, q4, fp16, q4f16/);
      assert.ok(logs.includes(m.info.dtype!.reason), 'the choice is logged');
      assert.deepEqual(m.info.dtype?.files.map((x) => x.file).sort(), ['fp16', 'int8', 'q4', 'q4f16', 'uint8'].map((d) => path.join('onnx', `model_${d}.onnx`)));
      assert.match(m.info.name, /\[onnx\/model_int8\.onnx\]$/, 'the name says which file');
    } finally {
      await m.dispose();
    }
    await assert.rejects(loadModel(dtypes.dir, { dtype: 'fp32', cacheDir: testCacheDir() }),
      (e: Error) => /has no fp32 decoder/.test(e.message) && /onnx\/model_q4\.onnx/.test(e.message) && /--dtype/.test(e.message));
    await assert.rejects(loadModel(dtypes.dir, { dtype: 'q3', cacheDir: testCacheDir() }), /Unknown dtype "q3"[\s\S]*auto, fp32, fp16, q8, int8, uint8, q4, q4f16/);
    t.diagnostic(`auto: ${logs.find((l) => l.startsWith('dtype'))}`);
  });

  for (const f of formats) {
    describe(f.name, () => {
      test('recognised through the quantization; value vectors and unembedding dequantized close to the fp32 model', async (t) => {
        const m = await open(f);
        const ref = (await modelOf(t, demo))!;
        const other = f.source === 'shared' ? await sharedNotFromThisDemo(ref) : undefined;
        if (other) {
          t.skip(other);
          return;
        }
        assert.equal(m.info.layers, ref.info.layers);
        assert.equal(m.info.neurons, ref.info.neurons);
        assert.equal(m.info.width, ref.info.width);
        assert.equal(m.info.vocab, ref.info.vocab);
        assert.equal(m.info.weightType, f.fp16 ? 'float16' : 'float32');
        const kinds = new Set(m.loaded.graph.sites.map((s) => s.weight.quant?.kind ?? 'float'));
        assert.deepEqual([...kinds], [f.quant], `FFN output weights stored as ${[...kinds]}`);
        const lmHead = f.lmHead ?? f.quant;
        assert.equal(m.loaded.graph.unembedding.quant?.kind ?? 'float', lmHead, 'the unembedding\'s storage');
        const errors = range(m.info.layers).map((L) => relRms(m.loaded.weights.valueVectors(L), ref.loaded.weights.valueVectors(L)));
        // W_U read in row blocks, as the engine reads it (the quantized rows dequantized by themselves).
        const all = (w: typeof m.loaded.weights) => Float32Array.from([...w.unembeddingBlocks(1000)].flatMap((b) => [...b.rows]));
        const unembed = relRms(all(m.loaded.weights), all(ref.loaded.weights));
        t.diagnostic(`${f.name}: ${m.info.weightFormat}; relative RMS error of W_out per layer ${errors.map((e) => e.toExponential(1)).join(' ')}, of W_U ${unembed.toExponential(1)}`);
        for (const e of errors) assert.ok(e < weightError(f), `W_out: relative RMS error ${e} ≥ ${weightError(f)}`);
        assert.ok(unembed < weightError(f, lmHead), `W_U: relative RMS error ${unembed} ≥ ${weightError(f, lmHead)}`);
        if (f.dtype) assert.equal(path.basename(m.loaded.onnxPath), `model_${f.dtype}.onnx`);
      });

      test('neutral instrumentation gives the plain session\'s logits; an ablation takes z_j·v_j (dequantized) out', async (t) => {
        const m = await open(f);
        const ids = [sampleIds(m, 16, 1)];
        const s = m.loaded.session;
        const L = m.info.layers - 1;
        const res = await s.forward({ ids, residual: true, activations: [L] });
        const plain = await plainLogits(m.loaded.onnxPath, ids);
        const diff = maxAbsDiff(res.logits, plain);
        const tol = tolerance(f, plain);
        // Ablating the last layer's most active neuron at the last position: the final residual moves by z_j·v_j.
        const { neurons, width } = m.info;
        const z = res.activations.get(L)!;
        const lastRow = z.subarray(15 * neurons, 16 * neurons);
        let j = 0;
        for (let i = 0; i < neurons; i++) if (Math.abs(lastRow[i]) > Math.abs(lastRow[j])) j = i;
        const ablated = await s.forward({ ids, residual: true, ablations: [{ example: 0, layer: L, neurons: [j] }] });
        const v = m.loaded.weights.valueVector(L, j, width);
        const moved = Float32Array.from(range(width), (c) => res.residual![15 * width + c] - ablated.residual![15 * width + c]);
        const expected = Float32Array.from(v, (x) => lastRow[j] * x);
        const ablationDiff = maxAbsDiff(moved, expected);
        t.diagnostic(`${f.name}: max |logit(instrumented) − logit(plain)| = ${diff.toExponential(2)} (tolerance ${tol.toExponential(1)}); ` +
          `ablation of L${L} N${j}: |Δresidual − z_j·v_j| = ${ablationDiff.toExponential(2)} of ${maxAbs(expected).toExponential(2)}`);
        assert.ok(diff < tol, `max abs diff ${diff} ≥ ${tol}`);
        // 8-bit dynamic quantization re-quantizes the ablated activation with its own scale: only close there.
        const ablationTol = f.quant === 'linear' ? 0.05 * maxAbs(expected) : f.fp16 ? 4e-3 * Math.max(1, maxAbs(res.residual!)) : 1e-4 * Math.max(1, maxAbs(expected));
        assert.ok(ablationDiff < ablationTol, `ablation: ${ablationDiff} ≥ ${ablationTol}`);
      });

      test('generate --no-heal equals a plain greedy loop on the same file', async (t) => {
        const m = await open(f);
        const prompts = ['def main(argv):\n    ', 'class Stack:\n    def push(self, item):\n        ', 'import os\nimport '];
        for (const prompt of prompts) {
          const ids = m.tokenizer.encode(prompt);
          const c = await m.generate(prompt, { maxNewTokens: 16, heal: false, multiline: true });
          const plain = await plainGreedy(m.loaded.onnxPath, ids, 16, m.info.eosTokenIds);
          assert.deepEqual(c.tokens.map((x) => x.id), plain, `${JSON.stringify(prompt)}: engine ${JSON.stringify(c.completion)}`);
        }
        t.diagnostic(`${f.name}: 3 prompts × 16 tokens identical to a plain onnxruntime greedy loop`);
      });

      if (!f.repair && !process.env.NEURONPATCH_TEST_ALL_FORMATS) return;
      test('trace and repair a real failure; generate --patches reproduces it; export reproduces the patched logits', { skip: fs.existsSync(devCases) ? false : 'bench/cases/dev.jsonl absent' }, async (t) => {
        const m = await open(f);
        const cases = fs.readFileSync(devCases, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as RepairCase);
        let done: { c: RepairCase; r: Awaited<ReturnType<typeof repair>> } | undefined;
        for (const c of cases.slice(0, 8)) {
          const tr = await trace(m, c, { top: 5 });
          if (!tr.at) continue;  // this format already completes it
          assert.equal(tr.at.neurons.length, 5);
          for (const n of tr.at.neurons) assert.ok(Number.isFinite(n.attribution), 'finite attributions');
          const r = await repair(m, c, { method: 'minimal', maxNewTokens: 48 });
          if (r.success) {
            done = { c, r };
            break;
          }
        }
        assert.ok(done, 'one of the first 8 dev cases traced and repaired');
        const { c, r } = done;
        assert.ok(r.after.startsWith(c.desired.trimEnd().slice(0, 1)), 'the repaired completion');
        const again = await m.generate(c.prompt, { patches: [r.patch], maxNewTokens: 48 });
        assert.equal(again.completion, r.after, 'the patch alone reproduces the repaired completion');
        // The patch is bound to this exact file: the fp32 model of the same weights refuses its patch file.
        const file = path.join(tempDir('bound'), 'patches.json');
        const store = await PatchStore.open(file, m.info);
        store.add(r.patch);
        await store.save();
        const fp32 = (await modelOf(t, demo))!;
        await assert.rejects(PatchStore.open(file, fp32.info, { mustExist: true }), /holds patches for model/);

        // Export: the exported folder, in a plain session, against the engine's patched forward.
        const ids = [m.tokenizer.encode(c.prompt + c.desired)];
        const patched = await m.loaded.session.forward({ ids, edits: patchSet([r.patch], m.info.width) });
        const methods = f.quant === 'float' ? ([undefined] as const) : (['side-branch', 'requantize'] as const);
        const report: string[] = [];
        for (const method of methods) {
          const out = path.join(tempDir('export'), 'patched');
          const res = await exportPatched({ sourceFolder: f.dir, onnxPath: m.loaded.onnxPath, graph: m.loaded.graph, patches: [r.patch], outDir: out, quantized: method });
          const exported = path.join(out, path.relative(f.dir, m.loaded.onnxPath));
          const logits = await plainLogits(exported, ids);
          const diff = maxAbsDiff(logits, patched.logits);
          report.push(`${method ?? 'weights'}: max |Δlogit| ${diff.toExponential(2)}${res.quantized?.maxWeightError !== undefined ? ` (weight error ${res.quantized.maxWeightError.toExponential(2)})` : ''}`);
          // The side branch (and a float weight) computes what the engine computes; re-quantized blocks add their
          // rounding to the patched weights, which must stay below the 4-bit rounding of the model itself.
          const tol = method === 'requantize' ? 0.5 * Math.max(1, maxAbs(patched.logits)) : tolerance(f, patched.logits);
          assert.ok(diff < tol, `${method}: exported logits differ by ${diff} ≥ ${tol}`);
        }
        t.diagnostic(`${f.name}: ${r.neurons.length} neuron(s), ${JSON.stringify(r.before)} → ${JSON.stringify(r.after)}; export ${report.join('; ')}`);
      });
    });
  }
});
