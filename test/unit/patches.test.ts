// The neuronpatch/1 patch file: validation paths, the on-disk format, atomic saves, refusals, concurrent
// writers, and combining patches into a PatchSet.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DELTA_DIGITS, parseJson, roundValue, serializePatchFile } from '../../src/engine/patches/format';
import { isoNow, newPatchId } from '../../src/engine/patches/id';
import { editsOf, patchSet } from '../../src/engine/patches/patchset';
import { PatchStore } from '../../src/engine/patches/store';
import { checkPatchFile, validatePatchFile } from '../../src/engine/patches/validate';
import { NeuronpatchError, PATCH_FORMAT, type ModelInfo, type Patch, type PatchFile } from '../../src/engine/types';

const WIDTH = 8;

const model: ModelInfo = {
  name: 'tiny-a',
  folder: '/models/tiny-a',
  architecture: 'llama',
  gated: true,
  layers: 4,
  neurons: 32,
  width: WIDTH,
  vocab: 100,
  context: 64,
  finalNorm: 'rms',
  tiedUnembedding: false,
  weightType: 'float32',
  hash: 'a'.repeat(64),
  eosTokenIds: [1],
};

let seed = 1;
function rand(): number {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648 - 0.5;
}

function makePatch(edits: { layer: number; neuron: number; delta?: number[] }[], over: Partial<Patch> = {}): Patch {
  return {
    id: newPatchId(),
    createdAt: isoNow(),
    enabled: true,
    method: 'minimal',
    case: { prompt: 'def add(a, b):\n    return', desired: ' a + b', before: ' a - b', after: ' a + b' },
    edits: edits.map((e) => ({ layer: e.layer, neuron: e.neuron, delta: e.delta ?? Array.from({ length: WIDTH }, () => rand() / 7) })),
    metrics: { success: true, failingTokens: 1, specificity: 0.99, meanKl: 0.001, generalization: null, repairMs: 120 },
    ...over,
  };
}

function fileOf(patches: Patch[], hash = model.hash, name = model.name): PatchFile {
  return { format: PATCH_FORMAT, model: { name, hash }, patches };
}

function problemsOf(value: unknown, dims = model): string[] {
  return checkPatchFile(JSON.parse(JSON.stringify(value)), dims).problems;
}

