// Counts the extension shows (src/vscode/progressText.ts, src/vscode/regressionLines.ts): each count counts the
// things its words name, and the count of workspace completions moves per completion from the first one.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { patchCount, sideEffectStep } from '../../src/vscode/progressText';
import { nextChunk, RegressionLines } from '../../src/vscode/regressionLines';
import { entry, modelOf, releaseAll, root } from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

test('the status bar names disabled patches: "0 of 1 patch active", not "0 patches"', () => {
  assert.equal(patchCount(0, 1), '0 of 1 patch active');
  assert.equal(patchCount(1, 3), '1 of 3 patches active');
  assert.equal(patchCount(2, 2), '2 patches');
  assert.equal(patchCount(0, 0), '0 patches');
  assert.equal(patchCount(1, 1), '1 patch');
});

test("the side-effect count is shown per step, each in the step's own items (17 completions: n/17, not n/34)", () => {
  // The engine counts 17 completions, then 0 guard lines, then the 17 texts whose loss it measures: 34 in all.
  const steps = Array.from({ length: 35 }, (_, d) => sideEffectStep(d, 34, 17, 0));
  for (const s of steps) {
    assert.ok(s.done >= 0 && s.done <= s.total, JSON.stringify(s));
    const n = /(\d+) (completion|line|workspace text)/.exec(s.phase);
    assert.ok(n, s.phase);
    assert.equal(Number(n[1]), s.total, `the phase names what it counts: ${s.phase} ${s.done}/${s.total}`);
  }
  assert.deepEqual(steps[8], { phase: 'checking that 17 completions from your workspace stay the same', done: 8, total: 17 });
  assert.match(steps[20].phase, /loss on 17 workspace texts/);
  assert.equal(steps[20].done, 3);
  assert.equal(steps[34].done, 17);
  // With guard lines: completions, then the guard lines, then the loss texts.
  assert.deepEqual([sideEffectStep(5, 15, 5, 3, ).total, sideEffectStep(6, 15, 5, 3).done], [3, 1]);
  assert.match(sideEffectStep(6, 15, 5, 3).phase, /3 lines the model gets right/);
  assert.deepEqual([sideEffectStep(9, 15, 5, 3).done, sideEffectStep(9, 15, 5, 3).total], [1, 7]);
  assert.equal(sideEffectStep(8, 8, 5, 3).done, 3, 'guard lines last: their step ends full');
});

test('batch sizes grow while batches are quick and shrink to one while they take seconds', () => {
  assert.equal(nextChunk(1, 50), 2);
  assert.equal(nextChunk(8, 50), 16);
  assert.equal(nextChunk(16, 50), 16);
  assert.equal(nextChunk(4, 2000), 4);
  assert.equal(nextChunk(4, 9000), 2);
  assert.equal(nextChunk(1, 60_000), 1);
});

test('the count of workspace completions moves after the first completion is decoded', async (t) => {
  const regression = path.join(root, 'bench', 'cases', 'regression.jsonl');
  if (skipIfMissing(t, missingFiles([regression], root), 'repo')) return;
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  const prompts = fs.readFileSync(regression, 'utf8').split('\n').filter((l) => l.trim()).slice(0, 17).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const counts: number[] = [];
  const lines = await new RegressionLines().get(model, prompts, [], undefined, (done) => counts.push(done));
  assert.equal(counts[0], 0);
  assert.equal(counts[1], 1, 'the first report after decoding starts counts one completion');
  assert.equal(counts[counts.length - 1], 17);
  assert.ok(counts.every((c, i) => i === 0 || c > counts[i - 1]), `the count only goes up: ${counts.join(',')}`);
  assert.deepEqual(lines.map((l) => l.completion), (await model.generateMany(prompts)).map((g) => g.completion), 'the same lines as one batch');
});
