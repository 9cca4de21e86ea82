// The keyed method's per-model, per-reference-set values (x̂ of the protected code at the candidate layers and
// each layer's whitening, keyedCache.ts) in the verified derived cache, on the real demo model:
// - a repair computes them once; a second repair on the same model and one after the model is opened again read
//   them (memory, then disk), and all three patches are bit-identical, as are the values read back;
// - an entry that is corrupt (a flipped byte), cut short, or another model's or another reference set's (stale) is
//   detected, said why, recomputed to the same values and rewritten.
// - the side-effect check of a keyed patch runs no held-out forward for the protected texts its neurons are silent
//   on (their logits are the unpatched ones, to the bit), and measures the same held-out loss.
// And binary entries themselves (derivedCache.ts), without a model.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadModel, type Model, repair } from '../../src/engine';
import { preparePrompt } from '../../src/engine/generate';
import { derivedBinaryFile, inputsHash, readDerivedBinary, writeDerivedBinary } from '../../src/engine/model/derivedCache';
import { keyedCandidates, type ProtectedInputs, whitening } from '../../src/engine/repair/keyed';
import { protectedCode } from '../../src/engine/repair/keyedCache';
import { measureSideEffects } from '../../src/engine/repair/measures';
import { baselineLines } from '../../src/engine/repair/baseline';
import { completions } from '../../src/engine/repair/verify';
import { unchangedOn } from '../../src/engine/repair/unchanged';
import { withAdded } from '../../src/engine/patches/patchset';
import { entry, releaseAll, root, skipIfAbsent, tempDir } from '../helpers/models';
import { missingFiles, skipIfMissing } from '../helpers/need';

after(releaseAll);

const demo = entry('demo');
const casesFile = path.join(root, 'bench', 'cases', 'dev.jsonl');
const regressionFile = path.join(root, 'bench', 'cases', 'regression.jsonl');

/** Real regression prompts, made unique to this run (a first line of their own) so that no earlier run cached them. */
function reference(n: number): string[] {
  const tag = `# ${process.pid}-${Date.now()}\n`;
  return fs.readFileSync(regressionFile, 'utf8').split('\n').filter(Boolean).slice(0, n).map((l) => tag + (JSON.parse(l) as { prompt: string }).prompt);
}

/** The one keyed entry in a cache folder (the model's own subfolder). */
function keyedEntry(cacheDir: string): string {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      if (d.isDirectory()) walk(path.join(dir, d.name));
      else if (/^keyed-[0-9a-f]{16}\.bin$/.test(d.name)) found.push(path.join(dir, d.name));
    }
  };
  walk(cacheDir);
  assert.equal(found.length, 1, `one keyed entry (${found.join(', ')})`);
  return found[0];
}

/** Asserts that two protected-code values are the same to the bit: rows, next tokens, and each layer's whitening. */
async function assertSame(a: ProtectedInputs, b: ProtectedInputs, layers: number[], d: number): Promise<void> {
  assert.equal(a.positions, b.positions);
  assert.ok(Buffer.from(a.next.buffer, a.next.byteOffset, a.next.byteLength).equals(Buffer.from(b.next.buffer, b.next.byteOffset, b.next.byteLength)), 'next tokens');
  for (const L of layers) {
    const [ra, rb] = [a.rows.get(L)!, b.rows.get(L)!];
    assert.ok(Buffer.from(ra.buffer, ra.byteOffset, ra.byteLength).equals(Buffer.from(rb.buffer, rb.byteOffset, rb.byteLength)), `x̂ rows of layer ${L}`);
    const [wa, wb] = [await whitening(a, L, d), await whitening(b, L, d)];
    assert.ok(Buffer.from(wa.mean.buffer, wa.mean.byteOffset, wa.mean.byteLength).equals(Buffer.from(wb.mean.buffer, wb.mean.byteOffset, wb.mean.byteLength)), `mean of layer ${L}`);
    assert.ok(Buffer.from(wa.factor.buffer, wa.factor.byteOffset, wa.factor.byteLength).equals(Buffer.from(wb.factor.buffer, wb.factor.byteOffset, wb.factor.byteLength)), `Cholesky factor of layer ${L}`);
  }
}

const sequencesOf = (m: Model, texts: string[]) => texts.map((p) => preparePrompt(m.loaded, p, 1, false).ids);

