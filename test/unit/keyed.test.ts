// Added (keyed) neurons, on every model folder present whose graph takes them:
// - neutral added-neuron inputs (none, or a neuron with a zero value) give the plain model's logits;
// - a neuron whose threshold is above its key's response at every position of reference code changes no logit
//   there, while the same neuron with its threshold lowered under one position's response changes that position;
// - on the last layer its effect on the final residual is exactly a(x̂)·v;
// - export bakes added neurons as a side branch: a plain onnxruntime session on the exported file gives the
//   instrumented graph's logits with the patch applied;
// - patch files: neuronpatch/1 files still read, added neurons need neuronpatch/2, and a store writes /1 until a
//   patch adds neurons.
// And the keyed repair on a real failure of the demo model: fixed by greedy generation, every added neuron silent on
// the reference code it was given.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadModel, type Model, repair } from '../../src/engine';
import { trace as traceCase } from '../../src/engine/trace/index';
import { repairTarget, teacherForce } from '../../src/engine/trace/teacher';
import { exportPatched } from '../../src/engine/export/export';
import { preparePrompt } from '../../src/engine/generate';
import { type AddedNeuron, addedActivation } from '../../src/engine/model/added';
import { type LayerEdits, leftPad } from '../../src/engine/model/session';
import { isoNow, newPatchId } from '../../src/engine/patches/id';
import { withAdded } from '../../src/engine/patches/patchset';
import { PatchStore } from '../../src/engine/patches/store';
import { checkPatchFile } from '../../src/engine/patches/validate';
import { serializePatchFile } from '../../src/engine/patches/format';
import { NeuronpatchError, type Patch, PATCH_FORMAT, PATCH_FORMAT_2 } from '../../src/engine/types';
import {
  CODE, entry, gaussian, logitTolerance, maxAbs, maxAbsDiff, type ModelEntry, MODELS, modelOf, plainLogits, PLAIN_WORDS, releaseAll, root, sampleIds,
  sharedFixtures, tempDir,
} from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

const TEXTS = [CODE, 'def add(a, b):\n    return a + b\n\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n'];

/**
 * Token rows of the texts, left-padded; random ids where the tokenizer does not fit the model (the random-weight
 * fixtures), one row per text, of different lengths.
 */
function batchOf(m: Model, texts: string[]): { ids: number[][]; mask: number[][]; width: number; rows: number[][] } {
  const rows = texts.map((t, i) => {
    const ids = m.tokenizer.encode(t);
    return ids.every((id) => id < m.info.vocab) ? ids : sampleIds(m, 24 + 7 * i, 5 + i);
  });
  return { ...leftPad(rows), rows };
}

/** A neuron keyed on a random direction, with its threshold above its largest response over the texts' real positions. */
async function silentNeuron(m: Model, layer: number, texts: string[], seed: number): Promise<{ neuron: AddedNeuron; max: number; xs: Float32Array; b: ReturnType<typeof batchOf> }> {
  const d = m.info.width;
  const b = batchOf(m, texts);
  const res = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, ffnInputs: [layer] });
  const xs = res.ffnInputs.get(layer)!;
  const key = gaussian(d, seed, 1 / Math.sqrt(d));
  const probe: AddedNeuron = { layer, key, threshold: 0, value: new Float32Array(d) };
  let max = -Infinity;
  b.rows.forEach((r, i) => {
    for (let p = b.width - r.length; p < b.width; p++) {
      let s = 0;
      for (let c = 0; c < d; c++) s += probe.key[c] * xs[(i * b.width + p) * d + c];
      max = Math.max(max, s);
    }
  });
  const value = gaussian(d, seed + 1, 10 * maxAbs(m.loaded.weights.valueVectors(layer)));
  return { neuron: { layer, key, threshold: max + 1e-3 * Math.max(1, Math.abs(max)), value }, max, xs, b };
}

