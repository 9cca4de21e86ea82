// How fragile the model's greedy lines are: minimal patches for the first dev cases, applied at their full size and
// scaled down (too small, then, to fix their case), and the share of regression lines each leaves unchanged. Where a
// patch at a tenth of its size still changes lines, line specificity is bounded by the model's near-ties, not by
// the repair method.
//   npm run bench:specificity-floor -- [--cases 8] [--prompts 120] [--scales 1,0.3,0.1,0.03,0.01] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/engine/model/load';
import { patchSet } from '../src/engine/patches/patchset';
import { repair } from '../src/engine/repair/index';
import { greedyLines, sideEffects } from '../src/engine/repair/verify';
import type { Patch, RepairCase } from '../src/engine/types';
import { fmt, options, ROOT } from './common';

const jsonl = <T>(file: string): T[] => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);

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
  const rows: { id: string; neurons: number; lines: number[]; next: number[] }[] = [];
  for (const c of cases) {
    const r = await repair(model, c, { method: 'minimal', analyse: false, reference: prompts });
    if (!r.success) continue;
    const fx = [];
    for (const k of scales) fx.push(await sideEffects(model, prompts, undefined, patchSet([scaled(r.patch, k)], model.info.width), before));
    rows.push({ id: c.id ?? '', neurons: r.patch.edits.length, lines: fx.map((f) => f.specificity), next: fx.map((f) => f.nextTokenSpecificity) });
    process.stderr.write(`bench/specificity-floor: ${c.id}: ${r.patch.edits.length} neuron(s)\n`);
  }
  await model.release();
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const summary = {
    model: model.info.name, prompts: prompts.length, patches: rows.length, scales,
    lines: scales.map((_, i) => mean(rows.map((r) => r.lines[i]))), next: scales.map((_, i) => mean(rows.map((r) => r.next[i]))), rows,
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  const pct = (x: number) => `${fmt(100 * x, 1)} %`;
  process.stdout.write([
    `line specificity of scaled patches, ${model.info.name}: ${rows.length} minimal patches (first ${cases.length} dev cases), ${prompts.length} regression lines`,
    '',
    `| patch size | ${scales.map((k) => `× ${k}`).join(' | ')} |`,
    `|---|${scales.map(() => '---').join('|')}|`,
    `| lines unchanged | ${summary.lines.map(pct).join(' | ')} |`,
    `| next token unchanged | ${summary.next.map(pct).join(' | ')} |`,
    '',
  ].join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/specificity-floor: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