describe('keyed per-reference-set values in the derived cache (demo model)', () => {
  test('first, second and reopened keyed repairs give bit-identical patches; the second and the reopened one read the cache', async (t) => {
    if (skipIfAbsent(t, demo) || skipIfMissing(t, missingFiles([casesFile, regressionFile], root), 'repo')) return;
    const cacheDir = tempDir('keyed-cache');
    const ref = reference(12);
    const c = JSON.parse(fs.readFileSync(casesFile, 'utf8').split('\n')[0]) as { prompt: string; desired: string };
    let m = await loadModel(demo.dir, { cacheDir });
    try {
      const layers = keyedCandidates(m.loaded);
      const d = m.info.width;
      const first = await repair(m, c, { method: 'keyed', reference: ref, analyse: false });
      assert.ok(first.success, `the demo model's first dev case is fixed: ${JSON.stringify(first.after)}`);
      const file = keyedEntry(cacheDir);
      // Same loaded model: the values in memory (the very object the first repair computed).
      const inMemory = await protectedCode(m.loaded, sequencesOf(m, ref), layers);
      assert.equal(inMemory.cache, 'memory');
      const second = await repair(m, c, { method: 'keyed', reference: ref, analyse: false });
      assert.deepEqual(second.patch.added, first.patch.added, 'second repair: the same added neurons');

      await m.dispose();
      m = await loadModel(demo.dir, { cacheDir });
      const fromDisk = await protectedCode(m.loaded, sequencesOf(m, ref), layers);
      assert.deepEqual(fromDisk.cache, { hit: true }, 'the reopened model reads the entry');
      await assertSame(fromDisk.protect, inMemory.protect, layers, d);
      const reopened = await repair(m, c, { method: 'keyed', reference: ref, analyse: false });
      assert.equal(reopened.after, first.after);
      assert.deepEqual(reopened.patch.added, first.patch.added, 'after reopening: the same added neurons, to the bit');
      assert.deepEqual(reopened.patch.metrics.success, first.patch.metrics.success);
      assert.equal(keyedEntry(cacheDir), file, 'no second entry for the same reference set');
    } finally {
      await m.dispose();
    }
  });

  test('a corrupt, truncated or stale entry is detected, said why, and recomputed to the same values', async (t) => {
    if (skipIfAbsent(t, demo) || skipIfMissing(t, missingFiles([regressionFile], root), 'repo')) return;
    const cacheDir = tempDir('keyed-cache-bad');
    const ref = reference(6);
    // Each read on a freshly loaded model (nothing in memory), as after a restart.
    const fresh = async <T>(f: (m: Model) => Promise<T>): Promise<T> => {
      const m = await loadModel(demo.dir, { cacheDir });
      try {
        return await f(m);
      } finally {
        await m.dispose();
      }
    };
    const layers = await fresh(async (m) => keyedCandidates(m.loaded));
    const d = await fresh(async (m) => m.info.width);
    const computed = await fresh(async (m) => protectedCode(m.loaded, sequencesOf(m, ref), layers));
    assert.deepEqual(computed.cache, { hit: false, why: 'not cached yet' });
    const file = keyedEntry(cacheDir);
    const good = fs.readFileSync(file);
    const recomputed = async (why: RegExp) => fresh(async (m) => {
      const got = await protectedCode(m.loaded, sequencesOf(m, ref), layers);
      assert.equal(got.cache !== 'memory' && got.cache.hit, false, 'not read back');
      assert.match((got.cache as { why: string }).why, why);
      await assertSame(got.protect, computed.protect, layers, d);
      assert.ok(fs.readFileSync(file).equals(good), 'the entry is rewritten as it was');
      const again = await protectedCode(m.loaded, sequencesOf(m, ref), layers);
      assert.equal(again.cache, 'memory');
    });

    // A flipped bit in the data (the activations of the last layer's rows).
    const flipped = Buffer.from(good);
    flipped[flipped.length - 4 * computed.protect.positions - 5] ^= 1;
    fs.writeFileSync(file, flipped);
    await recomputed(/does not match its recorded sha256/);
    // Cut short.
    fs.writeFileSync(file, good.subarray(0, good.length - 1000));
    await recomputed(/bytes of data/);
    // Stale: another model's entry, or another reference set's, copied under this name.
    const header = good.subarray(0, good.indexOf(0x0a)).toString('utf8');
    const h = JSON.parse(header) as { model: string; inputs: string };
    const swap = (field: 'model' | 'inputs') => {
      const edited = header.replace(h[field], h[field].replace(/^./, (ch) => (ch === '0' ? '1' : '0')));
      fs.writeFileSync(file, Buffer.concat([Buffer.from(edited), good.subarray(header.length)]));
    };
    swap('model');
    await recomputed(/another model/);
    swap('inputs');
    await recomputed(/other inputs/);
    // Garbage.
    fs.writeFileSync(file, 'not a cache entry');
    await recomputed(/no header line/);
    // Another reference set is computed anew, beside it.
    await fresh(async (m) => {
      const other = await protectedCode(m.loaded, sequencesOf(m, ref.slice(1)), layers);
      assert.deepEqual(other.cache, { hit: false, why: 'not cached yet' });
      assert.equal(other.protect.positions, computed.protect.positions - sequencesOf(m, ref.slice(0, 1))[0].length);
    });
  });
});

