// Combining patches into what the instrumented session and export consume: per layer, the edited neurons and
// their summed value-vector changes. Patches whose `enabled` is false are skipped, so callers may pass either
// `store.list()` or `store.active()`.
import { NeuronpatchError, type NeuronEdit, type Patch } from '../types';

/** Per layer: neuron indices (ascending) and their deltas, K×d row-major (row k is the change of indices[k]). */
export type PatchSet = Map<number, { indices: number[]; deltas: Float32Array }>;

/**
 * The edits of the enabled patches with the same (layer, neuron) summed (in float64), sorted by layer then
 * neuron. Every delta must have the same length.
 */
export function editsOf(patches: readonly Patch[]): NeuronEdit[] {
  const sums = new Map<string, NeuronEdit>();
  let width: { n: number; at: string } | undefined;
  for (const p of patches) {
    if (!p.enabled) continue;
    p.edits.forEach((e, i) => {
      const at = `patch ${p.id} edit ${i} (layer ${e.layer}, neuron ${e.neuron})`;
      if (!width) width = { n: e.delta.length, at };
      else if (e.delta.length !== width.n)
        throw new NeuronpatchError(`${at} has a delta of ${e.delta.length} numbers, but ${width.at} has ${width.n}.`, 'All patches applied together must be for the same model.');
      const key = `${e.layer}:${e.neuron}`;
      const sum = sums.get(key);
      if (!sum) sums.set(key, { layer: e.layer, neuron: e.neuron, delta: e.delta.slice() });
      else for (let k = 0; k < e.delta.length; k++) sum.delta[k] += e.delta[k];
    });
  }
  return [...sums.values()].sort((a, b) => a.layer - b.layer || a.neuron - b.neuron);
}

/** The enabled patches as one PatchSet for a model of residual width `width`. */
export function patchSet(patches: readonly Patch[], width: number): PatchSet {
  const edits = editsOf(patches);
  if (edits.length > 0 && edits[0].delta.length !== width)
    throw new NeuronpatchError(
      `The patches' deltas have ${edits[0].delta.length} numbers, but the model's residual width is ${width}.`,
      'These patches were made for another model.',
    );
  const set: PatchSet = new Map();
  for (let i = 0; i < edits.length; ) {
    const layer = edits[i].layer;
    let j = i;
    while (j < edits.length && edits[j].layer === layer) j++;
    const deltas = new Float32Array((j - i) * width);
    for (let k = i; k < j; k++) deltas.set(edits[k].delta, (k - i) * width);
    set.set(layer, { indices: edits.slice(i, j).map((e) => e.neuron), deltas });
    i = j;
  }
  return set;
}
