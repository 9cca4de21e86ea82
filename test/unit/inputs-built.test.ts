// The layouts and inputs of real exports, built from the repository's own fixtures by tools/inputs/make_inputs.py
// (test/inputs/), so that a clean checkout tests them: a merged decoder (If on use_cache_branch), StarCoder's fused
// KV cache, a graph without position_ids, the logits_to_keep input, logits that overflow. The shared folders of the
// same kinds (../shared/fixtures/inputs, formats/demo-merged) are tested where present.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { loadModel, type Model, repair, trace } from '../../src/engine';
import { exportPatched } from '../../src/engine/export/export';
import { loadModelProto, onnx, saveModelProto } from '../../src/engine/onnx/proto';
import { preparePrompt } from '../../src/engine/generate';
import { patchSet } from '../../src/engine/patches/patchset';
import { assertFinite } from '../../src/engine/repair/edits';
import { maxAbsDiff, plainGreedyUncached, plainLogits, root, sharedFixtures, tempDir, testCacheDir } from '../helpers/models';
import { skipIfMissing } from '../helpers/need';

const built = path.join(root, 'test', 'inputs');
const models = new Map<string, Promise<Model>>();
after(async () => {
  for (const p of models.values()) await (await p.catch(() => undefined))?.dispose();
});

async function open(t: TestContext, dir: string): Promise<Model | undefined> {
  if (!fs.existsSync(dir)) {
    const ours = dir.startsWith(built);
    skipIfMissing(t, `${path.relative(root, dir)} is absent (${ours ? 'write it with /usr/bin/python3 tools/inputs/make_inputs.py' : '../shared/fixtures exists only beside the project\'s own checkouts'})`, ours ? 'repo' : 'beside');
    return undefined;
  }
  let p = models.get(dir);
  if (!p) models.set(dir, (p = loadModel(dir, { cacheDir: testCacheDir() })));
  return p;
}

const ids = (m: Model, n: number, seed: number): number[] => Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % Math.min(m.info.vocab, 320));
const PROMPT = 'def add(a, b):\n    return';

/** Neutral instrumentation = the plain session; --no-heal decoding = a plain greedy loop. */
async function sameAsPlain(t: TestContext, m: Model, tol: number): Promise<void> {
  const rows = [ids(m, 12, 1), ids(m, 12, 2)];
  const engine = (await m.loaded.session.forward({ ids: rows })).logits;
  const diff = maxAbsDiff(engine, await plainLogits(m.loaded.onnxPath, rows));
  assert.ok(diff < tol, `max |engine − plain| = ${diff}`);
  const c = await m.generate(PROMPT, { heal: false, maxNewTokens: 8, multiline: true });
  const plain = await plainGreedyUncached(m.loaded.onnxPath, preparePrompt(m.loaded, PROMPT, 8, false).ids, 8, m.info.eosTokenIds);
  assert.deepEqual(c.tokens.map((x) => x.id), plain, 'KV-cached decoding = the plain loop');
  t.diagnostic(`${path.basename(m.info.folder)}: max |engine − plain| ${diff.toExponential(2)}; greedy ${JSON.stringify(c.completion)} = plain loop`);
}

