// The earlier cases of a keyed stack, kept between repairs (src/engine/repair/earlier.ts), on the demo model:
// - rows kept for a case are the rows a fresh forward under the current patch set gives, bit for bit, when every
//   neuron added since is silent on the case; only the new case runs;
// - a neuron that fires on a case, or a value edit (it acts everywhere), makes that case run again;
// - silentOn / silentPrefix agree with the activations the graph computes.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Model } from '../../src/engine';
import { type AddedNeuron, addedActivation } from '../../src/engine/model/added';
import { isoNow, newPatchId } from '../../src/engine/patches/id';
import { patchSet } from '../../src/engine/patches/patchset';
import { earlierInputs, silentOn, silentPrefix } from '../../src/engine/repair/earlier';
import { protectedInputs } from '../../src/engine/repair/keyed';
import type { Patch } from '../../src/engine/types';
import { CODE, entry, gaussian, modelOf, releaseAll } from '../helpers/models';

after(releaseAll);

const TEXTS = [CODE, 'def add(a, b):\n    return a + b\n\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n', 'for k in range(10):\n    total += k * k\n'];

function patchOf(added: AddedNeuron[], edits: Patch['edits'] = []): Patch {
  return {
    id: newPatchId(), createdAt: isoNow(), enabled: true, method: 'keyed',
    case: { prompt: 'p', desired: 'd', before: 'b', after: 'd' }, edits,
    added: added.map((a) => ({ layer: a.layer, key: Array.from(a.key), threshold: a.threshold, value: Array.from(a.value) })),
    metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 1 },
  };
}

/** A neuron on a random key: threshold `above` its largest response over `seqs` (silent) or below it (fires). */
async function neuronOn(m: Model, layer: number, seqs: number[][], seed: number, fires: boolean): Promise<AddedNeuron> {
  const d = m.info.width;
  const key = gaussian(d, seed, 1 / Math.sqrt(d));
  const rows = await protectedInputs(m.loaded, seqs, [layer]);
  const x = rows.rows.get(layer)!;
  let max = -Infinity;
  for (let p = 0; p < rows.positions; p++) {
    let s = 0;
    for (let c = 0; c < d; c++) s += key[c] * x[p * d + c];
    max = Math.max(max, s);
  }
  const threshold = fires ? max - 0.1 * Math.abs(max) - 1e-3 : max + 0.05 * Math.abs(max) + 1e-3;
  return { layer, key, threshold, value: gaussian(d, seed + 1, 0.5) };
}

describe('earlier cases kept across a keyed stack', () => {
  test('kept rows equal a fresh forward; a firing neuron or a value edit runs the case again', async (t) => {
    const m = await modelOf(t, entry('demo'));
    if (!m) return;
    const layers = (m.loaded.graph.keyedLayers ?? []).slice(-2);
    const L = layers[layers.length - 1];
    const seqs = TEXTS.map((s) => m.tokenizer.encode(s));
    const d = m.info.width;
    // Patch A (case 0) fires on its own case only; B (case 1) is silent on case 0.
    const a = patchOf([await neuronOn(m, L, [seqs[0]], 1, true)]);
    let stats = { reused: 0, run: 0 };
    await earlierInputs(m.loaded, [a], [seqs[0]], layers, patchSet([a], d), stats);
    assert.deepEqual(stats, { reused: 0, run: 1 });
    const b = patchOf([await neuronOn(m, L, [seqs[0]], 3, false)]);
    const ab = patchSet([a, b], d);
    stats = { reused: 0, run: 0 };
    const kept = await earlierInputs(m.loaded, [a, b], [seqs[0], seqs[1]], layers, ab, stats);
    assert.deepEqual(stats, { reused: 1, run: 1 }, 'case 0 kept, case 1 run');
    const fresh = await protectedInputs(m.loaded, [seqs[0]], layers, ab);
    for (const layer of layers) assert.deepEqual(kept[0].rows.get(layer), fresh.rows.get(layer), `layer ${layer}: kept rows are the fresh ones`);
    // C fires on case 0: it runs again.
    const c = patchOf([await neuronOn(m, L, [seqs[0]], 5, true)]);
    stats = { reused: 0, run: 0 };
    await earlierInputs(m.loaded, [a, b, c], [seqs[0], seqs[1], seqs[2]], layers, patchSet([a, b, c], d), stats);
    assert.ok(stats.run >= 2, `case 0 (C fires there) and case 2 run: ${JSON.stringify(stats)}`);
    // A value edit acts everywhere: every case runs again.
    const e = patchOf([], [{ layer: 0, neuron: 3, delta: Array.from(gaussian(d, 9, 0.01)) }]);
    stats = { reused: 0, run: 0 };
    await earlierInputs(m.loaded, [a, b, c, e], [seqs[0], seqs[1], seqs[2], seqs[2]], layers, patchSet([a, b, c, e], d), stats);
    assert.deepEqual(stats, { reused: 0, run: 4 });
  });

  test('silentOn and silentPrefix agree with the activations', async (t) => {
    const m = await modelOf(t, entry('demo'));
    if (!m) return;
    const L = (m.loaded.graph.keyedLayers ?? []).slice(-1)[0];
    const seq = m.tokenizer.encode(TEXTS[1]);
    const rows = await protectedInputs(m.loaded, [seq], [L]);
    const x = rows.rows.get(L)!;
    const d = m.info.width;
    const quiet = await neuronOn(m, L, [seq], 11, false);
    assert.equal(silentOn(quiet, rows), true);
    assert.equal(silentPrefix([quiet], x, rows.positions, L), rows.positions);
    const loud = await neuronOn(m, L, [seq], 11, true);
    assert.equal(silentOn(loud, rows), false);
    const first = [...Array(rows.positions).keys()].find((p) => addedActivation(loud, x, p * d) > 0)!;
    assert.equal(silentPrefix([loud], x, rows.positions, L), first, 'the silent prefix ends where the neuron first fires');
  });
});