/** The quantized files people download (../shared/fixtures/formats): MatMulNBits 4-bit, dynamic int8 MatMulInteger. */
const QUANTIZED: ModelEntry[] = ['demo-q4', 'demo-int8'].map((name) => ({ name, dir: path.join(sharedFixtures, 'formats', name), source: 'shared' }));

for (const e of [...MODELS, ...QUANTIZED]) {
  describe(`added neurons: ${e.name}`, () => {
    if (QUANTIZED.includes(e)) {
      test('a quantized FFN (MatMulNBits, DynamicQuantizeLinear + MatMulInteger) takes added neurons on every layer', async (t) => {
        const m = await modelOf(t, e);
        if (!m) return;
        assert.deepEqual(m.loaded.graph.keyedLayers, [...Array(m.info.layers).keys()], 'every layer\'s FFN input is found through the quantized projection');
      });
    }
    test('neutral added-neuron inputs give the plain model\'s logits', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const layers = m.loaded.graph.keyedLayers ?? [];
      if (!layers.length) return t.skip('this graph takes no added neurons (no FFN input found)');
      const b = batchOf(m, [CODE, PLAIN_WORDS]);
      const plain = await plainLogits(m.loaded.onnxPath, b.ids, b.mask);
      const none = await m.loaded.session.forward({ ids: b.ids, mask: b.mask });
      const zeroValue = withAdded(new Map(), [{ layer: layers[0], key: gaussian(m.info.width, 3), threshold: -100, value: new Float32Array(m.info.width) }]);
      const zero = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, edits: zeroValue });
      assert.ok(maxAbsDiff(none.logits, plain) <= logitTolerance(m) * Math.max(1, maxAbs(plain)), `no added neurons: max |Δlogit| ${maxAbsDiff(none.logits, plain)}`);
      assert.deepEqual(zero.logits, none.logits, 'a neuron with a zero value adds exactly nothing');
    });

    test('a neuron whose threshold is above every reference response changes no reference logit', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const layers = m.loaded.graph.keyedLayers ?? [];
      if (!layers.length) return t.skip('this graph takes no added neurons');
      const layer = layers[Math.floor(layers.length / 2)];
      const { neuron, max, b } = await silentNeuron(m, layer, TEXTS, 11);
      const before = await m.loaded.session.forward({ ids: b.ids, mask: b.mask });
      const silent = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, edits: withAdded(new Map(), [neuron]) });
      assert.deepEqual(silent.logits, before.logits, 'identical logits at every position');
      // The same neuron just under its largest response fires there and moves the logits.
      const firing = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, edits: withAdded(new Map(), [{ ...neuron, threshold: max - 0.5 * Math.abs(max) - 1e-3 }]) });
      assert.ok(maxAbsDiff(firing.logits, before.logits) > 1e-3, `a firing neuron moves the logits (max |Δ| ${maxAbsDiff(firing.logits, before.logits)})`);
    });

    test('on the last layer an added neuron adds exactly a(x̂)·v to the final residual', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const layers = m.loaded.graph.keyedLayers ?? [];
      const last = m.info.layers - 1;
      if (!layers.includes(last)) return t.skip('the last layer takes no added neurons');
      const d = m.info.width;
      const { neuron, max, xs, b } = await silentNeuron(m, last, [CODE], 21);
      const n = { ...neuron, threshold: max - 0.5 * Math.abs(max) - 1e-3 };
      const edits: LayerEdits = withAdded(new Map(), [n]);
      const r0 = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, residual: true });
      const r1 = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, residual: true, edits });
      let worst = 0;
      let fired = 0;
      for (let p = 0; p < b.width; p++) {
        const a = addedActivation(n, xs, p * d);
        if (a > 0) fired++;
        for (let c = 0; c < d; c++) worst = Math.max(worst, Math.abs(r1.residual![p * d + c] - r0.residual![p * d + c] - a * n.value[c]));
      }
      assert.ok(fired > 0, 'the neuron fires somewhere');
      const scale = maxAbs(r1.residual!);
      assert.ok(worst <= (m.info.weightType === 'float16' ? 4e-3 : 1e-5) * Math.max(1, scale), `max |Δresidual − a·v| ${worst}`);
    });

    test('export bakes added neurons: the exported file gives the patched logits', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const layers = m.loaded.graph.keyedLayers ?? [];
      if (!layers.length) return t.skip('this graph takes no added neurons');
      const layer = layers[layers.length - 1];
      const { neuron, max, b } = await silentNeuron(m, layer, [CODE], 31);
      const fired = { layer, key: Array.from(neuron.key), threshold: max - 0.5 * Math.abs(max) - 1e-3, value: Array.from(neuron.value) };
      const patch: Patch = {
        id: newPatchId(), createdAt: isoNow(), enabled: true, method: 'keyed',
        case: { prompt: 'p', desired: 'd', before: 'b', after: 'd' }, edits: [], added: [fired],
        metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 1 },
      };
      const out = path.join(tempDir('keyed-export'), 'patched');
      await exportPatched({ sourceFolder: m.info.folder, onnxPath: m.loaded.onnxPath, graph: m.loaded.graph, patches: [patch], outDir: out });
      const exported = path.join(out, path.relative(m.info.folder, m.loaded.onnxPath));
      const baked = await plainLogits(exported, b.ids, b.mask);
      const live = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, edits: withAdded(new Map(), [fired]) });
      const plain = await plainLogits(m.loaded.onnxPath, b.ids, b.mask);
      const tol = (m.info.weightType === 'float16' ? 2e-2 : 1e-4) * Math.max(1, maxAbs(live.logits));
      assert.ok(maxAbsDiff(baked, live.logits) <= tol, `exported vs live: max |Δlogit| ${maxAbsDiff(baked, live.logits)} (tolerance ${tol})`);
      assert.ok(maxAbsDiff(baked, plain) > 10 * tol, 'the baked neuron changes the logits');
      const md = fs.readFileSync(path.join(out, 'PATCHES.md'), 'utf8');
      assert.match(md, new RegExp(`Neurons added: layer ${layer}: 1\\.`), 'PATCHES.md says which layer got the added neuron');
      assert.doesNotMatch(md, /Neurons edited/, 'a keyed patch edits no value vector');
      assert.ok(!fs.existsSync(path.join(out, 'reference_logits.json')), 'the unpatched model\'s reference logits are not copied');
      // neuronpatch opens its own export: the side branch is part of its layer, and the engine's logits are the baked ones.
      const reopened = await loadModel(out, { cacheDir: tempDir('keyed-export-cache') });
      try {
        assert.equal(reopened.info.layers, m.info.layers);
        const again = await reopened.loaded.session.forward({ ids: b.ids, mask: b.mask });
        assert.ok(maxAbsDiff(again.logits, baked) <= tol, `the engine on the export vs a plain session: ${maxAbsDiff(again.logits, baked)}`);
      } finally {
        await reopened.dispose();
      }
      fs.rmSync(path.dirname(out), { recursive: true, force: true });
    });
  });
}