describe('validatePatchFile', () => {
  it('accepts a valid file and keeps keys it does not know', () => {
    const p = makePatch([{ layer: 1, neuron: 3 }]);
    const value = { ...fileOf([{ ...p, note: 'keep me' } as Patch]), comment: 'top' };
    const file = validatePatchFile(JSON.parse(JSON.stringify(value)), model);
    assert.equal(file.patches[0].id, p.id);
    assert.deepEqual(file.patches[0].edits[0].delta, p.edits[0].delta);
    assert.equal((file.patches[0] as Patch & { note: string }).note, 'keep me');
    assert.equal((file as PatchFile & { comment: string }).comment, 'top');
  });

  it('names the path of a delta of the wrong length', () => {
    const good = makePatch([{ layer: 0, neuron: 0 }]);
    const bad = makePatch([{ layer: 2, neuron: 5, delta: new Array(WIDTH - 1).fill(0.5) }]);
    const problems = problemsOf(fileOf([good, good, bad].map((p, i) => ({ ...p, id: `p${i}` }))));
    assert.deepEqual(problems, [`patches[2].edits[0].delta: expected ${WIDTH} numbers, got ${WIDTH - 1} (the model's residual width)`]);
  });

  it('without a model, checks that every delta has the length of the first', () => {
    const a = makePatch([{ layer: 0, neuron: 0 }]);
    const b = makePatch([{ layer: 9, neuron: 999, delta: [1, 2, 3] }]);
    const { problems } = checkPatchFile(JSON.parse(JSON.stringify(fileOf([a, b]))));
    assert.deepEqual(problems, [`patches[1].edits[0].delta: expected ${WIDTH} numbers, got 3 (the length of patches[0].edits[0].delta)`]);
  });

  it('checks layer and neuron ranges against the model', () => {
    const p = makePatch([{ layer: 4, neuron: 1 }, { layer: 0, neuron: 32 }, { layer: -1, neuron: 1.5 }]);
    assert.deepEqual(problemsOf(fileOf([p])), [
      'patches[0].edits[0].layer: expected an integer between 0 and 3, got 4',
      'patches[0].edits[1].neuron: expected an integer between 0 and 31, got 32',
      'patches[0].edits[2].layer: expected an integer between 0 and 3, got -1',
      'patches[0].edits[2].neuron: expected an integer, got number 1.5',
    ]);
  });

  it('reports wrong types, missing fields, duplicates and bad values, each with its path', () => {
    const p = makePatch([{ layer: 1, neuron: 2 }, { layer: 1, neuron: 2 }]) as unknown as Record<string, unknown>;
    p.enabled = 'yes';
    p.method = 'sgd';
    p.createdAt = 'yesterday';
    (p.case as Record<string, unknown>).desired = 7;
    (p.metrics as Record<string, unknown>).specificity = 1.5;
    (p.metrics as Record<string, unknown>).margin = -2;
    delete (p.metrics as Record<string, unknown>).repairMs;
    ((p.edits as { delta: unknown[] }[])[0].delta)[3] = 'x';
    const q = makePatch([{ layer: 0, neuron: 0 }], { id: (p.id as string) });
    assert.deepEqual(problemsOf(fileOf([p as unknown as Patch, q])), [
      'patches[0].createdAt: expected an ISO 8601 time, got the string "yesterday"',
      'patches[0].enabled: expected true or false, got the string "yes"',
      'patches[0].method: expected "minimal", "joint" or "keyed", got the string "sgd"',
      'patches[0].case.desired: expected a string, got number 7',
      'patches[0].edits[0].delta[3]: expected a finite number, got the string "x"',
      'patches[0].edits[1]: edits layer 1 neuron 2 again (already in patches[0].edits[0]); one patch edits a neuron once',
      'patches[0].metrics.specificity: expected a number between 0 and 1, got 1.5',
      'patches[0].metrics.repairMs: expected a number, got nothing (the key is missing)',
      'patches[0].metrics.margin: expected a number ≥ 0, got -2',
      `patches[1].id: "${p.id as string}" is also the id of patches[0]; ids must be unique`,
    ]);
  });

  it('refuses other formats and versions with the reason', () => {
    assert.deepEqual(problemsOf({ format: 'neuronpatch/3', model: {}, patches: [] }), [
      'format: this version reads "neuronpatch/1" and "neuronpatch/2", the file is "neuronpatch/3" (written by another version of neuronpatch)',
    ]);
    assert.deepEqual(problemsOf([1, 2]), ['(top level): expected an object, got an array of 2']);
    assert.deepEqual(problemsOf({ format: PATCH_FORMAT, model: { name: 'x', hash: '' }, patches: {} }), [
      'model.hash: must not be empty',
      'patches: expected an array, got an object',
    ]);
  });

  it('throws a NeuronpatchError listing the problems', () => {
    const p = makePatch([{ layer: 0, neuron: 99 }]);
    assert.throws(
      () => validatePatchFile(JSON.parse(JSON.stringify(fileOf([p]))), model, 'my.json'),
      (e: unknown) => e instanceof NeuronpatchError && /my\.json is not a valid neuronpatch\/1/.test(e.message) && /patches\[0\]\.edits\[0\]\.neuron/.test(e.message),
    );
  });
});

describe('patch ids and rounding', () => {
  it('makes short ids that are unique and sort in creation order', () => {
    const ids = Array.from({ length: 2000 }, () => newPatchId());
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual([...ids].sort(), ids);
    assert.ok(ids.every((id) => /^[0-9a-z]{13}$/.test(id)));
    // Earlier times sort first even across processes (the time part leads).
    assert.ok(newPatchId(Date.UTC(2030, 0, 1)) < newPatchId(Date.UTC(2031, 0, 1)));
    assert.match(isoNow(0), /^1970-01-01T00:00:00\.000Z$/);
  });

  it('keeps 7 significant digits: relative error at most 5e-7, idempotent', () => {
    let worst = 0;
    for (let i = 0; i < 20000; i++) {
      const x = rand() * 10 ** Math.round(rand() * 20 - 10);
      const r = roundValue(x);
      worst = Math.max(worst, Math.abs(r - x) / Math.abs(x));
      const digits = String(r).replace(/e.*$/, '').replace(/[-.]/g, '').replace(/^0+/, '').replace(/0+$/, '');
      assert.ok(digits.length <= 7, `${x} → ${r}`);
      assert.equal(roundValue(r), r, 'rounding is idempotent');
    }
    assert.equal(DELTA_DIGITS, 7);
    assert.ok(worst <= 5e-7 && worst > 1e-7, `worst relative error ${worst}`);
  });
});

