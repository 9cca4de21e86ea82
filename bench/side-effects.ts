// The side-effect check of a repair, timed two ways on the same patches: decoding every regression line again
// under the patch (how it was done), against teacher-forcing the lines as decoded before and decoding again only
// the lines whose tokens greedy would no longer choose (`linesAfter`, what `sideEffects` does now). The patches
// come from repairing the first dev cases with each method; both ways must give the same lines.
//   npm run bench:side-effects -- [--cases 4] [--methods minimal,joint] [--prompts 120] [--reps 3] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { repair } from '../src/engine/repair/index';
import { completions, greedyLines, linesAfter } from '../src/engine/repair/verify';
import { loadModel } from '../src/engine/model/load';
import { patchSet } from '../src/engine/patches/patchset';
import type { RepairCase, RepairMethod } from '../src/engine/types';
import { fmt, median, options, ROOT } from './common';

const jsonl = <T>(file: string): T[] => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);

async function main(): Promise<void> {
  const opt = options({
    cases: { type: 'string', default: '4' }, methods: { type: 'string', default: 'minimal,joint' },
    prompts: { type: 'string', default: '120' }, reps: { type: 'string', default: '3' },
  });
  const threads = opt.threads ? Number(opt.threads) : undefined;
  const model = await loadModel(opt.model, { threads });
  const prompts = jsonl<{ prompt: string }>(path.join(ROOT, 'bench', 'cases', 'regression.jsonl')).slice(0, Number(opt.prompts)).map((r) => r.prompt);
  const cases = jsonl<RepairCase>(path.join(ROOT, 'bench', 'cases', 'dev.jsonl')).slice(0, Number(opt.cases));
  const before = await greedyLines(model, prompts);
  const rows: { method: string; id: string; changed: number; decodeMs: number; checkMs: number; same: boolean }[] = [];
  for (const method of opt.methods.split(',') as RepairMethod[]) {
    for (const c of cases) {
      const r = await repair(model, c, { method, analyse: false });
      if (!r.success) continue;
      const patched = patchSet([r.patch], model.info.width);
      const times = { decode: [] as number[], check: [] as number[] };
      let decoded: string[] = [];
      let checked: string[] = [];
      for (let rep = 0; rep < Number(opt.reps); rep++) {
        // Interleaved, the order flipped every repetition.
        for (const way of rep % 2 ? (['check', 'decode'] as const) : (['decode', 'check'] as const)) {
          const s = performance.now();
          if (way === 'decode') decoded = await completions(model, prompts, patched);
          else checked = await linesAfter(model, prompts, before, patched);
          times[way].push(performance.now() - s);
        }
      }
      rows.push({
        method, id: c.id ?? '', changed: decoded.filter((d, i) => d !== before[i].completion).length,
        decodeMs: median(times.decode), checkMs: median(times.check), same: decoded.every((d, i) => d === checked[i]),
      });
    }
  }
  await model.release();
  const summary = {
    model: model.info.name, prompts: prompts.length, reps: Number(opt.reps), rows,
    medianSpeedup: median(rows.map((r) => r.decodeMs / r.checkMs)), allSame: rows.every((r) => r.same),
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  process.stdout.write([
    `side-effect check, ${model.info.name}: ${prompts.length} regression lines per patch, median of ${summary.reps} interleaved repetitions`,
    '',
    '| patch | lines changed | decode every line (ms) | teacher-forced check (ms) | decode / check | same lines |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.method} ${r.id} | ${r.changed} | ${fmt(r.decodeMs, 0)} | ${fmt(r.checkMs, 0)} | **${fmt(r.decodeMs / r.checkMs)}×** | ${r.same ? 'yes' : 'NO'} |`),
    '',
    `median speed-up ${fmt(summary.medianSpeedup)}×; both ways give the same lines: ${summary.allSame ? 'yes' : 'NO'}`,
    '',
  ].join('\n'));
  if (!summary.allSame) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/side-effects: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
