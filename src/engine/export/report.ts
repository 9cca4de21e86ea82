// PATCHES.md of an exported folder: which patches its weights carry, in words a reviewer can check.
import { patchNeuronNames } from '../neuronName';
import { addedOf, editsOf } from '../patches/patchset';
import type { Patch } from '../types';

/** A fenced block that no backtick run inside the text can close early. */
function fenced(text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  return `${fence}text\n${text}\n${fence}`;
}

/** Inline code for a short string, shown as a JSON string so whitespace and newlines stay visible. */
function inline(text: string, max = 120): string {
  const s = JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
  return s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``;
}

const pct = (x: number | null): string => (x === null ? 'not measured' : `${(100 * x).toFixed(1)} %`);

/** A patch's neurons named as the exported model holds them: added ones numbered on from the patches before it. */
function neurons(p: Patch, earlier: readonly Patch[]): string {
  return patchNeuronNames(p, earlier).join(', ') || 'none';
}

export interface ReportInput {
  sourceName: string;
  onnxFile: string;
  weightType: string;
  patches: Patch[];
  exportedAt: string;
  /** PATCHES.md of the source folder, when it was itself an export. */
  earlier?: string;
  /** The source had a MODEL_CARD.md, which was left out. */
  hadModelCard: boolean;
}

export function patchesMarkdown(r: ReportInput): string {
  const summed = editsOf(r.patches);
  const byLayer = new Map<number, number[]>();
  for (const e of summed) byLayer.set(e.layer, [...(byLayer.get(e.layer) ?? []), e.neuron]);
  const added = addedOf(r.patches);
  const addedByLayer = new Map<number, number>();
  for (const a of added) addedByLayer.set(a.layer, (addedByLayer.get(a.layer) ?? 0) + 1);
  const lines = [
    '# Patches baked into this model',
    '',
    `This folder is \`${r.sourceName}\` with ${r.patches.length} neuronpatch patch${r.patches.length === 1 ? '' : 'es'} baked into \`${r.onnxFile}\`, exported ${r.exportedAt}.`,
  ];
  if (summed.length) {
    lines.push(
      '',
      `Edited neurons (${r.weightType || 'float'} FFN output weights): for each edited neuron j of layer l, the value vector v_j (the row or`,
      'column of that layer\'s output projection) became v_j + Δv_j, with the deltas of patches that share a neuron summed.',
      `Neurons edited: ${[...byLayer].map(([l, ns]) => `layer ${l}: ${ns.join(', ')}`).join('; ')}.`,
    );
  }
  if (added.length) {
    lines.push(
      '',
      'Added (keyed) neurons: each layer below has a side branch after its FFN output projection,',
      'out\' = out + ReLU(x̂ · K − τ) · V, reading the layer\'s FFN input x̂, with the neurons\' keys K, thresholds τ and',
      'values V as initializers `neuronpatch.blocks.L.added_key`, `_threshold`, `_value`; no existing weight changed.',
      `Neurons added: ${[...addedByLayer].map(([l, n]) => `layer ${l}: ${n}`).join('; ')}.`,
      'Below, added neuron `Lℓ.Kk` is the k-th neuron added to layer ℓ, counted over the patches in the order listed (the',
      'order of the side branch\'s columns): the names `neuronpatch repair` and `trace` give them with these patches applied in this order.',
    );
  }
  lines.push(
    '',
    'The patches are part of the model now: do not apply their patch file to this model again (neuronpatch',
    'refuses it anyway, since this model has another hash).' +
      (r.hadModelCard ? ' The source MODEL_CARD.md was not copied: it describes the unpatched weights.' : ''),
  );
  r.patches.forEach((p, i) => {
    const m = p.metrics;
    lines.push(
      '',
      `## ${i + 1}. \`${p.id}\``,
      '',
      `- Method: ${p.method}; created ${p.createdAt}; neurons: ${neurons(p, r.patches.slice(0, i))}`,
      `- Fixed: ${m.success ? 'yes' : 'no'}; failing tokens: ${m.failingTokens}; specificity: ${pct(m.specificity)}; ` +
        `generalization: ${pct(m.generalization)}; repair time: ${Math.round(m.repairMs)} ms` +
        (m.margin === undefined ? '' : `; margin: ${m.margin} logits`),
      `- Desired: ${inline(p.case.desired)}`,
      `- Before: ${inline(p.case.before)}`,
      `- After: ${inline(p.case.after)}`,
      '',
      'Prompt:',
      '',
      fenced(p.case.prompt.length > 600 ? `…${p.case.prompt.slice(-600)}` : p.case.prompt),
    );
  });
  if (r.earlier?.trim()) {
    // Verbatim (headings inside it not demoted: its fenced prompts may hold lines starting with '#').
    lines.push('', '---', '', 'The source folder was itself an export; its PATCHES.md follows.', '', r.earlier.trim());
  }
  return `${lines.join('\n')}\n`;
}
