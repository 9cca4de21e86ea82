// The engine worker (src/vscode/worker): the extension host's model runs in a worker thread. Through it, on the demo
// model: the same model info and completions as the engine in-process; completions reusing the prefix's KV cache
// equal those without; a newer completion in the same lane cancels the stale one; a cancelled repair rejects
// with Cancelled at once and leaves the worker serving; a folder that does not load rejects with the engine's
// error. (Cancellation latency and the host's event-loop stalls are measured in bench:scale, not timed here.)
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Cancelled, loadModel, type Model, repair } from '../../src/engine';
import { EngineWorker, WORKER_FILE } from '../../src/vscode/worker/client';
import { SIDE_EFFECT_COUNT } from '../../src/vscode/worker/protocol';
import { entry, present, root, testCacheDir } from '../helpers/models';

const demo = entry('demo');
const skip = !present(demo) ? 'the demo model is absent' : !existsSync(WORKER_FILE) ? `${WORKER_FILE} is not built (npm run build)` : undefined;

describe('engine worker', { skip }, () => {
  let worker: EngineWorker;
  let local: Model;
  before(async () => {
    worker = await EngineWorker.start(demo.dir, { cacheDir: testCacheDir() });
    local = await loadModel(demo.dir, { cacheDir: testCacheDir() });
  });
  after(async () => {
    await worker?.dispose();
    await local?.dispose();
  });

  const cases = () => readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 4)
    .map((l) => JSON.parse(l) as { prompt: string; desired: string });

  test('the worker loads the same model and completes as the engine in-process', async () => {
    assert.equal(worker.info.hash, local.info.hash);
    assert.equal(worker.info.layers, local.info.layers);
    for (const c of cases()) {
      const a = await worker.generate(c.prompt, { maxNewTokens: 16 });
      const b = await local.generate(c.prompt, { maxNewTokens: 16 });
      assert.equal(a.completion, b.completion);
      assert.deepEqual(a.tokens.map((t) => t.id), b.tokens.map((t) => t.id));
    }
  });

  test('prefix reuse through the worker gives the same completions as without', async () => {
    const doc = cases().map((c) => c.prompt).join('\n');
    for (let n = Math.max(10, doc.length - 60); n <= doc.length; n += 6) {
      const p = doc.slice(0, n);
      const reused = await worker.generate(p, { maxNewTokens: 10, reusePrefix: true });
      const fresh = await local.generate(p, { maxNewTokens: 10 });
      assert.equal(reused.completion, fresh.completion, `prompt of ${n} characters`);
    }
  });

  test('a newer completion in the same lane cancels the stale one', async () => {
    const [c] = cases();
    const stale = worker.generate(c.prompt, { maxNewTokens: 48, multiline: true, lane: 'completion' });
    const fresh = worker.generate(`${c.prompt} `, { maxNewTokens: 4, lane: 'completion' });
    await assert.rejects(stale, Cancelled);
    assert.equal(typeof (await fresh).completion, 'string');
  });

  test('a cancelled repair rejects with Cancelled at once, and the worker goes on serving', async () => {
    const [c] = cases();
    const ac = new AbortController();
    const running = worker.repair(c, { signal: ac.signal, regression: [] });
    setTimeout(() => ac.abort(), 200);
    const t0 = Date.now();
    await assert.rejects(running, Cancelled);
    assert.ok(Date.now() - t0 < 5000);
    const after = await worker.generate(c.prompt, { maxNewTokens: 8 });
    assert.equal(after.completion, (await local.generate(c.prompt, { maxNewTokens: 8 })).completion);
  });

  test('a repair through the worker reports progress and gives the in-process result', async () => {
    const [c] = cases();
    const lines: string[] = [];
    const r = await worker.repair(c, { onProgress: (l) => lines.push(l), regression: [] });
    const mine = await repair(local, c, { regression: [] });
    assert.ok(lines.length >= 3, 'progress lines cross the boundary');
    assert.equal(r.success, mine.success);
    assert.equal(r.after, mine.after);
    assert.deepEqual(r.neurons.map((n) => [n.layer, n.neuron]), mine.neurons.map((n) => [n.layer, n.neuron]));
  });

  test('the side-effect check\'s counts cross the boundary as progress lines the panel reads', async () => {
    const [c, ...others] = cases();
    const regression = others.slice(0, 3).map((o) => o.prompt);
    const counts: [number, number][] = [];
    await worker.repair(c, { onProgress: (l) => { const m = SIDE_EFFECT_COUNT.exec(l); if (m) counts.push([Number(m[1]), Number(m[2])]); }, regression });
    assert.ok(counts.length >= 2, `counts arrived: ${JSON.stringify(counts)}`);
    const [done, total] = counts[counts.length - 1];
    assert.equal(done, total, 'the last count is the whole check');
    assert.ok(counts.every(([d], i) => i === 0 || d >= counts[i - 1][0]), 'counts only grow');
  });
});

test('a folder that does not load rejects with the engine\'s error and ends the worker', { skip }, async () => {
  await assert.rejects(EngineWorker.start(path.join(root, 'no-such-model-folder'), { cacheDir: testCacheDir() }), /Model folder not found/);
});
