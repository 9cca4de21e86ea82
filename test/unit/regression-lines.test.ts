// The extension's memo of the regression lines before a repair: decoded once per model, active patches and prompts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { repair } from '../../src/engine';
import type { RepairCase } from '../../src/engine/types';
import { RegressionLines } from '../../src/vscode/regressionLines';
import { entry, modelOf, releaseAll, root } from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

const demo = entry('demo');
const dev = path.join(root, 'bench', 'cases', 'dev.jsonl');
const regression = path.join(root, 'bench', 'cases', 'regression.jsonl');

test('regression lines are decoded once while the active patches stay the same', async (t) => {
  if (skipIfMissing(t, missingFiles([dev, regression], root), 'repo')) return;
  const model = await modelOf(t, demo);
  if (!model) return;
  const prompts = fs.readFileSync(regression, 'utf8').split('\n').filter((l) => l.trim()).slice(0, 24).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const memo = new RegressionLines();
  const plain = await memo.get(model, prompts, []);
  assert.equal(plain.length, prompts.length);
  assert.deepEqual(plain.map((l) => l.completion), (await model.generateMany(prompts)).map((g) => g.completion));
  assert.equal(await memo.get(model, prompts, []), plain, 'the same prompts and patches: kept');
  assert.notEqual(await memo.get(model, prompts.slice(1), []), plain, 'other prompts: decoded');

  const c = JSON.parse(fs.readFileSync(dev, 'utf8').split('\n')[0]) as RepairCase;
  const r = await repair(model, c, { method: 'minimal', analyse: false });
  assert.ok(r.success);
  const patched = await memo.get(model, prompts, [r.patch]);
  assert.notEqual(patched, plain, 'another patch stack: decoded again');
  assert.deepEqual(patched.map((l) => l.completion), (await model.generateMany(prompts, { patches: [r.patch] })).map((g) => g.completion));
  assert.equal(await memo.get(model, prompts, [{ ...r.patch }]), patched, 'the same patch (a copy): kept');
  const edited = { ...r.patch, edits: r.patch.edits.map((e) => ({ ...e, delta: e.delta.map((v) => v * 0.5) })) };
  assert.notEqual(await memo.get(model, prompts, [edited]), patched, 'the same id with other edits: decoded again');
});