describe('patch files with added neurons', () => {
  const dims = { layers: 2, neurons: 4, width: 3 };
  const base = {
    id: 'a', createdAt: '2026-11-28T10:00:00.000Z', enabled: true, method: 'minimal',
    case: { prompt: 'p', desired: 'd', before: 'b', after: 'd' },
    edits: [{ layer: 1, neuron: 2, delta: [0.1, -0.2, 0.3] }],
    metrics: { success: true, failingTokens: 1, specificity: 0.9, meanKl: 0.01, generalization: null, repairMs: 12 },
  };
  const added = { layer: 0, key: [1, 0, 0], threshold: 0.5, value: [0, 1, 0] };

  test('an old neuronpatch/1 file (no added neurons, no margin) still reads', () => {
    const { file, problems } = checkPatchFile({ format: 'neuronpatch/1', model: { name: 'm', hash: 'h' }, patches: [base] }, dims);
    assert.deepEqual(problems, []);
    assert.equal(file!.patches[0].edits[0].neuron, 2);
    assert.equal(file!.patches[0].added, undefined);
  });

  test('added neurons need neuronpatch/2 and are checked', () => {
    const keyed = { ...base, id: 'k', method: 'keyed', edits: [], added: [added] };
    assert.deepEqual(checkPatchFile({ format: PATCH_FORMAT_2, model: { name: 'm', hash: 'h' }, patches: [keyed] }, dims).problems, []);
    assert.match(checkPatchFile({ format: PATCH_FORMAT, model: { name: 'm', hash: 'h' }, patches: [keyed] }, dims).problems.join('\n'), /patches\[0\]\.added: added neurons need format "neuronpatch\/2"/);
    const bad = { ...keyed, added: [{ ...added, layer: 2, key: [1, 0] }] };
    const problems = checkPatchFile({ format: PATCH_FORMAT_2, model: { name: 'm', hash: 'h' }, patches: [bad] }, dims).problems.join('\n');
    assert.match(problems, /added\[0\]\.layer: expected an integer between 0 and 1, got 2/);
    assert.match(problems, /added\[0\]\.key: expected 3 numbers, got 2/);
    assert.match(checkPatchFile({ format: 'neuronpatch/3', model: { name: 'm', hash: 'h' }, patches: [] }, dims).problems.join('\n'), /reads "neuronpatch\/1" and "neuronpatch\/2"/);
  });

  test('a file is written as neuronpatch/1 until a patch adds neurons, then as neuronpatch/2, and reads back', async () => {
    const info = { name: 'm', hash: 'h', ...dims, folder: '', architecture: 'llama', gated: true, vocab: 10, context: 8, finalNorm: 'rms' as const, tiedUnembedding: false, weightType: 'float32' as const, eosTokenIds: [0] };
    const file = path.join(tempDir('keyed-store'), 'patches.json');
    const store = await PatchStore.open(file, info);
    store.add(base as Patch);
    await store.save();
    assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).format, PATCH_FORMAT);
    store.add({ ...base, id: 'k', method: 'keyed', edits: [], added: [added] } as Patch);
    await store.save();
    const text = fs.readFileSync(file, 'utf8');
    assert.equal(JSON.parse(text).format, PATCH_FORMAT_2);
    const again = await PatchStore.open(file, info);
    assert.deepEqual(again.get('k')!.added, [added]);
    assert.equal(serializePatchFile({ format: PATCH_FORMAT_2, model: { name: 'm', hash: 'h' }, patches: [base as Patch] }).includes('"neuronpatch/1"'), true);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});

