// Human-readable renderings of a trace and a repair: terminal text and a Markdown report.
import { neuronName } from '../engine/neuronName';
import { sideEffectLine } from '../engine/repair/measures';
import type { ModelInfo, RepairResult, TraceResult } from '../engine/types';

const q = (s: string) => JSON.stringify(s);
const pct = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(1)} %`);
const tokens = (ts: { text: string }[]) => ts.map((t) => q(t.text)).join(' ');

/** A trace for the terminal; neurons named as everywhere (`L3.N280`, added ones `L4.K0`), `m` neurons a layer. */
export function traceText(t: TraceResult, m: number): string {
  const lines = [`completion  ${q(t.completion)}`, `desired     ${q(t.desired)}`];
  if (!t.at) return [...lines, 'The model already produces the desired text.', ''].join('\n');
  const p = t.at.position;
  lines.push(
    `failing     ${t.failing.length} position(s); first at token ${p.index} after ${q(p.prefix)}:`,
    `            model ${q(p.model.text)} p=${p.model.prob.toFixed(3)}, desired ${q(p.desired.text)} p=${p.desired.prob.toFixed(3)} rank ${p.desired.rank}`,
    '',
    'layers by occlusion (change of log p(desired) with the layer\'s FFN silenced):',
    ...[...t.at.layers].sort((a, b) => Math.abs(b.effect) - Math.abs(a.effect)).map((l) => `  blocks.${l.layer}.mlp  ${l.effect >= 0 ? '+' : ''}${l.effect.toFixed(3)}`),
    '',
    'neurons (attribution on logit(desired) − logit(model); ablation effect on the same gap):',
    ...t.at.neurons.map((n) =>
      `  ${neuronName(n, m).padEnd(9)} z=${n.activation.toFixed(2).padStart(6)}  attr=${n.attribution.toFixed(3).padStart(7)}  ablate=${(n.ablationEffect ?? NaN).toFixed(3).padStart(7)}  promotes ${tokens(n.promotes.slice(0, 3))}  suppresses ${tokens(n.suppresses.slice(0, 3))}`),
    '',
  );
  return lines.join('\n');
}

/**
 * A repair for the terminal. Its time is the solve and the confirming generation only (`r.ms`); the command's wall
 * time, phase by phase, follows it (progress.ts).
 */
export function repairText(r: RepairResult, m: number): string {
  return [
    `${r.success ? 'fixed' : 'NOT fixed'} (${r.method}${r.patch.metrics.margin === undefined ? '' : `, margin ${r.patch.metrics.margin}`}): solved and confirmed in ${r.ms.toFixed(0)} ms = ${(r.ms / Math.max(1, r.generationMs)).toFixed(1)}× one generation (the wall time is below)`,
    ...(r.fallback ? [r.fallback] : []),
    `before  ${q(r.before)}`,
    `after   ${q(r.after)}`,
    `neurons ${r.neurons.map((n) => neuronName(n, m)).join(', ')} for ${r.failingTokens} failing token(s)${r.neurons.some((n) => n.added) ? ' (K: added by the patch)' : ''}`,
    ...(r.layerChoice ? [r.layerChoice] : []),
    ...(r.sideEffects ? [`side effects: ${sideEffectLine(r.sideEffects)}`] : []),
    ...(r.sideEffects?.broken.length ? [`breaks ${r.sideEffects.broken.map((b) => q(b.desired)).join(', ')}`] : []),
    ...(r.specificity === null ? [notMeasured(r)] : []),
    ...(r.specificity === null ? [] : [`specificity ${pct(r.specificity)}${r.nextTokenSpecificity !== null ? ` (next token ${pct(r.nextTokenSpecificity)})` : ''}${r.meanKl !== null ? `, mean next-token KL ${r.meanKl.toExponential(2)}` : ''}${r.generalization !== null ? `, generalization ${pct(r.generalization)}` : ''}`]),
    '',
  ].join('\n');
}

/** What a repair without regression prompts did not measure, and the option that measures it. */
function notMeasured(r: RepairResult): string {
  const gen = r.generalization !== null ? ` Generalization ${pct(r.generalization)}.` : '';
  if (r.sideEffects) {
    return `not measured: specificity, token locality and held-out loss, since no regression prompts were given. Pass --regression FILE (prompts of code like yours) to measure them.${gen}`;
  }
  return `side effects not measured: no regression prompts were given, so specificity, token locality and held-out loss are unknown. `
    + `Pass --regression FILE (prompts of code like yours) to measure them.${gen}`;
}

export function markdownReport(model: ModelInfo, r: RepairResult, patchFile: string | null, wall?: string): string {
  const t = r.trace;
  const md = [
    `# neuronpatch repair report`,
    '',
    `Model: \`${model.name}\` (${model.architecture}, ${model.layers} layers × ${model.neurons} neurons, hash \`${model.hash.slice(0, 16)}\`)`,
    '',
    '## The case',
    '',
    '```python',
    r.patch.case.prompt.split('\n').slice(-8).join('\n') + '▮',
    '```',
    '',
    '| | completion |',
    '|---|---|',
    `| before | \`${r.before}\` |`,
    `| desired | \`${r.patch.case.desired}\` |`,
    `| after | \`${r.after}\` |`,
    '',
    `**${r.success ? 'Fixed' : 'Not fixed'}** by the ${r.method} method in ${r.ms.toFixed(0)} ms (${(r.ms / Math.max(1, r.generationMs)).toFixed(1)}× the ${r.generationMs.toFixed(0)} ms of one generation), ${r.neurons.some((n) => n.added) ? 'adding or editing' : 'editing'} ${r.neurons.length} neuron(s) for ${r.failingTokens} failing token(s).`,
    ...(r.fallback ? ['', r.fallback] : []),
    '',
    '## Failing positions',
    '',
    '| token | p before | rank before | p after | rank after |',
    '|---|---|---|---|---|',
    ...r.positions.map((p) => `| \`${JSON.stringify(p.text)}\` | ${p.before.prob.toFixed(4)} | ${p.before.rank} | ${p.after.prob.toFixed(4)} | ${p.after.rank} |`),
    '',
  ];
  if (t.at) {
    md.push('## Trace at the first failing position', '', '| layer | occlusion effect on log p(desired) |', '|---|---|',
      ...t.at.layers.map((l) => `| blocks.${l.layer}.mlp | ${l.effect.toFixed(3)} |`), '',
      '| neuron | activation | attribution | ablation effect | promotes | suppresses |', '|---|---|---|---|---|---|',
      ...t.at.neurons.map((n) => `| ${neuronName(n, model.neurons)} | ${n.activation.toFixed(2)} | ${n.attribution.toFixed(3)} | ${(n.ablationEffect ?? NaN).toFixed(3)} | ${tokens(n.promotes.slice(0, 3))} | ${tokens(n.suppresses.slice(0, 3))} |`), '');
  }
  md.push(r.neurons.some((n) => n.added) ? '## Neurons added (K) or edited (N)' : '## Neurons edited', '', '| neuron | attribution | ablation effect | promotes before | promotes after |', '|---|---|---|---|---|',
    ...r.neurons.map((n) => `| ${neuronName(n, model.neurons)} | ${n.attribution?.toFixed(3) ?? 'n/a'} | ${n.ablationEffect?.toFixed(3) ?? 'n/a'} | ${tokens(n.promotesBefore.slice(0, 3))} | ${tokens(n.promotesAfter.slice(0, 3))} |`), '',
    '## Side effects', '',
    ...(r.sideEffects ? [`${sideEffectLine(r.sideEffects)}.`, ''] : []),
    `Specificity: ${pct(r.specificity)} of regression completions unchanged (next token: ${pct(r.nextTokenSpecificity)}); mean next-token KL ${r.meanKl?.toExponential(2) ?? 'n/a'}; generalization ${pct(r.generalization)}.`, '');
  if (r.changed.length) {
    md.push('| prompt ends with | before | after |', '|---|---|---|',
      ...r.changed.slice(0, 10).map((c) => `| \`${JSON.stringify(c.prompt.slice(-40))}\` | \`${c.before}\` | \`${c.after}\` |`), '');
  }
  if (wall) md.push('## Wall time', '', '```text', wall.trimEnd(), '```', '');
  if (patchFile) md.push(`Patch file: \`${patchFile}\` (apply with \`neuronpatch generate --patches ${patchFile}\`).`, '');
  return md.join('\n');
}
