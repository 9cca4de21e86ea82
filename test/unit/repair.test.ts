// Trace and repair on real models: a repair succeeds by generation, its patch file reproduces it, sequential
// patches keep earlier fixes, and bad input gets a clear error. Random-weight fixtures repair a chosen next token
// (the algebra holds without training); the trained demo model repairs real failures of its own.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { repair, trace, type Model } from '../../src/engine';
import { patchSet } from '../../src/engine/patches/patchset';
import { PatchStore } from '../../src/engine/patches/store';
import { completions, greedyLines, linesAfter } from '../../src/engine/repair/verify';
import { NeuronpatchError, type Patch, type RepairCase } from '../../src/engine/types';
import { entry, MODELS, modelOf, releaseAll, root, tempDir } from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

const devCases = path.join(root, 'bench', 'cases', 'dev.jsonl');
const regressionFile = path.join(root, 'bench', 'cases', 'regression.jsonl');

function readJsonl<T>(file: string): T[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
}

/** A prompt the model's tokenizer keeps inside its vocabulary, and the model's second choice after it. */
async function chosenNextToken(model: Model): Promise<RepairCase> {
  const prompt = 'a = 1\nb = 2\n';
  const ids = model.tokenizer.encode(prompt);
  assert.ok(ids.every((id) => id < model.info.vocab), 'the prompt must tokenize inside the model vocabulary');
  const res = await model.loaded.session.forward({ ids: [ids] });
  const V = model.info.vocab;
  const last = res.logits.subarray((ids.length - 1) * V, ids.length * V);
  const order = [...last.keys()].sort((a, b) => last[b] - last[a]);
  const texts = model.tokenizer.tokenTexts();
  // A word of its own (space first): a continuation piece would re-segment the healed prompt end.
  const second = order.slice(1).find((id) => /^ [!-~]+$/.test(texts[id]));
  assert.ok(second !== undefined);
  return { prompt, desired: texts[second], lineEnd: false };
}

describe('repair of a chosen next token on random-weight models', () => {
  for (const e of MODELS.filter((m) => m.source !== 'demo')) {
    test(e.name, async (t) => {
      const model = await modelOf(t, e);
      if (!model) return;
      const c = await chosenNextToken(model);
      const tr = await trace(model, c, { top: 5 });
      assert.ok(tr.at, 'the chosen token is not the model\'s first choice');
      assert.equal(tr.at.neurons.length, 5);
      assert.equal(tr.at.layers.length, model.info.layers);
      for (const n of tr.at.neurons) assert.ok(Number.isFinite(n.attribution) && n.ablationEffect !== null && n.promotes.length === 5);
      const r = await repair(model, c, { method: 'minimal' });
      t.diagnostic(`${e.name}: desired ${JSON.stringify(c.desired)}, ${r.neurons.length} neuron(s), ${r.ms.toFixed(0)} ms`);
      assert.ok(r.success, `not fixed: ${JSON.stringify(r.after)}`);
      assert.ok(r.after.startsWith(c.desired));
      const again = await model.generate(c.prompt, { patches: [r.patch] });
      assert.equal(again.completion, r.after, 'the patch alone reproduces the repaired completion');
    });
  }
});

const demo = entry('demo');

/**
 * The success rate the project documents for a repair (bench/README.md's target for `bench:repair`, which the README
 * reports on the dev cases): required on every set of real failures a test here repairs.
 */
const DOCUMENTED_SUCCESS = 0.95;
/** How many real failures the success test repairs per method: 95 % of 12 leaves no failure, as the README's 100 %. */
const FAILURES_TRIED = 12;

/** The demo model, or undefined (test skipped; in CI, failed) when it or the dev cases are absent. */
async function demoModel(t: TestContext): Promise<Model | undefined> {
  if (skipIfMissing(t, missingFiles([devCases, regressionFile], root), 'repo')) return undefined;
  return modelOf(t, demo);
}

/** The repair of the first of the given dev cases that the model gets wrong and `repair` fixes, with its case id. */
async function firstRepaired(model: Model, cs: RepairCase[], opts: Parameters<typeof repair>[2]) {
  for (const c of cs.slice(0, 24)) {
    if ((await model.generate(c.prompt)).completion === c.desired) continue;
    const r = await repair(model, c, opts);
    if (r.success) return { ...r, caseId: c.id };
  }
  assert.fail('none of the first 24 dev cases was repaired');
}

