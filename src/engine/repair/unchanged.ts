// Where a patch provably changes nothing: a patch set made of added neurons only (no value edit: those act at every
// position) leaves a token sequence exactly as the unpatched model computes it when every added neuron is exactly
// silent at every position of it (earlier.ts's silentOn: ReLU gives 0, and 0·v adds nothing; x̂ at a layer does not
// depend on neurons at that layer or later, so checking each neuron against the unpatched x̂ holds layer by layer).
// The keyed method has the unpatched x̂ of its protected code at hand (keyedCache.ts): the side-effect check then
// runs no forward for the held-out texts among them that the patch leaves silent — their loss is the unpatched one.
import type { LayerEdits } from '../model/session';
import type { ProtectedInputs } from './keyed';
import { silentOn } from './earlier';

/** x̂ of token sequences on the unpatched model: `rows` holds them one after the other, in the order of `sequences`. */
export interface KnownInputs {
  sequences: readonly number[][];
  rows: ProtectedInputs;
}

/**
 * For each of `sequences` (token ids): true where `edits` provably leave it exactly as the unpatched model computes it
 * (no value edit, and every added neuron silent at each of its positions, x̂ read from `known`: the sequence must be
 * one of the known ones or a prefix of one); false where a neuron may fire there or x̂ is not known. No edits: all true.
 */
export function unchangedOn(edits: LayerEdits | undefined, sequences: readonly number[][], known: KnownInputs | undefined): boolean[] {
  const added = edits?.added ?? [];
  if (!edits || (edits.size === 0 && !added.length)) return sequences.map(() => true);
  if (edits.size > 0 || !known) return sequences.map(() => false);
  const { rows } = known;
  const d = added[0].key.length;
  const starts: number[] = [];
  known.sequences.reduce((at, s) => (starts.push(at), at + s.length), 0);
  return sequences.map((seq) => {
    const k = known.sequences.findIndex((s) => s.length >= seq.length && seq.every((id, i) => s[i] === id));
    if (k < 0 || !seq.length) return seq.length === 0;
    // The sequence's own positions: a view of the known rows.
    const view = new Map([...rows.rows].map(([L, x]) => [L, x.subarray(starts[k] * d, (starts[k] + seq.length) * d)]));
    return added.every((a) => silentOn(a, { positions: seq.length, rows: view }));
  });
}