describe('file text', () => {
  it('is 2-space indented JSON with each delta on one line', () => {
    const p = makePatch([{ layer: 1, neuron: 3, delta: [0.5, -1.25e-7, 3, 0, 1, 2, 3, 4] }]);
    const text = serializePatchFile(fileOf([p]));
    assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(fileOf([p]))));
    assert.ok(text.endsWith('}\n'));
    assert.ok(text.includes('\n          "delta": [0.5, -1.25e-7, 3, 0, 1, 2, 3, 4]\n'), text);
    assert.ok(text.startsWith(`{\n  "format": "neuronpatch/1",\n  "model": {\n    "name": "tiny-a",`));
  });

  it('reports JSON syntax errors with the file, line and column', () => {
    assert.throws(
      () => parseJson('{\n  "a": 1,\n  "b": oops\n}\n', 'p.json'),
      (e: unknown) => e instanceof NeuronpatchError && e.message.startsWith('p.json:3:8: not valid JSON'),
    );
    assert.throws(
      () => parseJson('{\n  "a": [1, 2', 'p.json'),
      (e: unknown) => e instanceof NeuronpatchError && e.message.startsWith('p.json:2:13: not valid JSON'),
    );
    assert.throws(() => parseJson('{"a": "x\ny"}', 'q.json'), /^NeuronpatchError: q\.json:1:9: /);
    assert.throws(() => parseJson('[1, 2,]', 'q.json'), /^NeuronpatchError: q\.json:1:7: /);
    assert.throws(() => parseJson('{"a": 1} x', 'q.json'), /^NeuronpatchError: q\.json:1:10: /);
    assert.throws(() => parseJson('', 'q.json'), /^NeuronpatchError: q\.json:1:1: /);
    assert.deepEqual(parseJson('\ufeff{"a": 1}', 'p.json'), { a: 1 });
  });
});