describe('keyed repair on the demo model', () => {
  test('fixes a real failure by generation, one added neuron per failing token, silent on its reference code', async (t) => {
    const m = await modelOf(t, entry('demo'));
    if (!m) return;
    const casesFile = path.join(root, 'bench', 'cases', 'dev.jsonl');
    const regressionFile = path.join(root, 'bench', 'cases', 'regression.jsonl');
    if (skipIfMissing(t, missingFiles([casesFile, regressionFile], root), 'repo')) return;
    const c = JSON.parse(fs.readFileSync(casesFile, 'utf8').split('\n')[0]) as { prompt: string; desired: string };
    const reference = fs.readFileSync(regressionFile, 'utf8').trim().split('\n').slice(0, 12).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
    const r = await repair(m, c, { method: 'keyed', reference, analyse: false });
    assert.equal(r.method, 'keyed');
    assert.ok(r.success, `fixed: ${JSON.stringify(r.after)}`);
    const added = r.patch.added ?? [];
    assert.ok(added.length >= 1 && added.length <= r.failingTokens, `${added.length} added neuron(s) for ${r.failingTokens} failing token(s)`);
    assert.equal(r.patch.edits.length, 0, 'no existing value vector is edited');
    assert.match(r.layerChoice ?? '', /^layer \d+/);
    // Silent on every reference position: identical logits there.
    const b = leftPad(reference.map((p) => preparePrompt(m.loaded, p, 1, false).ids));
    const before = await m.loaded.session.forward({ ids: b.ids, mask: b.mask });
    const after = await m.loaded.session.forward({ ids: b.ids, mask: b.mask, edits: withAdded(new Map(), added) });
    assert.deepEqual(after.logits, before.logits);

    // On top of that patch, a case whose failing context IS the patch's own case cannot be keyed apart from it:
    // an honest refusal naming why, not a crash (the layer search once found no layer and read an undefined one).
    const clash = await repair(m, { prompt: c.prompt, desired: `${c.desired} # x` }, { method: 'keyed', reference, analyse: false, active: [r.patch] });
    if (!clash.success) assert.match(clash.layerChoice ?? '', /no layer separates/);
  });

  test('without reference code a keyed repair is refused, saying what to pass', async (t) => {
    const m = await modelOf(t, entry('demo'));
    if (!m) return;
    await assert.rejects(repair(m, { prompt: 'def add(a, b):\n    return', desired: ' a + b' }, { method: 'keyed', reference: [], analyse: false }),
      (e: Error) => e instanceof NeuronpatchError && /needs reference code/.test(e.message));
    // An earlier patch's case is not ordinary code (a fresh user's second repair into the same patch file went ahead
    // with 15 protected positions): still refused.
    const earlier = await repair(m, { prompt: 'def add(a, b):\n    return', desired: ' a + b' }, { method: 'minimal', analyse: false });
    await assert.rejects(repair(m, { prompt: 'def sub(a, b):\n    return', desired: ' a - b' }, { method: 'keyed', reference: [], analyse: false, active: [earlier.patch] }),
      (e: Error) => e instanceof NeuronpatchError && /needs reference code/.test(e.message));
  });
});

