// The extension's memo of the regression lines before a repair: decoded once per model, active patches and prompts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { repair } from '../../src/engine';
import type { RepairCase } from '../../src/engine/types';
import { type LineSource, RegressionLines } from '../../src/vscode/regressionLines';
import { entry, modelOf, releaseAll, root } from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

const demo = entry('demo');
const dev = path.join(root, 'bench', 'cases', 'dev.jsonl');
const regression = path.join(root, 'bench', 'cases', 'regression.jsonl');

test('regression lines are decoded once per prompt while the active patches stay the same', async (t) => {
  if (skipIfMissing(t, missingFiles([dev, regression], root), 'repo')) return;
  const model = await modelOf(t, demo);
  if (!model) return;
  const prompts = fs.readFileSync(regression, 'utf8').split('\n').filter((l) => l.trim()).slice(0, 25).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const first = prompts.slice(0, 24);
  // The real model, counting the prompts the memo asks it to decode.
  let decoded = 0;
  const source: LineSource = {
    info: model.info,
    greedyLines: (ps, active, signal) => {
      decoded += ps.length;
      return model.greedyLines(ps, active, signal);
    },
  };
  const memo = new RegressionLines();
  const plain = await memo.get(source, first, []);
  assert.equal(decoded, first.length);
  assert.deepEqual(plain.map((l) => l.completion), (await model.generateMany(first)).map((g) => g.completion));
  assert.deepEqual(await memo.get(source, first, []), plain, 'the same prompts and patches: the same lines');
  assert.equal(decoded, first.length, 'the same prompts and patches: nothing decoded again');
  await memo.get(source, prompts.slice(1), []);
  assert.equal(decoded, first.length + 1, 'one new prompt: only it is decoded');
  assert.equal(memo.known(source, prompts, []), prompts.length);

  const c = JSON.parse(fs.readFileSync(dev, 'utf8').split('\n')[0]) as RepairCase;
  const r = await repair(model, c, { method: 'minimal', analyse: false });
  assert.ok(r.success);
  const before = decoded;
  const patched = await memo.get(source, first, [r.patch]);
  assert.equal(decoded - before, first.length, 'another patch stack: decoded again');
  assert.deepEqual(patched.map((l) => l.completion), (await model.generateMany(first, { patches: [r.patch] })).map((g) => g.completion));
  await memo.get(source, first, [{ ...r.patch }]);
  assert.equal(decoded - before, first.length, 'the same patch (a copy): nothing decoded again');
  const edited = { ...r.patch, edits: r.patch.edits.map((e) => ({ ...e, delta: e.delta.map((v) => v * 0.5) })) };
  await memo.get(source, first, [edited]);
  assert.equal(decoded - before, 2 * first.length, 'the same id with other edits: decoded again');
  // A keyed patch's change is its added neurons (edits may be empty): the same id with another added neuron is
  // another patch set too (a silent one here: zero key, threshold 1).
  const layer = (model.loaded.graph.keyedLayers ?? [0])[0];
  const zeros = (): number[] => new Array<number>(model.info.width).fill(0);
  await memo.get(source, first, [{ ...r.patch, added: [{ layer, key: zeros(), threshold: 1, value: zeros() }] }]);
  assert.equal(decoded - before, 3 * first.length, 'the same id with other added neurons: decoded again');
});
