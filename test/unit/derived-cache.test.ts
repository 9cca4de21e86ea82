// The caches of a side-effect check's fixed inputs (issue 13/16 follow-up: a CLI repair re-derived them on every
// run): guard lines harvested from reference code, the regression prompts' greedy lines before a repair, and the
// unpatched held-out loss, each kept per model hash and inputs hash in the model's cache folder. On the real demo
// model: the second call reads what the first computed (and returns the same), other inputs or other patches are
// computed anew, and an entry that is corrupt, edited, or another model's is recomputed, never trusted.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { type CacheOutcome, derivedFile, inputsHash, readDerived, writeDerived } from '../../src/engine/model/derivedCache';
import { patchSet } from '../../src/engine/patches/patchset';
import { baselineLines, baselineNextToken } from '../../src/engine/repair/baseline';
import { harvestGuard } from '../../src/engine/repair/guard';
import { heldOutLossOf, measureSideEffects } from '../../src/engine/repair/measures';
import { greedyLines, nextTokenShift } from '../../src/engine/repair/verify';
import type { Patch } from '../../src/engine/types';
import { entry, modelOf, releaseAll, root, tempDir } from '../helpers/models';

after(releaseAll);

const demo = entry('demo');
/** Real regression prompts, made unique to this run (a first line of their own) so that no earlier run cached them. */
function prompts(n: number, from = 0): string[] {
  const tag = `# ${process.pid}-${Date.now()}\n`;
  return fs.readFileSync(path.join(root, 'bench', 'cases', 'regression.jsonl'), 'utf8').split('\n').filter(Boolean)
    .slice(from, from + n).map((l) => tag + (JSON.parse(l) as { prompt: string }).prompt);
}

/** The one cache file of `kind` written since `before` (a listing of the folder before the call). */
function newFile(dir: string, kind: string, before: string[]): string {
  const added = fs.readdirSync(dir).filter((f) => f.startsWith(`${kind}-`) && !before.includes(f));
  assert.equal(added.length, 1, `one new ${kind} entry (${added.join(', ')})`);
  return path.join(dir, added[0]);
}

/** Rewrites an entry's payload (keeping it valid JSON) without fixing its recorded sha256. */
function editPayload(file: string, edit: (v: unknown) => unknown): void {
  const env = JSON.parse(fs.readFileSync(file, 'utf8')) as { payload: string };
  env.payload = JSON.stringify(edit(JSON.parse(env.payload)));
  fs.writeFileSync(file, JSON.stringify(env));
}

describe('derived cache files', () => {
  it('read back only with the same kind, format, model and inputs, and an untouched payload', async () => {
    const dir = tempDir('derived');
    const key = { kind: 'lines', format: 1, model: 'a'.repeat(64), inputs: inputsHash(['x']) };
    const ok = (v: unknown) => (Array.isArray(v) ? undefined : 'not a list');
    assert.deepEqual(readDerived(dir, key, ok), { why: 'not cached yet' });
    await writeDerived(dir, key, [1, 2, 3]);
    assert.deepEqual(readDerived(dir, key, ok), { value: [1, 2, 3] });
    assert.match((readDerived(dir, { ...key, model: 'b'.repeat(64) }, ok) as { why: string }).why, /another model/);
    assert.match((readDerived(dir, { ...key, format: 2 }, ok) as { why: string }).why, /another kind or format/);
    const file = derivedFile(dir, key);
    editPayload(file, () => [1, 2, 4]);
    assert.match((readDerived(dir, key, ok) as { why: string }).why, /sha256/);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 30));
    assert.match((readDerived(dir, key, ok) as { why: string }).why, /does not parse/);
    await writeDerived(dir, key, { not: 'a list' });
    assert.match((readDerived(dir, key, ok) as { why: string }).why, /malformed \(not a list\)/);
  });
});

