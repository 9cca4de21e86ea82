// Patch files under concurrency and crashes (issue 17, section 2), through the real CLI on the embedded model:
// two `repair --out F` at once keep both patches (a delay is injected inside the lock between the read and the
// rename, the gap where, without the lock, the second writer's rename dropped the first one's patch);
// a lock left by a process killed with -9 is taken over; temp files of dead writers are swept when the file is
// opened; a save that fails after the repair finished writes the patch elsewhere and says where.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { lockPathOf } from '../../src/engine/patches/lock';
import { PatchStore } from '../../src/engine/patches/store';
import { PATCH_FORMAT, type ModelInfo } from '../../src/engine/types';
import { absence, entry, root, tempDir, testCacheDir } from '../helpers/models';
import { skipIfMissing } from '../helpers/need';

const cli = path.join(root, 'dist', 'cli.js');
const demo = entry('demo');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts the CLI; `done` resolves when it exits. */
function start(args: string[], env: Record<string, string> = {}): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  const child = spawn(process.execPath, [cli, ...args], {
    env: { ...process.env, NEURONPATCH_CACHE: testCacheDir(), ORT_DISABLE_TELEMETRY: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

/** The first dev cases that the demo model gets wrong (the CLI repairs them in a few seconds each). */
function cases(n: number): { prompt: string; desired: string }[] {
  const lines = fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n').filter(Boolean);
  return lines.slice(0, n).map((l) => JSON.parse(l) as { prompt: string; desired: string });
}

function repairArgs(dir: string, i: number, out: string): string[] {
  const c = cases(i + 1)[i];
  const prompt = path.join(dir, `prompt-${i}.py`);
  fs.writeFileSync(prompt, c.prompt);
  return ['repair', '--model', demo.dir, '--prompt-file', prompt, '--desired', c.desired, '--out', out, '--json'];
}

function patchIds(file: string): string[] {
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { patches: { id: string }[] }).patches.map((p) => p.id);
}

function needsDemo(t: TestContext): boolean {
  const why = absence(demo) ?? (fs.existsSync(cli) ? undefined : `${cli} is not built (npm run build)`);
  return !skipIfMissing(t, why, 'repo');
}

describe('patch file writers', () => {
  it('two repair --out F of the same case at once keep both patches (3 trials, 3 s injected inside the lock)', async (t) => {
    if (!needsDemo(t)) return;
    for (let trial = 0; trial < 3; trial++) {
      const dir = tempDir('concurrent');
      const out = path.join(dir, 'patches.json');
      const env = { NEURONPATCH_TEST_SAVE_DELAY_MS: '3000' };
      // The same case twice: both saves reach the gap at about the same time (two patches, two ids).
      const runs = await Promise.all([start(repairArgs(dir, 0, out), env).done, start(repairArgs(dir, 0, out), env).done]);
      for (const r of runs) assert.equal(r.code, 0, `trial ${trial}: ${r.stderr}`);
      const written = runs.map((r) => (JSON.parse(r.stdout) as { patch: string }).patch);
      assert.deepEqual(written, [out, out], 'both say they wrote the file');
      assert.equal(patchIds(out).length, 2, `trial ${trial}: both patches are in the file`);
      assert.ok(!fs.existsSync(lockPathOf(out)), 'the lock is released');
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file is left');
    }
  });

  it('a lock left by a writer killed with -9 is taken over, and the next save keeps both patches', async (t) => {
    if (!needsDemo(t)) return;
    const dir = tempDir('killed');
    const out = path.join(dir, 'patches.json');
    const first = await start(repairArgs(dir, 0, out)).done;
    assert.equal(first.code, 0, first.stderr);
    // A writer that holds the lock (inside the injected delay) is killed.
    const victim = start(repairArgs(dir, 1, out), { NEURONPATCH_TEST_SAVE_DELAY_MS: '60000' });
    const deadline = Date.now() + 60_000;
    while (!fs.existsSync(lockPathOf(out)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(fs.existsSync(lockPathOf(out)), 'the victim took the lock');
    victim.child.kill('SIGKILL');
    assert.equal((await victim.done).signal, 'SIGKILL');
    assert.ok(fs.existsSync(lockPathOf(out)), 'kill -9 leaves the lock behind');
    const t0 = Date.now();
    const next = await start(repairArgs(dir, 2, out)).done;
    assert.equal(next.code, 0, next.stderr);
    t.diagnostic(`the next writer finished ${Date.now() - t0} ms after the kill (the lock goes stale after 5 s)`);
    assert.equal(patchIds(out).length, 2, 'the first patch and the new one');
    assert.ok(!fs.existsSync(lockPathOf(out)));
  });

  it('a save that fails after the repair (the file replaced by a folder mid-save) writes the patch to a file of its own and says where (exit 4)', async (t) => {
    if (!needsDemo(t)) return;
    const dir = tempDir('rescue');
    const out = path.join(dir, 'patches.json');
    const run = start(repairArgs(dir, 0, out), { NEURONPATCH_TEST_SAVE_DELAY_MS: '4000' });
    // While the writer waits inside its lock, another program puts a folder where the file goes.
    const deadline = Date.now() + 60_000;
    while (!fs.existsSync(lockPathOf(out)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'keep'), 'theirs');
    const r = await run.done;
    assert.equal(r.code, 4, r.stderr);
    const summary = JSON.parse(r.stdout) as { patch: string; rescued: boolean };
    assert.equal(summary.rescued, true);
    assert.notEqual(summary.patch, out);
    assert.match(r.stderr, /could not save the patch into/);
    assert.ok(r.stderr.includes(summary.patch), 'stderr names where the patch went');
    assert.equal(patchIds(summary.patch).length, 1, 'the rescued file holds the new patch');
    assert.deepEqual(fs.readdirSync(out), ['keep'], 'the folder is untouched');
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
});

describe('temp files of dead writers', () => {
  const model: ModelInfo = {
    name: 'tiny', folder: '/m', architecture: 'llama', gated: true, layers: 2, neurons: 8, width: 4, vocab: 10, context: 16,
    finalNorm: 'rms', tiedUnembedding: false, weightType: 'float32', hash: 'c'.repeat(64), eosTokenIds: [],
  };

  it('are swept when the patch file is opened; a live writer\'s temp file and other files stay', async () => {
    const dir = tempDir('sweep');
    const file = path.join(dir, 'patches.json');
    fs.writeFileSync(file, JSON.stringify({ format: PATCH_FORMAT, model: { name: 'tiny', hash: model.hash }, patches: [] }));
    // A pid that is not running: the highest pid the kernel hands out, plus one.
    const dead = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    const stale = [`.patches.json.${dead}.0123abcd.tmp`, `.patches.json.${dead}.ffffffff.tmp`];
    const kept = [`.patches.json.${process.pid}.00000000.tmp`, `.other.json.${dead}.0123abcd.tmp`, 'notes.tmp'];
    for (const f of [...stale, ...kept]) fs.writeFileSync(path.join(dir, f), 'partial');
    const store = await PatchStore.open(file, model);
    assert.deepEqual(store.swept.map((f) => path.basename(f)).sort(), stale.sort());
    assert.deepEqual(fs.readdirSync(dir).sort(), [...kept, 'patches.json'].sort());
  });
});