describe('held-out loss of a keyed patch on its protected code (demo model)', () => {
  test('texts the added neurons are silent on keep their unpatched logits and are not run again; the loss is the same', async (t) => {
    if (skipIfAbsent(t, demo) || skipIfMissing(t, missingFiles([casesFile, regressionFile], root), 'repo')) return;
    const ref = reference(12);
    const c = JSON.parse(fs.readFileSync(casesFile, 'utf8').split('\n')[0]) as { prompt: string; desired: string };
    const m = await loadModel(demo.dir, { cacheDir: tempDir('keyed-side') });
    try {
      const lm = m.loaded;
      const r = await repair(m, c, { method: 'keyed', reference: ref, analyse: false });
      assert.ok(r.patch.added?.length, 'a keyed patch');
      const patched = withAdded(new Map(), r.patch.added!);
      const seqs = sequencesOf(m, ref);
      const known = { sequences: seqs, rows: (await protectedCode(lm, seqs, keyedCandidates(lm))).protect };
      const flags = unchangedOn(patched, seqs, known);
      assert.ok(flags.some(Boolean), 'the neurons are silent on some reference texts');
      // Where it says unchanged, the patched model's logits are the unpatched ones, to the bit.
      for (const [i, seq] of seqs.entries()) {
        if (!flags[i]) continue;
        const a = await lm.session.forward({ ids: [seq] });
        const b = await lm.session.forward({ ids: [seq], edits: patched });
        assert.ok(Buffer.from(a.logits.buffer, a.logits.byteOffset, a.logits.byteLength).equals(Buffer.from(b.logits.buffer, b.logits.byteOffset, b.logits.byteLength)), `text ${i}: the same logits`);
      }
      // The regression lines under the patch, as the check reports them (rows where every neuron is silent are not
      // decoded again), are the lines greedy decoding gives under the patch.
      const lines = await measureSideEffects(lm, { prompts: ref }, undefined, patched);
      const before = (await baselineLines(lm, ref)).lines;
      const decoded = await completions(lm, ref, patched);
      ref.forEach((p, i) => {
        const after = lines.changed.find((ch) => ch.prompt === p)?.after ?? before[i].completion;
        assert.equal(after, decoded[i], `regression line ${i}`);
      });
      // A value edit acts everywhere: nothing is known unchanged.
      const valueEdit = Object.assign(new Map([[0, { indices: [0], deltas: new Float32Array(m.info.width) }]]), { added: patched.added });
      assert.deepEqual(unchangedOn(valueEdit, seqs, known), seqs.map(() => false));
      // The check with and without the known x̂: the same loss, fewer forwards (counted on the real session).
      const forward = lm.session.forward.bind(lm.session);
      let runs = 0;
      lm.session.forward = ((o: Parameters<typeof forward>[0]) => (runs++, forward(o))) as typeof forward;
      try {
        const full = await measureSideEffects(lm, { prompts: [], heldOut: ref }, undefined, patched);
        const fullRuns = runs;
        runs = 0;
        const fast = await measureSideEffects(lm, { prompts: [], heldOut: ref, known }, undefined, patched);
        assert.ok(runs < fullRuns, `${runs} forwards with the known x̂, ${fullRuns} without`);
        const [hf, hq] = [full.summary.heldOutLoss!, fast.summary.heldOutLoss!];
        assert.equal(hq.before, hf.before);
        assert.equal(hq.tokens, hf.tokens);
        if (flags.every(Boolean)) assert.equal(hq.after, hf.after);
        else assert.ok(Math.abs(hq.after - hf.after) <= 1e-9 * hf.after, `after: ${hq.after} vs ${hf.after}`);
      } finally {
        lm.session.forward = forward;
      }
    } finally {
      await m.dispose();
    }
  });
});

describe('binary derived entries', () => {
  test('read back only with the same kind, format, model, inputs and bytes; the bytes start 8-aligned', async () => {
    const dir = tempDir('derived-bin');
    const key = { kind: 'keyed', format: 1, model: 'a'.repeat(64), inputs: inputsHash(['x']) };
    const ok = () => undefined;
    assert.deepEqual(readDerivedBinary(dir, key, ok), { why: 'not cached yet' });
    const f64 = Float64Array.of(Math.PI, -0, 1e-300);
    const i32 = Int32Array.of(-1, 7, 2 ** 31 - 1);
    await writeDerivedBinary(dir, key, { n: 3 }, [new Uint8Array(f64.buffer), new Uint8Array(i32.buffer)]);
    const got = readDerivedBinary<{ n: number }>(dir, key, ok);
    assert.ok('value' in got, JSON.stringify(got));
    assert.deepEqual(got.value.meta, { n: 3 });
    assert.equal(got.value.bytes.byteOffset % 8, 0);
    assert.deepEqual(new Float64Array(got.value.bytes.buffer, got.value.bytes.byteOffset, 3), f64);
    assert.deepEqual(new Int32Array(got.value.bytes.buffer, got.value.bytes.byteOffset + 24, 3), i32);
    const file = derivedBinaryFile(dir, key);
    assert.equal(fs.statSync(file).size % 8, 36 % 8, 'header padded to 8 bytes, then 36 bytes of data');
    assert.match((readDerivedBinary(dir, { ...key, format: 2 }, ok) as { why: string }).why, /another kind or format/);
    assert.match((readDerivedBinary(dir, { ...key, model: 'b'.repeat(64) }, ok) as { why: string }).why, /another model/);
    assert.match((readDerivedBinary(dir, key, () => 'wrong shape') as { why: string }).why, /malformed \(wrong shape\)/);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 0x80;
    fs.writeFileSync(file, bytes);
    assert.match((readDerivedBinary(dir, key, ok) as { why: string }).why, /sha256/);
  });
});