describe('guard set cache (demo model)', () => {
  it('is read on the second harvest, harvested anew for other reference code, and rebuilt when corrupt or foreign', async (t) => {
    const model = await modelOf(t, demo);
    if (!model) return;
    const m = model.loaded;
    const texts = prompts(16);
    const outcomes: CacheOutcome[] = [];
    const onCache = (o: CacheOutcome) => outcomes.push(o);
    const listed = fs.readdirSync(m.cacheDir);
    const first = await harvestGuard(m, texts, { onCache });
    assert.ok(first.length > 0, 'the demo model completes some of these lines right');
    assert.deepEqual(outcomes.pop(), { hit: false, why: 'not cached yet' });
    const file = newFile(m.cacheDir, 'guard', listed);

    let progress = 0;
    assert.deepEqual(await harvestGuard(m, texts, { onCache, onProgress: () => progress++ }), first);
    assert.deepEqual(outcomes.pop(), { hit: true });
    assert.equal(progress, 0, 'a cache hit decodes nothing');

    // Another reference set (one text fewer) is another entry.
    await harvestGuard(m, texts.slice(1), { onCache });
    assert.equal(outcomes.pop()?.hit, false);

    // An edited line (valid JSON, the recorded sha256 no longer matches) is not trusted: harvested again.
    editPayload(file, (v) => (v as { desired: string }[]).map((g) => ({ ...g, desired: 'return 42' })));
    assert.deepEqual(await harvestGuard(m, texts, { onCache }), first);
    assert.match(JSON.stringify(outcomes.pop()), /sha256/);
    // Truncated: harvested again, and the rewritten entry is read next time.
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 100));
    assert.deepEqual(await harvestGuard(m, texts, { onCache }), first);
    assert.match(JSON.stringify(outcomes.pop()), /does not parse/);
    assert.deepEqual(await harvestGuard(m, texts, { onCache }), first);
    assert.deepEqual(outcomes.pop(), { hit: true });
    // Another model's entry copied under this name (its own hash, a valid payload): harvested again.
    const env = JSON.parse(fs.readFileSync(file, 'utf8')) as { model: string };
    fs.writeFileSync(file, JSON.stringify({ ...env, model: '0'.repeat(64) }));
    assert.deepEqual(await harvestGuard(m, texts, { onCache }), first);
    assert.match(JSON.stringify(outcomes.pop()), /another model/);
  });
});

describe('regression lines before a repair (demo model)', () => {
  it('are cached per model, prompts and patches, equal to a plain decode, and decoded again when corrupt', async (t) => {
    const model = await modelOf(t, demo);
    if (!model) return;
    const m = model.loaded;
    const texts = prompts(20, 40);
    const listed = fs.readdirSync(m.cacheDir);
    const ticks: number[] = [];
    const first = await baselineLines(m, texts, { onProgress: (done) => ticks.push(done) });
    assert.deepEqual(first.cache, { hit: false, why: 'not cached yet' });
    assert.deepEqual(ticks, [0, 16, 20], 'progress per chunk of 16 prompts');
    assert.deepEqual(first.lines, await greedyLines(m, texts), 'the same lines as an uncached decode');
    const file = newFile(m.cacheDir, 'lines', listed);

    const second = await baselineLines(m, texts);
    assert.deepEqual(second, { lines: first.lines, cache: { hit: true } });

    // Under a patch the lines are another entry (the patch's edits are part of the key).
    const patch = {
      id: 'p', createdAt: new Date().toISOString(), enabled: true, method: 'minimal',
      case: { prompt: 'x', desired: 'y', before: 'z', after: 'y' },
      edits: [{ layer: 5, neuron: 7, delta: Array.from({ length: m.info.width }, (_, i) => (i % 7) - 3) }],
      metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 1 },
    } as unknown as Patch;
    const patched = await baselineLines(m, texts, { active: [patch] });
    assert.equal(patched.cache.hit, false);
    assert.deepEqual(patched.lines, await greedyLines(m, texts, patchSet([patch], m.info.width)));

    // A token id outside the vocabulary, with a sha256 that matches the edit (written through writeDerived's
    // format): the shape check refuses it.
    const env = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const bad = (JSON.parse(env.payload as string) as { tokens: number[] }[]).map((l, i) => (i === 3 ? { ...l, tokens: [m.info.vocab + 5] } : l));
    await writeDerived(m.cacheDir, { kind: env.kind as string, format: env.format as number, model: env.model as string, inputs: env.inputs as string }, bad);
    const again = await baselineLines(m, texts);
    assert.match(JSON.stringify(again.cache), /malformed/);
    assert.deepEqual(again.lines, first.lines);
  });
});

