// The cases of the active patches, seen by a new keyed repair: their FFN inputs x̂ (protected positions for the new
// keys' thresholds) and which of them the new neurons can change at all. Computed incrementally, so that the n-th
// repair of a stack does not run the n − 1 earlier cases again:
//   an added neuron is exactly silent on a sequence when its pre-activation k·x̂ − τ is negative at every position
//   (ReLU gives exactly 0, and 0·v adds exactly nothing), and x̂ at layer L does not depend on neurons at layers ≥ L;
//   so rows computed under one patch set hold under another that differs only by added neurons each silent on them
//   (checked layer by layer on the cached rows: a silent neuron changes nothing the later checks read).
// A case whose rows fail that check (a value edit differs: it acts everywhere; or a differing neuron fires) is run
// again under the current patch set.
import { type AddedNeuron } from '../model/added';
import type { LoadedModel } from '../model/load';
import type { LayerEdits } from '../model/session';
import type { Patch } from '../types';
import { protectedInputs, type ProtectedInputs } from './keyed';

/** Relative float32 tolerance of a pre-activation: below −SILENT·(Σ|k·x| + |τ|) it is negative in the graph too. */
const SILENT = 1e-4;

/**
 * Whether `neuron` is exactly silent at every position of `rows` (x̂ at its layer, [positions, d]): its
 * pre-activation is negative beyond float32 rounding everywhere. Rows without its layer: false (unknown).
 */
export function silentOn(neuron: AddedNeuron, rows: Pick<ProtectedInputs, 'positions' | 'rows'>): boolean {
  const x = rows.rows.get(neuron.layer);
  if (!x) return false;
  const d = neuron.key.length;
  const tau = neuron.threshold;
  for (let p = 0; p < rows.positions; p++) {
    let s = -tau;
    let mag = Math.abs(tau);
    const o = p * d;
    for (let c = 0; c < d; c++) {
      const t = neuron.key[c] * x[o + c];
      s += t;
      mag += Math.abs(t);
    }
    if (s >= -SILENT * mag) return false;
  }
  return true;
}

/**
 * How many leading positions of x ([positions, d] FFN inputs at the neurons' layer) every neuron of `neurons` is
 * exactly silent at (see silentOn): the positions whose keys and values in the KV cache the neurons leave as they were.
 */
export function silentPrefix(neurons: readonly AddedNeuron[], x: Float32Array, positions: number, layer: number): number {
  const mine = neurons.filter((a) => a.layer === layer);
  if (neurons.some((a) => a.layer < layer)) return 0;
  if (!mine.length) return positions;
  const d = mine[0].key.length;
  for (let p = 0; p < positions; p++) {
    const one: ProtectedInputs = { positions: 1, next: new Int32Array(1), rows: new Map([[layer, x.subarray(p * d, (p + 1) * d)]]) };
    if (!mine.every((a) => silentOn(a, one))) return p;
  }
  return positions;
}

/** A patch's identity for the cache: its id and the shape of what it changes (a reloaded copy has the same). */
function fingerprint(p: Patch): string {
  return `${p.id}:${p.edits.length}:${p.added?.length ?? 0}:${p.added?.[0]?.threshold ?? ''}`;
}

interface Entry {
  /** The layers the rows hold. */
  layers: string;
  rows: ProtectedInputs;
  /** The enabled patches the rows are exact under (fingerprint → patch). */
  under: Map<string, Patch>;
}

const cache = new WeakMap<LoadedModel, Map<string, Entry>>();

/**
 * x̂ of each active patch's case sequence (`sequences[i]` for `active[i]`) at `layers`, under `base` (the active
 * patches' set), one ProtectedInputs per case: taken from the cache where the rows provably still hold (see the
 * module comment), run again otherwise (in one batched pass). `stats.reused`/`stats.run` count the cases.
 */
export async function earlierInputs(
  model: LoadedModel, active: readonly Patch[], sequences: number[][], layers: number[], base: LayerEdits | undefined,
  stats?: { reused: number; run: number },
): Promise<ProtectedInputs[]> {
  const byModel = cache.get(model) ?? new Map<string, Entry>();
  cache.set(model, byModel);
  const enabled = new Map(active.filter((p) => p.enabled).map((p) => [fingerprint(p), p]));
  const layerKey = layers.join(',');
  const out: (ProtectedInputs | undefined)[] = active.map((p, i) => {
    const key = `${fingerprint(p)}|${JSON.stringify(sequences[i].length)}`;
    const e = byModel.get(key);
    if (!e || e.layers !== layerKey) return undefined;
    const differ = [...[...enabled].filter(([f]) => !e.under.has(f)), ...[...e.under].filter(([f]) => !enabled.has(f))].map(([, q]) => q);
    if (differ.some((q) => q.edits.length > 0)) return undefined;
    const neurons = differ.flatMap((q) => q.added ?? []).sort((a, b) => a.layer - b.layer);
    if (!neurons.every((a) => silentOn(a, e.rows))) return undefined;
    e.under = new Map(enabled);
    return e.rows;
  });
  const missing = out.flatMap((r, i) => (r ? [] : [i]));
  if (stats) {
    stats.reused += active.length - missing.length;
    stats.run += missing.length;
  }
  if (missing.length) {
    const all = await protectedInputs(model, missing.map((i) => sequences[i]), layers, base);
    const d = model.info.width;
    let at = 0;
    for (const i of missing) {
      const n = sequences[i].length;
      const rows: ProtectedInputs = {
        positions: n,
        next: all.next.slice(at, at + n),
        rows: new Map(layers.map((L) => [L, all.rows.get(L)!.slice(at * d, (at + n) * d)])),
      };
      at += n;
      out[i] = rows;
      byModel.set(`${fingerprint(active[i])}|${JSON.stringify(n)}`, { layers: layerKey, rows, under: new Map(enabled) });
    }
  }
  return out as ProtectedInputs[];
}