/** A trace and a repair succeed; the patch reproduces; export bakes it into a folder that gives the patched logits. */
async function repairsAndExports(t: TestContext, m: Model, desired: string): Promise<void> {
  const tr = await trace(m, { prompt: PROMPT, desired });
  assert.ok(tr.at, 'a failing position is traced');
  const r = await repair(m, { prompt: PROMPT, desired }, { analyse: false });
  assert.ok(r.success, `repaired: ${JSON.stringify(r.after)}`);
  assert.equal((await m.generate(PROMPT, { patches: [r.patch] })).completion, desired);
  const out = path.join(tempDir('export'), 'patched');
  await exportPatched({ sourceFolder: m.info.folder, onnxPath: m.loaded.onnxPath, graph: m.loaded.graph, patches: [r.patch], outDir: out });
  const exported = await loadModel(out, { cacheDir: testCacheDir() });
  try {
    const rows = [preparePrompt(m.loaded, PROMPT, 1, false).ids];
    const patched = (await m.loaded.session.forward({ ids: rows, edits: patchSet([r.patch], m.info.width) })).logits;
    const baked = (await exported.loaded.session.forward({ ids: rows })).logits;
    const diff = maxAbsDiff(patched, baked);
    assert.ok(diff < 1e-4, `exported logits differ from the patched ones by ${diff}`);
    assert.equal((await exported.generate(PROMPT)).completion, desired);
    t.diagnostic(`${path.basename(m.info.folder)}: repair ${r.patch.edits.length} neuron(s), export max |Δlogit| ${diff.toExponential(2)}`);
  } finally {
    await exported.dispose();
  }
}

for (const dir of [path.join(built, 'tiny-qwen2-merged'), path.join(sharedFixtures, 'formats', 'demo-merged')]) {
  describe(`merged decoder: ${path.relative(path.dirname(path.dirname(dir)), dir)}`, () => {
    test('loads through its with-past branch, decodes as the no-past branch\'s plain loop, traces, repairs, exports', async (t) => {
      const m = await open(t, dir);
      if (!m) return;
      assert.match(m.loaded.onnxPath, /decoder_model_merged\.onnx$/);
      await sameAsPlain(t, m, 1e-4);
      await repairsAndExports(t, m, ' a + b');
    });
  });
}

describe('fused KV cache (tiny-starcoder-fused-kv)', () => {
  test('loads, decodes as the plain loop, traces, repairs, exports', async (t) => {
    const m = await open(t, path.join(built, 'tiny-starcoder-fused-kv'));
    if (!m) return;
    assert.equal(m.loaded.graph.cache.kind, 'fused');
    await sameAsPlain(t, m, 1e-4);
    await repairsAndExports(t, m, ' a + b');
  });
});

describe('logits_to_keep (tiny-codegen-logits-to-keep)', () => {
  test('the scalar is fed: the plain session\'s logits, the plain loop, a trace and a repair', async (t) => {
    const m = await open(t, path.join(built, 'tiny-codegen-logits-to-keep'));
    if (!m) return;
    assert.deepEqual(m.loaded.graph.scalars?.map((s) => s.name), ['logits_to_keep']);
    await sameAsPlain(t, m, 1e-4);
    await repairsAndExports(t, m, ' a + b');
  });
});

describe('no position_ids (tiny-gpt-neox-no-positions)', () => {
  test('batched decoding of prompts of different lengths = one at a time', async (t) => {
    const m = await open(t, path.join(built, 'tiny-gpt-neox-no-positions'));
    if (!m) return;
    assert.equal(m.loaded.graph.inputs.positions, undefined);
    await sameAsPlain(t, m, 1e-4);
    const prompts = ['def f(x):\n    return', 'import os\n', 'class A:\n    def __init__(self):\n        self.', 'x = 1\ny =', 'for i in range(10):\n    print(', 'if x:\n    pass\nelse:\n'];
    const batched = (await m.generateMany(prompts)).map((c) => c.completion);
    const single: string[] = [];
    for (const p of prompts) single.push((await m.generate(p)).completion);
    assert.deepEqual(batched, single);
    t.diagnostic(`tiny-gpt-neox-no-positions: batched vs single ${batched.filter((b, i) => b === single[i]).length}/${prompts.length}`);
    // A left-padded row is refused at the session, not silently shifted.
    await assert.rejects(m.loaded.session.forward({ ids: [[1, 2, 3], [0, 4, 5]], mask: [[1, 1, 1], [0, 1, 1]] }), /left-padded row for a graph that cannot take one/);
  });
});

