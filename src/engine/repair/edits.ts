// Value-vector edits while a repair is being solved (their sum with the active patches is patchset.ts's combine).
import { NeuronpatchError, type NeuronEdit, type Patch } from '../types';

export interface Edit {
  layer: number;
  neuron: number;
  delta: Float64Array;
}

/** Adds `delta` to the edit of (layer, neuron), creating it if needed: a list built this way holds one edit per neuron. */
export function accumulate(edits: Edit[], layer: number, neuron: number, delta: Float64Array): Edit[] {
  const out = edits.map((e) => ({ ...e, delta: Float64Array.from(e.delta) }));
  const hit = out.find((e) => e.layer === layer && e.neuron === neuron);
  if (hit) for (let i = 0; i < delta.length; i++) hit.delta[i] += delta[i];
  else out.push({ layer, neuron, delta: Float64Array.from(delta) });
  return out;
}

/** Earlier patches' changes of one neuron, for keeping a new change orthogonal to them. */
export function priorDeltas(patches: readonly Patch[], layer: number, neuron: number): number[][] {
  return patches.flatMap((p) => p.edits.filter((e) => e.layer === layer && e.neuron === neuron).map((e) => e.delta));
}

/** Removes from `v` its components along `basis` (Gram–Schmidt), so a later fix does not undo an earlier one. */
export function orthogonalize(v: Float64Array, basis: number[][]): Float64Array {
  const out = Float64Array.from(v);
  const ortho: Float64Array[] = [];
  for (const b of basis) {
    const u = Float64Array.from(b);
    for (const q of ortho) {
      let p = 0;
      for (let i = 0; i < u.length; i++) p += u[i] * q[i];
      for (let i = 0; i < u.length; i++) u[i] -= p * q[i];
    }
    let n = 0;
    for (const x of u) n += x * x;
    n = Math.sqrt(n);
    if (n < 1e-9) continue;
    for (let i = 0; i < u.length; i++) u[i] /= n;
    ortho.push(u);
  }
  for (const q of ortho) {
    let p = 0;
    for (let i = 0; i < out.length; i++) p += out[i] * q[i];
    for (let i = 0; i < out.length; i++) out[i] -= p * q[i];
  }
  return out;
}

export function toNeuronEdits(edits: Edit[]): NeuronEdit[] {
  return edits.map((e) => ({ layer: e.layer, neuron: e.neuron, delta: Array.from(e.delta) }));
}

/**
 * A solver whose changes are no longer finite numbers has diverged (its linearization broke down, typically on an
 * fp16 graph whose activations saturate): said as such, instead of the edits being dropped as empty.
 * @throws NeuronpatchError naming the solver, the round and the neurons whose change is NaN or ±Infinity.
 */
export function assertFinite(edits: Edit[], solver: string, round: number): void {
  const bad = edits.filter((e) => e.delta.some((v) => !Number.isFinite(v)));
  if (!bad.length) return;
  const largest = Math.max(0, ...edits.filter((e) => !bad.includes(e)).map((e) => Math.sqrt(e.delta.reduce((s, v) => s + v * v, 0))));
  throw new NeuronpatchError(
    `The ${solver} solver diverged in round ${round}: the change of ${bad.length} of ${edits.length} neuron(s) `
      + `(${bad.slice(0, 3).map((e) => `L${e.layer}/${e.neuron}`).join(', ')}) is not finite`
      + (largest ? `, the largest finite change has norm ${largest.toPrecision(3)}.` : '.'),
    'No patch was made. Try the other method, a smaller --margin, or an fp32 export of the model (fp16 activations saturate).',
  );
}