describe('repair on the demo model', () => {
  const cases = () => readJsonl<RepairCase>(devCases);
  const regression = () => readJsonl<{ prompt: string }>(regressionFile).slice(0, 24).map((r) => r.prompt);

  for (const method of ['minimal', 'joint'] as const) {
    test(`${method}: the first ${FAILURES_TRIED} real failures are fixed at the documented rate, each patch file reproduces its fix`, async (t) => {
      const model = await demoModel(t);
      if (!model) return;
      let tried = 0;
      const unfixed: string[] = [];
      // Dev cases are failures of the model they were harvested from; one a retrained model gets right is passed by.
      for (const c of cases()) {
        if (tried === FAILURES_TRIED) break;
        const before = await model.generate(c.prompt);
        if (before.completion === c.desired) continue;
        tried++;
        // The same solve every time (the 24 regression prompts as reference code); the first repair also runs the
        // analysis and the side-effect check, the others check success only.
        const full = tried === 1;
        const r = await repair(model, c, { method, reference: regression(), regression: full ? regression() : [], analyse: full });
        if (!r.success) {
          unfixed.push(`${c.id}: ${JSON.stringify(r.after)} for ${JSON.stringify(c.desired)}`);
          continue;
        }
        assert.equal(r.after, c.desired);
        assert.ok(r.neurons.length >= 1);
        if (full) assert.ok(r.specificity !== null && r.specificity >= 0 && r.specificity <= 1, `specificity ${r.specificity}`);
        const file = path.join(tempDir('patches'), 'patches.json');
        const store = await PatchStore.open(file, model.info);
        store.add(r.patch);
        await store.save();
        const reread = await PatchStore.open(file, model.info, { mustExist: true });
        const got = await model.generate(c.prompt, { patches: reread.active() });
        assert.equal(got.completion, c.desired, `${c.id}: generate with the saved patch file gives the repaired completion`);
        const plain = await model.generate(c.prompt);
        assert.equal(plain.completion, before.completion, `${c.id}: without patches the model is unchanged`);
        t.diagnostic(`${c.id}: ${r.method}${r.fallback ? ' (fallback)' : ''}, ${r.neurons.length} neuron(s), specificity ${r.specificity}, ${r.ms.toFixed(0)} ms`);
      }
      assert.equal(tried, FAILURES_TRIED, `the dev cases hold ${FAILURES_TRIED} failures of this model`);
      const rate = (tried - unfixed.length) / tried;
      t.diagnostic(`${method}: ${tried - unfixed.length}/${tried} fixed (${(100 * rate).toFixed(1)} %)`);
      assert.ok(rate >= DOCUMENTED_SUCCESS, `${method} fixed ${tried - unfixed.length}/${tried} < ${100 * DOCUMENTED_SUCCESS} %; not fixed:\n${unfixed.join('\n')}`);
    });
  }

  test('minimal: a multi-token failure takes fewer rounds than it has failing tokens', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    for (const c of cases().slice(0, 12)) {
      const rounds: string[] = [];
      const r = await repair(model, c, { method: 'minimal', analyse: false, onProgress: (l) => /^round \d+:/.test(l) && rounds.push(l) });
      if (!r.success || r.failingTokens < 5) continue;
      t.diagnostic(`${c.id}: ${r.failingTokens} failing tokens, ${r.neurons.length} neurons, ${rounds.length} rounds`);
      assert.ok(rounds.length < r.failingTokens, rounds.join('\n'));
      assert.ok(rounds.some((l) => /positions/.test(l)), 'a round handles several positions at once');
      return;
    }
    assert.fail('no case of the first 12 with five or more failing tokens was fixed');
  });

  test('minimal falls back to the joint solver when its budget cannot fix a case, and says so', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    // One neuron cannot fix a case of several failing tokens: the first such dev case of this model.
    let c: RepairCase | undefined;
    let alone: Awaited<ReturnType<typeof repair>> | undefined;
    for (const x of cases().slice(0, 24)) {
      if ((await model.generate(x.prompt)).completion === x.desired) continue;
      const r = await repair(model, x, { method: 'minimal', maxNeurons: 1, analyse: false, fallback: false });
      if (!r.success && r.failingTokens >= 3) [c, alone] = [x, r];
      if (c) break;
    }
    assert.ok(c && alone, 'one of the first 24 dev cases has three or more failing tokens that one neuron does not fix');
    assert.equal(alone.success, false);
    assert.equal(alone.method, 'minimal');
    assert.equal(alone.fallback, undefined);
    assert.ok(alone.neurons.length <= 1);
    const r = await repair(model, c, { method: 'minimal', maxNeurons: 1, analyse: false });
    t.diagnostic(`${c.id}: ${alone.failingTokens} failing tokens; ${r.fallback ?? ''}`);
    assert.ok(r.success, `not fixed: ${JSON.stringify(r.after)}`);
    assert.equal(r.method, 'joint');
    assert.equal(r.patch.method, 'joint');
    assert.match(r.fallback ?? '', new RegExp(`minimal solver left \\d+ of ${alone.failingTokens} failing tokens unfixed .*joint solver`));
  });

  test('side effects: lines the teacher-forced check keeps are the lines a decode gives', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    const prompts = readJsonl<{ prompt: string }>(regressionFile).slice(0, 48).map((r) => r.prompt);
    const r = await firstRepaired(model, cases(), { method: 'minimal', analyse: false });
    const patched = patchSet([r.patch], model.info.width);
    const before = await greedyLines(model.loaded, prompts);
    const checked = await linesAfter(model.loaded, prompts, before, patched);
    const decoded = await completions(model.loaded, prompts, patched);
    assert.deepEqual(checked, decoded);
    const changed = decoded.filter((d, i) => d !== before[i].completion).length;
    t.diagnostic(`${changed} of ${prompts.length} lines changed`);
    // Both paths of the check are taken: lines kept by the forward, lines decoded again.
    assert.ok(changed > 0 && changed < prompts.length);
  });

  test('ten sequential repairs: earlier fixes still hold', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    const active: Patch[] = [];
    const fixed: RepairCase[] = [];
    for (const c of cases().slice(12, 80)) {
      if (fixed.length === 10) break;
      if ((await model.generate(c.prompt, { patches: active })).completion === c.desired) continue;
      const r = await repair(model, c, { method: 'minimal', active });
      if (!r.success) continue;
      active.push(r.patch);
      fixed.push(c);
    }
    assert.equal(fixed.length, 10, 'ten cases repaired one after another');
    const now = await model.generateMany(fixed.map((c) => c.prompt), { patches: active });
    const held = now.filter((g, i) => g.completion === fixed[i].desired).length;
    t.diagnostic(`${held}/10 earlier fixes hold with all ten patches active`);
    // A repair only counts as successful when every earlier fix still holds, so all ten must.
    assert.equal(held, 10, `only ${held}/10 earlier fixes hold`);
  });

  test('bad input: empty desired text, one the model already produces, several lines', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    const c = cases()[0];
    await assert.rejects(repair(model, { prompt: c.prompt, desired: '   ' }), (e: unknown) => e instanceof NeuronpatchError && /empty/.test(e.message));
    const own = (await model.generate(c.prompt)).completion;
    await assert.rejects(repair(model, { prompt: c.prompt, desired: own }), (e: unknown) => e instanceof NeuronpatchError && /already/.test(e.message));
    await assert.rejects(repair(model, { prompt: c.prompt, desired: 'a\nb' }), (e: unknown) => e instanceof NeuronpatchError && /several lines/.test(e.message));
    for (const margin of [0, -1, Number.NaN, 50]) {
      await assert.rejects(repair(model, c, { margin }), (e: unknown) => e instanceof NeuronpatchError && /margin must be/.test(e.message));
    }
  });

  test('a smaller margin makes a smaller patch that still fixes the case', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    const large = await firstRepaired(model, cases(), { margin: 4, analyse: false });
    const c = cases().find((x) => x.id === large.caseId)!;
    const size = (p: Patch) => Math.hypot(...p.edits.flatMap((e) => e.delta));
    const small = await repair(model, c, { margin: 0.5, analyse: false });
    t.diagnostic(`‖Δ‖ ${size(small.patch).toFixed(2)} at margin 0.5, ${size(large.patch).toFixed(2)} at margin 4`);
    assert.ok(small.success && large.success);
    assert.deepEqual([small.patch.metrics.margin, large.patch.metrics.margin], [0.5, 4], 'the patch records its margin');
    assert.ok(size(small.patch) < size(large.patch));
  });

  test('a prompt beyond the context window is cut with a notice', async (t) => {
    const model = await demoModel(t);
    if (!model) return;
    const c = cases()[0];
    const long = c.prompt.repeat(Math.ceil((model.info.context * 8) / c.prompt.length));
    const tr = await trace(model, { prompt: long, desired: c.desired });
    assert.match(tr.notice ?? '', /context window/);
  });
});
