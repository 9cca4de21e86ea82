// How fragile the model's greedy lines are: minimal patches for the first dev cases, applied at their full size and
// scaled down, and for each scale the share of cases the scaled patch still fixes (its case's greedy line is the
// desired text) and the share of regression lines and next tokens it leaves unchanged. Where a patch scaled down
// until it no longer fixes its case still changes lines, line specificity is bounded by the model's near-ties, not
// by the repair method. It also prints how many of the unpatched greedy lines have a near-tie (two best tokens within
// 0.01 and 0.1 logits at some position): the lines a small nudge can flip.
//   npm run bench:specificity-floor -- [--cases 8] [--prompts 120] [--scales 1,0.3,0.1,0.03,0.01] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/engine/model/load';
import { patchSet } from '../src/engine/patches/patchset';
import { repair } from '../src/engine/repair/index';
import { DEFAULT_MAX_NEW_TOKENS, generate, preparePrompt } from '../src/engine/generate';
import { type LoadedModel } from '../src/engine/model/load';
import { leftPad } from '../src/engine/model/session';
import { type GreedyLine, greedyLines, sideEffects } from '../src/engine/repair/verify';
import { logitRows, positionStates } from '../src/engine/trace/teacher';
import type { Patch, RepairCase } from '../src/engine/types';
import { fmt, options, ROOT } from './common';

const jsonl = <T>(file: string): T[] => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);

/** Whether a completion is the case's desired text, as `repair` decides success (a whole line unless lineEnd is false). */
function produces(c: RepairCase, completion: string): boolean {
  const desired = c.desired.replace(/\r\n/g, '\n').replace(/\n$/, '');
  return c.lineEnd ?? true ? completion === desired : completion.startsWith(desired);
}

/**
 * Per greedy line, the smallest margin (logits) by which its chosen token beat the runner-up at any of its
 * positions: one teacher-forced forward of prompt and line, healing's constraint included (what `linesAfter` checks).
 */
async function lineMargins(model: LoadedModel, prompts: string[], lines: GreedyLine[]): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < prompts.length; i += 8) {
    const rows = prompts.slice(i, i + 8).map((p, k) => {
      const prepared = preparePrompt(model, p, DEFAULT_MAX_NEW_TOKENS);
      const targets = lines[i + k].tokens;
      return { prepared, targets, input: [...prepared.ids, ...targets.slice(0, -1)] };
    });
    const { ids, mask, width } = leftPad(rows.map((r) => r.input));
    const first = rows.map((r) => width - r.input.length + r.prepared.ids.length - 1);
    const res = await model.session.forward({ ids, mask, logitsFrom: Math.min(...first) });
    rows.forEach((r, b) => {
      const states = positionStates(model, { ...r, first: first[b], lineEnd: false }, logitRows(res), b);
      out.push(states.length ? Math.min(...states.map((st) => st.gap)) : Infinity);
    });
  }
  return out;
}

const scaled = (p: Patch, k: number): Patch => ({ ...p, edits: p.edits.map((e) => ({ ...e, delta: e.delta.map((v) => v * k) })) });

async function main(): Promise<void> {
  const opt = options({
    cases: { type: 'string', default: '8' }, prompts: { type: 'string', default: '120' }, scales: { type: 'string', default: '1,0.3,0.1,0.03,0.01' },
  });
  const model = await loadModel(opt.model, { threads: opt.threads ? Number(opt.threads) : undefined });
  const scales = opt.scales.split(',').map(Number);
  const prompts = jsonl<{ prompt: string }>(path.join(ROOT, 'bench', 'cases', 'regression.jsonl')).slice(0, Number(opt.prompts)).map((r) => r.prompt);
  const cases = jsonl<RepairCase>(path.join(ROOT, 'bench', 'cases', 'dev.jsonl')).slice(0, Number(opt.cases));
  const before = await greedyLines(model, prompts);
  const margins = await lineMargins(model, prompts, before);
  const tieBelow = [0.01, 0.1];
  const rows: { id: string; neurons: number; fixed: boolean[]; lines: number[]; next: number[] }[] = [];
  for (const c of cases) {
    const r = await repair(model, c, { method: 'minimal', analyse: false, reference: prompts });
    if (!r.success) continue;
    const fx = [];
    const fixed: boolean[] = [];
    for (const k of scales) {
      const edits = patchSet([scaled(r.patch, k)], model.info.width);
      // Fixed: the case's greedy completion under the scaled patch is the desired text, judged as repair judges it.
      const [g] = await generate(model, [c.prompt], { edits });
      fixed.push(produces(c, g.completion));
      fx.push(await sideEffects(model, prompts, undefined, edits, before));
    }
    rows.push({ id: c.id ?? '', neurons: r.patch.edits.length, fixed, lines: fx.map((f) => f.specificity), next: fx.map((f) => f.nextTokenSpecificity) });
    process.stderr.write(`bench/specificity-floor: ${c.id}: ${r.patch.edits.length} neuron(s), fixed at scales ${scales.filter((_, i) => fixed[i]).join(', ') || 'none'}\n`);
  }
  await model.release();
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const summary = {
    model: model.info.name, prompts: prompts.length, patches: rows.length, scales,
    fixed: scales.map((_, i) => mean(rows.map((r) => (r.fixed[i] ? 1 : 0)))),
    nearTies: tieBelow.map((x) => ({ below: x, lines: margins.filter((g) => g < x).length })),
    lines: scales.map((_, i) => mean(rows.map((r) => r.lines[i]))), next: scales.map((_, i) => mean(rows.map((r) => r.next[i]))), rows,
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  const pct = (x: number) => `${fmt(100 * x, 1)} %`;
  process.stdout.write([
    `scaled patches, ${model.info.name}: ${rows.length} minimal patches (of the first ${cases.length} dev cases, ${cases.length - rows.length} not fixed at full size), ${prompts.length} regression lines`,
    '',
    `| patch size | ${scales.map((k) => `× ${k}`).join(' | ')} |`,
    `|---|${scales.map(() => '---').join('|')}|`,
    `| cases still fixed | ${summary.fixed.map(pct).join(' | ')} |`,
    `| lines unchanged | ${summary.lines.map(pct).join(' | ')} |`,
    `| next token unchanged | ${summary.next.map(pct).join(' | ')} |`,
    '',
    `near-ties in the unpatched greedy lines: ${summary.nearTies.map((t) => `${pct(t.lines / prompts.length)} (${t.lines}/${prompts.length}) of the lines have a position whose two best tokens are within ${t.below} logits`).join('; ')}`,
    '',
  ].join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/specificity-floor: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