describe('trace with an added neuron', () => {
  test('an active added neuron that fires at the failing position is traced like any other neuron', async (t) => {
    const m = await modelOf(t, entry('demo'));
    if (!m) return;
    const casesFile = path.join(root, 'bench', 'cases', 'dev.jsonl');
    if (skipIfMissing(t, missingFiles([casesFile], root), 'repo')) return;
    const c = JSON.parse(fs.readFileSync(casesFile, 'utf8').split('\n')[0]) as { prompt: string; desired: string };
    const lm = m.loaded;
    const d = m.info.width;
    const layer = m.info.layers - 1;
    const target = repairTarget(lm, c.prompt, c.desired);
    const f = await teacherForce(lm, target);
    const at = f.states.find((s) => s.failing)!;
    const pos = target.first + at.index;
    const x = (await lm.session.forward({ ids: [target.input], ffnInputs: [layer], lastOnly: true })).ffnInputs.get(layer)!.subarray(pos * d, (pos + 1) * d);
    let xx = 0;
    for (const v of x) xx += v * v;
    // Keyed on this context (response 1 there), writing towards the model's own wrong token.
    const [wa, wy] = [lm.weights.unembeddingRow(at.argmax), lm.weights.unembeddingRow(at.desired)];
    const value = Float32Array.from({ length: d }, (_, i) => 20 * (wa[i] - wy[i]));
    const neuron: AddedNeuron = { layer, key: Float32Array.from(x, (v) => v / xx), threshold: 0.5, value };
    const tr = await traceCase(lm, c, { edits: withAdded(new Map(), [neuron]), top: 5 });
    const traced = tr.at!.neurons.find((n) => n.added);
    assert.ok(traced, `the added neuron is among the top neurons: ${tr.at!.neurons.map((n) => `${n.layer}.${n.neuron}`).join(', ')}`);
    assert.equal(traced.layer, layer);
    assert.equal(traced.neuron, m.info.neurons, 'numbered from the FFN width on');
    assert.ok(Math.abs(traced.activation - 0.5) < 1e-3, `activation ${traced.activation} = 1 − threshold`);
    assert.ok(traced.attribution < 0, 'it pushes towards the wrong token');
    assert.ok(traced.ablationEffect !== null && traced.ablationEffect > 0, `leaving it out raises the gap (${traced.ablationEffect})`);
    assert.ok(traced.promotes.length > 0, 'its logit lens');
  });
});
