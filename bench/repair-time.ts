// Where a keyed repair's time goes: the first N dev cases repaired one by one in one process (each from the original
// weights), every progress step stamped with the ms since the repair started, and the repair's own time (solve and
// confirming generation; the trace and the side-effect check apart, as bench:repair counts it) over one generation
// of the case's bad completion (timed by the repair itself, in the same process).
//   node bench/run.mjs repair-time [--cases 8] [--from 0] [--method keyed] [--regression-limit 30] [--steps] [--json]
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/engine/model/load';
import { harvestGuard } from '../src/engine/repair/guard';
import { repair } from '../src/engine/repair/index';
import type { RepairCase, RepairMethod } from '../src/engine/types';
import { median, options, ROOT } from './common';

const opt = options({
  cases: { type: 'string', default: '8' }, from: { type: 'string', default: '0' }, method: { type: 'string', default: 'keyed' },
  'regression-limit': { type: 'string', default: '30' }, steps: { type: 'boolean', default: false },
  file: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'dev.jsonl') },
  regression: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'regression.jsonl') },
});
const log = (s: string) => process.stderr.write(`bench/repair-time: ${s}\n`);

async function main(): Promise<void> {
  const model = await loadModel(opt.model!);
  const lines = readFileSync(opt.regression!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const reference = lines.filter((_, i) => i % 2 === 0).slice(0, Number(opt['regression-limit']));
  const guard = await harvestGuard(model, reference);
  const cases = readFileSync(opt.file!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as RepairCase & { id: string })
    .slice(Number(opt.from), Number(opt.from) + Number(opt.cases));
  // Warm: the per-model caches (reference statistics, protected inputs, whitening) are built once, as in a session.
  await repair(model, cases[0], { method: opt.method as RepairMethod, reference, guard, analyse: false }).catch(() => undefined);
  const rows: { id: string; success: boolean; ms: number; genMs: number; steps: string[] }[] = [];
  for (const c of cases) {
    const steps: string[] = [];
    let t0 = performance.now();
    try {
      const r = await repair(model, c, {
        method: opt.method as RepairMethod, reference, guard, analyse: false,
        onProgress: (s) => {
          if (s.startsWith('solving')) t0 = performance.now();
          steps.push(`${Math.round(performance.now() - t0)} ms ${s.slice(0, 80)}`);
        },
      });
      rows.push({ id: c.id, success: r.success, ms: r.ms, genMs: r.generationMs, steps });
      log(`${c.id}: ${r.success ? 'fixed' : 'NOT fixed'} ${Math.round(r.ms)} ms, generation ${Math.round(r.generationMs)} ms (${(r.ms / r.generationMs).toFixed(1)}×), ${r.failingTokens} failing`);
      if (opt.steps) for (const s of steps) log(`    ${s}`);
    } catch (e) {
      log(`${c.id}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  await model.release();
  const ratio = median(rows.map((r) => r.ms / r.genMs));
  const out = { method: opt.method, cases: rows.length, fixed: rows.filter((r) => r.success).length, medianMs: median(rows.map((r) => r.ms)), medianGenerationMs: median(rows.map((r) => r.genMs)), medianRepairOverGeneration: ratio };
  if (opt.json) process.stdout.write(`${JSON.stringify({ ...out, rows })}\n`);
  else process.stdout.write(`${opt.method} on ${out.cases} cases (${out.fixed} fixed): median repair ${Math.round(out.medianMs)} ms, median generation ${Math.round(out.medianGenerationMs)} ms, median repair / generation ${ratio.toFixed(2)}×\n`);
}
main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