describe('PatchStore', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'np-store-'));
    file = path.join(dir, 'patches.json');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('opens a missing file as empty and writes nothing until a change is saved', async () => {
    const store = await PatchStore.open(file, model);
    assert.deepEqual(store.list(), []);
    assert.deepEqual(await store.save(), { written: false, merged: false, dropped: [] });
    assert.equal(fs.existsSync(file), false);
    await assert.rejects(PatchStore.open(file, model, { mustExist: true }), /Patch file not found/);
  });

  it('round-trips patches through the file, with deltas exactly as kept in memory', async () => {
    const store = await PatchStore.open(file, model);
    const a = store.add(makePatch([{ layer: 0, neuron: 1 }, { layer: 3, neuron: 31 }]));
    const b = store.add(makePatch([{ layer: 2, neuron: 7 }], { method: 'joint', enabled: false }));
    assert.equal(store.dirty, true);
    assert.deepEqual(await store.save(), { written: true, merged: false, dropped: [] });
    assert.equal(store.dirty, false);
    const again = await PatchStore.open(file, model);
    assert.deepEqual(again.list(), [a, b]);
    assert.deepEqual(again.active(), [a]);
    assert.deepEqual(fs.readdirSync(dir), ['patches.json'], 'no temp file is left beside it');
    // Saving what was read changes no byte.
    const before = fs.readFileSync(file, 'utf8');
    again.setEnabled(b.id, false);
    await again.save();
    assert.equal(fs.readFileSync(file, 'utf8'), before);
  });

  it('rounds deltas to 7 significant digits when adding', async () => {
    const store = await PatchStore.open(file, model);
    const delta = [Math.PI, -Math.E / 1000, 1 / 3, 2e-9 / 3, 12345.678901, 0, -0, 1];
    const p = store.add(makePatch([{ layer: 1, neuron: 1, delta }]));
    assert.deepEqual(p.edits[0].delta, [3.141593, -0.002718282, 0.3333333, 6.666667e-10, 12345.68, 0, 0, 1]);
  });

  it('enables, disables and removes patches, and refuses unknown ids and duplicates', async () => {
    const store = await PatchStore.open(file, model);
    const [a, b, c] = [1, 2, 3].map((n) => store.add(makePatch([{ layer: 0, neuron: n }])));
    store.setEnabled(b.id, false);
    assert.deepEqual(store.active().map((p) => p.id), [a.id, c.id]);
    store.remove(a.id);
    assert.deepEqual(store.list().map((p) => p.id), [b.id, c.id]);
    store.setEnabled(b.id, true);
    await store.save();
    const again = await PatchStore.open(file, model);
    assert.deepEqual(again.active().map((p) => p.id), [b.id, c.id]);
    assert.throws(() => again.remove('nope'), /No patch "nope"/);
    assert.throws(() => again.setEnabled('nope', true), /No patch "nope"/);
    assert.throws(() => again.add(c), /already in/);
    assert.throws(() => again.add(makePatch([{ layer: 9, neuron: 0 }])), /edits\[0\]\.layer: expected an integer between 0 and 3, got 9/);
  });

  it('leaves a corrupt file untouched and says where the JSON breaks', async () => {
    const text = '{\n  "format": "neuronpatch/1",\n  "model": { "name": "tiny-a", "hash": "x" }\n  "patches": []\n}\n';
    fs.writeFileSync(file, text);
    const mtime = fs.statSync(file).mtimeMs;
    await assert.rejects(PatchStore.open(file, model), (e: unknown) => {
      assert.ok(e instanceof NeuronpatchError);
      assert.ok(e.message.startsWith(`${file}:4:3: not valid JSON`), e.message);
      assert.match(e.message, /left untouched/);
      return true;
    });
    assert.equal(fs.readFileSync(file, 'utf8'), text);
    assert.equal(fs.statSync(file).mtimeMs, mtime);
    assert.deepEqual(fs.readdirSync(dir), ['patches.json']);
  });

  it('leaves a file that fails validation untouched, naming the problem', async () => {
    const bad = fileOf([makePatch([{ layer: 1, neuron: 40 }])]);
    const text = serializePatchFile(bad);
    fs.writeFileSync(file, text);
    await assert.rejects(PatchStore.open(file, model), (e: unknown) => {
      assert.ok(e instanceof NeuronpatchError);
      assert.match(e.message, /is not a valid neuronpatch patch file; it was left untouched/);
      assert.match(e.message, /patches\[0\]\.edits\[0\]\.neuron: expected an integer between 0 and 31, got 40/);
      return true;
    });
    assert.equal(fs.readFileSync(file, 'utf8'), text);
  });

  it("refuses another model's file, naming both models and hashes", async () => {
    const other = { name: 'tiny-b', hash: 'b'.repeat(64) };
    const text = serializePatchFile(fileOf([makePatch([{ layer: 0, neuron: 0 }])], other.hash, other.name));
    fs.writeFileSync(file, text);
    await assert.rejects(PatchStore.open(file, model), (e: unknown) => {
      assert.ok(e instanceof NeuronpatchError);
      for (const s of ['"tiny-b"', 'b'.repeat(16), '"tiny-a"', 'a'.repeat(16), 'left untouched']) assert.ok(e.message.includes(s), `${s} in ${e.message}`);
      return true;
    });
    assert.equal(fs.readFileSync(file, 'utf8'), text);
  });

  it('merges with changes another writer saved meanwhile', async () => {
    const first = await PatchStore.open(file, model);
    const base = first.add(makePatch([{ layer: 0, neuron: 0 }]));
    await first.save();
    const a = await PatchStore.open(file, model);
    const b = await PatchStore.open(file, model);
    const pa = a.add(makePatch([{ layer: 1, neuron: 1 }]));
    a.setEnabled(base.id, false);
    await a.save();
    const pb = b.add(makePatch([{ layer: 2, neuron: 2 }]));
    const res = await b.save();
    assert.deepEqual(res, { written: true, merged: true, dropped: [] });
    const final = await PatchStore.open(file, model);
    assert.deepEqual(final.list().map((p) => p.id), [base.id, pa.id, pb.id]);
    assert.deepEqual(final.active().map((p) => p.id), [pa.id, pb.id], "a's disable of the base patch survived b's save");
    assert.deepEqual(b.list(), final.list(), 'b now holds the merged state');
  });

  it('drops a change whose patch another writer removed, and reports it', async () => {
    const s = await PatchStore.open(file, model);
    const p = s.add(makePatch([{ layer: 0, neuron: 0 }]));
    const q = s.add(makePatch([{ layer: 0, neuron: 1 }]));
    await s.save();
    const a = await PatchStore.open(file, model);
    const b = await PatchStore.open(file, model);
    a.remove(p.id);
    await a.save();
    b.setEnabled(p.id, false);
    b.remove(q.id);
    const res = await b.save();
    assert.equal(res.merged, true);
    assert.deepEqual(res.dropped, [`disabling patch "${p.id}": another program removed it from the file`]);
    assert.deepEqual((await PatchStore.open(file, model)).list(), []);
  });

  it('runs saves one at a time and loses no change made while one is writing', async () => {
    // Changes land at different points of a save in flight (after 0..7 turns of the event loop).
    for (let ticks = 0; ticks < 8; ticks++) {
      fs.rmSync(file, { force: true });
      const s = await PatchStore.open(file, model);
      const p1 = s.add(makePatch([{ layer: 0, neuron: 0 }]));
      const first = s.save();
      for (let k = 0; k < ticks; k++) await new Promise((r) => setImmediate(r));
      const p2 = s.add(makePatch([{ layer: 0, neuron: 1 }]));
      s.setEnabled(p1.id, false);
      const second = s.save();
      const results = await Promise.all([first, second]);
      assert.ok(results.every((r) => !r.merged && r.dropped.length === 0), `ticks ${ticks}`);
      assert.equal(s.dirty, false);
      const again = await PatchStore.open(file, model);
      assert.deepEqual(again.list().map((p) => [p.id, p.enabled]), [[p1.id, false], [p2.id, true]], `ticks ${ticks}`);
      assert.deepEqual(again.list(), s.list());
      assert.deepEqual(fs.readdirSync(dir), ['patches.json']);
    }
  });

  it('does not overwrite a file that became invalid on disk, and keeps the unsaved change', async () => {
    const s = await PatchStore.open(file, model);
    s.add(makePatch([{ layer: 0, neuron: 0 }]));
    await s.save();
    s.add(makePatch([{ layer: 1, neuron: 0 }]));
    fs.writeFileSync(file, '{ broken');
    await assert.rejects(s.save(), /changed on disk since it was read.*1 unsaved change\(s\) were not written/s);
    assert.equal(fs.readFileSync(file, 'utf8'), '{ broken');
    assert.equal(s.dirty, true);
    assert.equal(s.list().length, 2);
  });
});

