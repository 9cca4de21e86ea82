// Which patch file a model's patches go to (src/engine/patches/binding.ts): the named file unless it holds another
// model's patches; then a sibling named for this model, and the other model's file is never written. Through the
// real PatchStore: the case a user meets after switching models in the editor (a demo patch file in the workspace,
// a 0.5B model loaded: before this, every new patch was refused as "the patch file is invalid").
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { patchFileFor, siblingFor } from '../../src/engine/patches/binding';
import { isoNow, newPatchId } from '../../src/engine/patches/id';
import { PatchStore } from '../../src/engine/patches/store';
import type { ModelInfo, Patch } from '../../src/engine/types';

const info = (name: string, hashChar: string): ModelInfo => ({
  name, folder: `/models/${name}`, architecture: 'llama', gated: true, layers: 2, neurons: 8, width: 4, vocab: 50, context: 64,
  finalNorm: 'rms', tiedUnembedding: false, weightType: 'float32', hash: hashChar.repeat(64), eosTokenIds: [1],
});
const demo = info('demo', 'a');
const qwen = info('Qwen2.5-Coder-0.5B (random-weight stand-in)', 'b');

const patch = (): Patch => ({
  id: newPatchId(), createdAt: isoNow(), enabled: true, method: 'minimal',
  case: { prompt: 'def add(a, b):\n    return', desired: ' a + b', before: ' a - b', after: ' a + b' },
  edits: [{ layer: 1, neuron: 3, delta: [0.25, -0.5, 0.125, 0] }],
  metrics: { success: true, failingTokens: 1, specificity: 1, meanKl: 0, generalization: null, repairMs: 10 },
});

describe('the patch file of a model', () => {
  let dir: string;
  let named: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'np-binding-'));
    named = path.join(dir, 'patches.json');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('is the named file when it is absent, bound to this model, or not valid JSON', async () => {
    assert.deepEqual(await patchFileFor(named, qwen), { file: named });
    const store = await PatchStore.open(named, qwen);
    store.add(patch());
    await store.save();
    assert.deepEqual(await patchFileFor(named, qwen), { file: named });
    fs.writeFileSync(named, '{ "format": ');
    assert.deepEqual(await patchFileFor(named, qwen), { file: named }, 'opening it reports the problem, as before');
  });

  it('is a sibling named for this model when the named file holds another model\'s patches, which stays byte for byte', async () => {
    const demoStore = await PatchStore.open(named, demo);
    demoStore.add(patch());
    await demoStore.save();
    const demoBytes = fs.readFileSync(named);
    // Before: the loaded model's store refuses the other model's file (and so every patch of this model).
    await assert.rejects(PatchStore.open(named, qwen), /holds patches for model "demo"/);
    const choice = await patchFileFor(named, qwen);
    assert.equal(choice.file, path.join(dir, 'patches.qwen2.5-coder-0.5b-random-weight-stand-i-bbbbbbbb.json'));
    assert.deepEqual(choice.displacedBy, { name: 'demo', hash: demo.hash });
    const mine = await PatchStore.open(choice.file, qwen);
    const p = mine.add(patch());
    await mine.save();
    assert.deepEqual((await PatchStore.open(choice.file, qwen)).list(), [p]);
    assert.deepEqual(fs.readFileSync(named), demoBytes, "the other model's file is untouched");
    // Switching back: the demo model gets its own file again, with its patch.
    assert.deepEqual(await patchFileFor(named, demo), { file: named });
    assert.equal((await PatchStore.open(named, demo)).list().length, 1);
  });

  it('names siblings from any model name: unsafe characters dropped, cut, never empty', () => {
    assert.equal(path.basename(siblingFor('/w/.neuronpatch/patches.json', info('../../etc/passwd', 'c'))), 'patches.etc-passwd-cccccccc.json');
    assert.equal(path.basename(siblingFor('/w/p', info('!!!', 'd'))), 'p.model-dddddddd.json');
    assert.ok(path.basename(siblingFor('/w/patches.json', info('x'.repeat(500), 'e'))).length < 80);
  });
});
