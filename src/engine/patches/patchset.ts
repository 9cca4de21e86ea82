// Combining patches into what the instrumented session and export consume: per layer, the edited neurons and
// their summed value-vector changes. Patches whose `enabled` is false are skipped, so callers may pass either
// `store.list()` or `store.active()`.
import type { AddedNeuron } from '../model/added';
import type { LayerEdits } from '../model/session';
import { NeuronpatchError, type NeuronEdit, type Patch } from '../types';

/** Per layer: neuron indices and their deltas, K×d row-major (row k is the change of indices[k]). */
export type PatchSet = LayerEdits;

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
  return withAdded(combine(undefined, edits, width), addedOf(patches));
}

/** The added (keyed) neurons of the enabled patches, in patch order. */
export function addedOf(patches: readonly Patch[]): AddedNeuron[] {
  return patches.filter((p) => p.enabled).flatMap((p) => p.added ?? []);
}

/** `set` (not changed) with `added` neurons appended to its own. */
export function withAdded(set: PatchSet, added: readonly AddedNeuron[]): PatchSet {
  const out: PatchSet = new Map(set);
  const all = [...(set.added ?? []), ...added];
  if (all.length) out.added = all;
  return out;
}

/**
 * `base` (copied, never changed) plus `edits`, summed per neuron: a neuron new to its layer is appended, so edits
 * sorted by layer and neuron give ascending indices.
 */
export function combine(base: PatchSet | undefined, edits: readonly { layer: number; neuron: number; delta: ArrayLike<number> }[], width: number): PatchSet {
  const out: PatchSet = new Map();
  if (base?.added?.length) out.added = base.added;
  for (const [layer, e] of base ?? []) out.set(layer, { indices: [...e.indices], deltas: Float32Array.from(e.deltas) });
  for (const e of edits) {
    const cur = out.get(e.layer) ?? { indices: [], deltas: new Float32Array(0) };
    let k = cur.indices.indexOf(e.neuron);
    if (k < 0) {
      k = cur.indices.push(e.neuron) - 1;
      const grown = new Float32Array(cur.indices.length * width);
      grown.set(cur.deltas);
      cur.deltas = grown;
    }
    for (let i = 0; i < width; i++) cur.deltas[k * width + i] += e.delta[i];
    out.set(e.layer, cur);
  }
  return out;
}