describe('patchSet', () => {
  it('sums deltas of the same neuron across patches, per layer, indices ascending, skipping disabled', () => {
    const d = (x: number): number[] => Array.from({ length: WIDTH }, (_, i) => x + i);
    const p1 = makePatch([{ layer: 2, neuron: 9, delta: d(1) }, { layer: 0, neuron: 4, delta: d(10) }]);
    const p2 = makePatch([{ layer: 2, neuron: 3, delta: d(100) }, { layer: 2, neuron: 9, delta: d(0.5) }]);
    const off = makePatch([{ layer: 1, neuron: 0, delta: d(7) }], { enabled: false });
    const set = patchSet([p1, p2, off], WIDTH);
    assert.deepEqual([...set.keys()], [0, 2]);
    assert.deepEqual(set.get(0)!.indices, [4]);
    assert.deepEqual([...set.get(0)!.deltas], d(10));
    assert.deepEqual(set.get(2)!.indices, [3, 9]);
    assert.deepEqual([...set.get(2)!.deltas], [...d(100), ...d(1).map((v, i) => v + d(0.5)[i])]);
    assert.deepEqual(editsOf([p1, p2, off]).map((e) => [e.layer, e.neuron]), [[0, 4], [2, 3], [2, 9]]);
    assert.equal(patchSet([], WIDTH).size, 0);
  });

  it('refuses deltas of another width', () => {
    const p = makePatch([{ layer: 0, neuron: 0 }]);
    assert.throws(() => patchSet([p], WIDTH + 1), /deltas have 8 numbers, but the model's residual width is 9/);
    const q = makePatch([{ layer: 0, neuron: 1, delta: [1, 2] }]);
    assert.throws(() => patchSet([p, q], WIDTH), /has a delta of 2 numbers, but patch .* has 8/);
  });
});
