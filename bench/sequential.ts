// Sequential keyed repairs: N dev cases repaired one after another on top of all earlier patches (as a user
// would accumulate them), then: does every earlier fix still hold (greedy line = desired with all patches), and
// what did all of them together do to held-out loss, token locality and the guard lines.
// Reference code and guard lines: odd lines of bench/cases/regression.jsonl; evaluation: its even lines.
//   node bench/run.mjs sequential [--count 100] [--method keyed] [--regression-limit 60] [--key-margin 0.5] [--json]
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/engine/model/load';
import { patchSet } from '../src/engine/patches/patchset';
import { harvestGuard } from '../src/engine/repair/guard';
import { repair } from '../src/engine/repair/index';
import { measureSideEffects } from '../src/engine/repair/measures';
import { completions } from '../src/engine/repair/verify';
import type { Patch, RepairMethod } from '../src/engine/types';
import { median, options, ROOT } from './common';

const opt = options({
  count: { type: 'string', default: '100' }, method: { type: 'string', default: 'keyed' }, 'regression-limit': { type: 'string', default: '60' },
  'key-margin': { type: 'string', default: '0.5' }, cases: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'dev.jsonl') },
  regression: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'regression.jsonl') },
});
const log = (s: string) => process.stderr.write(`bench/sequential: ${s}\n`);

async function main(): Promise<void> {
  const model = await loadModel(opt.model!);
  const count = Number(opt.count);
  const cap = Number(opt['regression-limit']);
  const lines = readFileSync(opt.regression!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const reference = lines.filter((_, i) => i % 2 === 0).slice(0, cap);
  const evaluation = lines.filter((_, i) => i % 2 === 1).slice(0, cap);
  const cases = readFileSync(opt.cases!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { id: string; prompt: string; desired: string }).slice(0, count);
  const guard = await harvestGuard(model, reference);
  const unseen = await harvestGuard(model, evaluation);
  log(`${cases.length} cases, ${reference.length} reference prompts (${guard.length} guard lines), ${evaluation.length} evaluation prompts (${unseen.length} unseen guard lines)`);
  const active: Patch[] = [];
  const ms: number[] = [];
  let tried = 0;
  let fixed = 0;
  const started = performance.now();
  for (const c of cases) {
    tried++;
    try {
      const r = await repair(model, c, { method: opt.method as RepairMethod, active, reference, guard, analyse: false, keyMargin: Number(opt['key-margin']) });
      ms.push(r.ms);
      if (r.success) {
        fixed++;
        active.push(r.patch);
      }
      log(`${c.id}: ${r.success ? 'fixed' : 'NOT fixed'} (${(r.patch.added?.length ?? 0) + r.patch.edits.length} neurons, ${Math.round(r.ms)} ms); ${active.length} patches active`
        + (r.success ? '' : `; ${(r.layerChoice ?? r.conflicts?.map((k) => `breaks ${k.patchId}`).join(', ') ?? '').slice(0, 300)}`));
    } catch (e) {
      log(`${c.id}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  const all = patchSet(active, model.info.width);
  const got = await completions(model, active.map((p) => p.case.prompt), all);
  const holding = got.filter((g, i) => g === active[i].case.desired).length;
  const fx = await measureSideEffects(model, { prompts: evaluation, guard, unseenGuard: unseen, heldOut: evaluation }, undefined, all);
  const out = {
    method: opt.method, cases: tried, fixed, patches: active.length, earlierFixesHolding: holding,
    neurons: active.reduce((s, p) => s + p.edits.length + (p.added?.length ?? 0), 0),
    heldOutLossChange: fx.lossChange, tokenLocality: fx.tokenLocality, kept: fx.kept, keptUnseen: fx.summary.keptUnseen, meanKl: fx.meanKl,
    medianRepairMs: median(ms), firstTenMedianMs: median(ms.slice(0, 10)), lastTenMedianMs: median(ms.slice(-10)), wallS: (performance.now() - started) / 1000,
  };
  await model.release();
  if (opt.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    const pct = (x: number | null | undefined, d = 2) => (x == null ? 'n/a' : `${(100 * x).toFixed(d)} %`);
    process.stdout.write([
      `${out.cases} sequential ${out.method} repairs on top of each other: ${out.fixed} fixed (${out.neurons} neurons in all)`,
      `every fix with all ${out.patches} patches active: ${out.earlierFixesHolding}/${out.patches} still produce their desired line`,
      `all patches together: held-out loss ${out.heldOutLossChange === null ? 'n/a' : `${out.heldOutLossChange >= 0 ? '+' : ''}${(100 * out.heldOutLossChange).toFixed(3)} %`}, `
        + `token locality ${pct(out.tokenLocality)}, guard lines kept ${out.kept?.kept}/${out.kept?.of}, unseen ${out.keptUnseen?.kept}/${out.keptUnseen?.of}, mean KL ${out.meanKl?.toExponential(2)}`,
      `repair time: median ${Math.round(out.medianRepairMs)} ms (first ten ${Math.round(out.firstTenMedianMs)} ms, last ten ${Math.round(out.lastTenMedianMs)} ms); wall ${Math.round(out.wallS)} s`,
      '',
    ].join('\n'));
  }
}
main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
