// The engine process (src/vscode/worker): the extension host's model runs in a child process. Through it, on the
// demo model: the same model info and completions as the engine in-process; completions reusing the prefix's KV
// cache equal those without; a newer completion in the same lane cancels the stale one; a cancelled repair rejects
// with Cancelled at once and leaves the engine serving; a cancelled call that holds the engine (a stopped process
// stands in for a run onnxruntime cannot interrupt) ends the process, and a fresh one answers the calls still
// wanted; a process that dies (out of memory) fails its calls with a clear error and the next call starts a new
// one; the engine ends when its host does; a folder that does not load rejects with the engine's error.
// (Cancellation latency and the host's event-loop stalls are measured in bench:scale, not timed here.)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Cancelled, loadModel, type Model, repair } from '../../src/engine';
import { EngineWorker, WORKER_FILE } from '../../src/vscode/worker/client';
import { SIDE_EFFECT_COUNT } from '../../src/vscode/worker/protocol';
import { entry, present, root, testCacheDir } from '../helpers/models';

const demo = entry('demo');
const skip = !present(demo) ? 'the demo model is absent' : !existsSync(WORKER_FILE) ? `${WORKER_FILE} is not built (npm run build)` : undefined;

describe('engine process', { skip }, () => {
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
    await worker.whenCancelledStopped();
    assert.equal(worker.restarts.cancel, 0, 'on the demo model the engine stops at a checkpoint, well within hardCancelMs');
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

/** Whether a process with this id runs (signal 0 only checks). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

describe('engine process lifetime', { skip }, () => {
  const [c] = skip ? [] : readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 1)
    .map((l) => JSON.parse(l) as { prompt: string; desired: string });

  test('a cancelled call that holds the engine past hardCancelMs ends the process; a fresh one answers the calls still wanted', async () => {
    const lines: string[] = [];
    const worker = await EngineWorker.start(demo.dir, { cacheDir: testCacheDir(), hardCancelMs: 300, log: (l) => lines.push(l) });
    const local = await loadModel(demo.dir, { cacheDir: testCacheDir() });
    try {
      const expected = await local.generate(c.prompt, { maxNewTokens: 12 });
      const ac = new AbortController();
      let inFlight: () => void = () => undefined;
      const started = new Promise<void>((r) => (inFlight = r));
      const running = worker.repair(c, { signal: ac.signal, regression: [], onProgress: () => inFlight() });
      await started;
      const pid = worker.pid!;
      // The process can no longer answer anything: as a run onnxruntime cannot interrupt would hold it.
      process.kill(pid, 'SIGSTOP');
      const waiting = worker.generate(c.prompt, { maxNewTokens: 12 });
      const t0 = Date.now();
      ac.abort();
      const workStopped = worker.whenCancelledStopped().then(() => Date.now());
      await assert.rejects(running, Cancelled);
      assert.ok(Date.now() - t0 < 100, 'the host settles at once');
      assert.ok((await workStopped) - t0 >= 300, 'the work stops when the process is ended, not before hardCancelMs nor when the promise settles');
      assert.ok(await until(() => !alive(pid), 5000), 'the held process was ended');
      assert.equal(worker.restarts.cancel, 1);
      const answered = await waiting;
      assert.notEqual(worker.pid, pid);
      assert.equal(answered.completion, expected.completion, 'the waiting call is answered by the fresh process');
      assert.ok(lines.some((l) => /cancelled repair was still running/.test(l)), lines.join('\n'));
    } finally {
      await worker.dispose();
      await local.dispose();
    }
  });

  test('a completion superseded in its lane never ends the process', async () => {
    const worker = await EngineWorker.start(demo.dir, { cacheDir: testCacheDir(), hardCancelMs: 0 });
    try {
      const pid = worker.pid;
      for (let i = 0; i < 5; i++) {
        const ac = new AbortController();
        const p = worker.generate(`${c.prompt}${' '.repeat(i)}`, { maxNewTokens: 32, multiline: true, lane: 'completion', signal: ac.signal });
        setTimeout(() => ac.abort(), 5);
        await p.catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(worker.restarts.cancel, 0);
      assert.equal(worker.pid, pid);
    } finally {
      await worker.dispose();
    }
  });

  test('a process that dies fails its calls with a clear error, and the next call starts a new one', async () => {
    const lines: string[] = [];
    const worker = await EngineWorker.start(demo.dir, { cacheDir: testCacheDir(), log: (l) => lines.push(l) });
    try {
      const pid = worker.pid!;
      const before = await worker.generate(c.prompt, { maxNewTokens: 8 });
      const running = worker.repair(c, { regression: [] });
      process.kill(pid, 'SIGKILL');
      await assert.rejects(running, /engine process stopped unexpectedly \(signal SIGKILL: most likely out of memory\)\. It starts again on the next call/);
      const again = await worker.generate(c.prompt, { maxNewTokens: 8 });
      assert.equal(again.completion, before.completion);
      assert.notEqual(worker.pid, pid);
      assert.equal(worker.restarts.crash, 1);
      assert.ok(lines.some((l) => /stopped unexpectedly/.test(l)));
    } finally {
      await worker.dispose();
    }
  });

  test('a process that dies again while loading after a restart ends the engine with what to do, instead of restarting on every call', async () => {
    const worker = await EngineWorker.start(demo.dir, { cacheDir: testCacheDir() });
    try {
      process.kill(worker.pid!, 'SIGKILL');
      await until(() => worker.pid === undefined, 5000);
      // The next call starts a fresh process synchronously; it dies before its model is loaded.
      const call = worker.generate(c.prompt, { maxNewTokens: 4 });
      process.kill(worker.pid!, 'SIGKILL');
      await assert.rejects(call, (e: Error) => /stopped again while loading the model after a restart/.test(e.message) && /Reload Model/.test((e as { hint?: string }).hint ?? ''));
      await assert.rejects(worker.generate(c.prompt, { maxNewTokens: 4 }), /stopped again while loading/);
      assert.equal(worker.pid, undefined, 'no process was started again');
    } finally {
      await worker.dispose();
    }
  });

  test('the engine process ends when its host does (no model left holding memory)', async () => {
    // A host that starts the engine, prints its pid, and is then killed outright (no dispose).
    const host = `const { EngineWorker } = require(${JSON.stringify(path.join(root, 'out', 'src', 'vscode', 'worker', 'client.js'))});
      EngineWorker.start(${JSON.stringify(demo.dir)}, { cacheDir: ${JSON.stringify(testCacheDir())} })
        .then((w) => { process.stdout.write(String(w.pid)); process.kill(process.pid, 'SIGKILL'); });`;
    let out = '';
    try {
      execFileSync(process.execPath, ['-e', host], { encoding: 'utf8' });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? '');
    }
    const pid = Number(out);
    assert.ok(pid > 0, `the host printed the engine's pid: ${JSON.stringify(out)}`);
    assert.ok(await until(() => !alive(pid), 10_000), 'the engine process ended with its host');
  });
});

test('a folder that does not load rejects with the engine\'s error and ends the process', { skip }, async () => {
  await assert.rejects(EngineWorker.start(path.join(root, 'no-such-model-folder'), { cacheDir: testCacheDir() }), /Model folder not found/);
});