describe('non-finite logits (tiny-gpt-neox-overflow)', () => {
  test('generate, trace and repair refuse before decoding, naming the overflow', async (t) => {
    const m = await open(t, path.join(built, 'tiny-gpt-neox-overflow'));
    if (!m) return;
    const clear = (e: Error) => /logits are not finite/.test(e.message);
    await assert.rejects(m.generate(PROMPT), clear);
    await assert.rejects(trace(m, { prompt: PROMPT, desired: ' a + b' }), clear);
    await assert.rejects(repair(m, { prompt: PROMPT, desired: ' a + b' }, { analyse: false }), clear);
  });
});

describe('GroupQueryAttention (tiny-gqa-llama, onnxruntime-genai\'s CPU layout)', () => {
  test('decodes as the plain loop, batched = single, traces, repairs, exports', async (t) => {
    const m = await open(t, path.join(built, 'tiny-gqa-llama'));
    if (!m) return;
    assert.equal(m.loaded.graph.padding, 'right', 'seqlens_k puts each row first: never left-padded');
    await sameAsPlain(t, m, 1e-4);
    const prompts = ['def f(x):\n    return', 'import os\n', 'class A:\n    def __init__(self):\n        self.', 'x = 1\ny ='];
    const batched = (await m.generateMany(prompts)).map((c) => c.completion);
    const single: string[] = [];
    for (const p of prompts) single.push((await m.generate(p)).completion);
    assert.deepEqual(batched, single);
    await repairsAndExports(t, m, ' a + b');
  });
});

test('edits that are no longer finite numbers are a divergence, named, never dropped as empty', () => {
  const edits = [{ layer: 1, neuron: 3, delta: Float64Array.of(0.5, 1) }, { layer: 0, neuron: 7, delta: Float64Array.of(NaN, 1) }];
  assert.throws(() => assertFinite(edits, 'joint', 4), /joint solver diverged in round 4: the change of 1 of 2 neuron\(s\) \(L0\/7\) is not finite/);
  assert.doesNotThrow(() => assertFinite(edits.slice(0, 1), 'joint', 4));
});

describe('refusals name the real cause', () => {
  /** A copy of a built folder with its graph rewritten by `edit`. */
  async function variant(name: string, rel: string, edit: (g: onnx.IGraphProto) => void): Promise<string> {
    const src = path.join(built, name);
    const dir = path.join(tempDir('refusal'), name);
    fs.cpSync(src, dir, { recursive: true });
    const model = await loadModelProto(path.join(src, rel));
    edit(model.graph!);
    await saveModelProto(model, path.join(dir, rel));
    return dir;
  }
  const rename = (g: onnx.IGraphProto, from: string, to: string) => {
    for (const i of g.input ?? []) if (i.name === from) i.name = to;
    for (const o of g.output ?? []) if (o.name === from) o.name = to;
    for (const n of g.node ?? []) {
      n.input = (n.input ?? []).map((x) => (x === from ? to : x));
      n.output = (n.output ?? []).map((x) => (x === from ? to : x));
    }
  };

  test('an If on another input than use_cache_branch, and a cache of unknown names', { skip: !fs.existsSync(built) && 'test/inputs is absent' }, async () => {
    const iffy = await variant('tiny-qwen2-merged', 'onnx/decoder_model_merged.onnx', (g) => rename(g, 'use_cache_branch', 'branch_flag'));
    await assert.rejects(loadModel(iffy, { cacheDir: testCacheDir() }), (e: Error) => /control-flow node \(If\)/.test(e.message) && !/Known architectures/.test(e.message));
    const oddCache = await variant('tiny-starcoder-fused-kv', 'model.onnx', (g) => {
      for (const L of [0, 1]) rename(g, `past_key_values.${L}.key_value`, `past_key_values.${L}.kv`);
    });
    await assert.rejects(loadModel(oddCache, { cacheDir: testCacheDir() }), (e: Error) => /layout neuronpatch does not read: "past_key_values.0.kv"/.test(e.message) && !/no KV-cache inputs/.test(e.message));
  });
});