describe('unpatched held-out loss (demo model)', () => {
  it('is written to the cache, read back by another load of the model, and recomputed when edited', async (t) => {
    const model = await modelOf(t, demo);
    if (!model) return;
    const m = model.loaded;
    const texts = prompts(8, 100);
    const listed = fs.readdirSync(m.cacheDir);
    const first = await heldOutLossOf(m, texts);
    assert.ok(first.loss > 0 && first.tokens > 100);
    const file = newFile(m.cacheDir, 'loss', listed);
    // A second LoadedModel object (the in-memory memo is per object) reads the file: an edited value shows that.
    const twin = { ...m };
    editPayload(file, (v) => ({ ...(v as object), loss: first.loss + 1 }));
    assert.deepEqual(await heldOutLossOf(twin, texts), first, 'an edited entry (sha256 mismatch) is recomputed');
    const third = { ...m };
    const env = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    // Per text: [nats summed, tokens]; the mean must be theirs.
    const fake = { loss: 1.25, tokens: 7, texts: texts.map((_, i) => (i === 0 ? [8.75, 7] : [0, 0])) };
    await writeDerived(m.cacheDir, { kind: 'loss', format: env.format as number, model: m.info.hash, inputs: env.inputs as string }, fake);
    assert.deepEqual(await heldOutLossOf(third, texts), { loss: 1.25, tokens: 7 }, 'a verified entry is read, not recomputed');
  });
});

describe('next-token measures of an unpatched base (demo model)', () => {
  it('read the cached logits before and the locality forward after: the same KL and agreement as two fresh forwards', async (t) => {
    const model = await modelOf(t, demo);
    if (!model) return;
    const m = model.loaded;
    const texts = prompts(12, 150);
    // A real change of the model: one neuron's value vector moved along the unembedding of a common token.
    const patch = {
      id: 'p', createdAt: new Date().toISOString(), enabled: true, method: 'minimal',
      case: { prompt: 'x', desired: 'y', before: 'z', after: 'y' },
      edits: [{ layer: 4, neuron: 11, delta: Array.from({ length: m.info.width }, (_, i) => Math.sin(i) * 0.8) }],
      metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 1 },
    } as unknown as Patch;
    const patched = patchSet([patch], m.info.width);
    const direct = await nextTokenShift(m, texts, undefined, patched);
    assert.ok(direct.meanKl > 1e-4, `the edit changes the next-token distributions (KL ${direct.meanKl})`);
    const listed = fs.readdirSync(m.cacheDir);
    const measured = await measureSideEffects(m, { prompts: texts }, undefined, patched);
    newFile(m.cacheDir, 'next', listed);
    assert.equal(measured.nextToken, direct.sameNext);
    assert.ok(Math.abs(measured.meanKl! - direct.meanKl) <= 1e-4 * direct.meanKl + 1e-7, `KL ${measured.meanKl} vs ${direct.meanKl}`);
    // The second time the logits before come from the cache: the same figures.
    const ticks: [number, number][] = [];
    const again = await measureSideEffects(m, { prompts: texts, onProgress: (done, total) => ticks.push([done, total]) }, undefined, patched);
    assert.equal(again.meanKl, measured.meanKl);
    assert.deepEqual(ticks, [[0, 12], [8, 12], [12, 12]], 'progress per batch of 8 regression prompts');
    assert.equal((await baselineNextToken(m, texts)).cache.hit, true);
  });
});
