// Why keyed repairs do or do not reach a case's variants: for the dev cases that have variants (other places in the
// held-out files where the same stripped line comes next and the model fails it too; tools/cases/harvest.mjs), each
// is repaired with the keyed method, and at every variant position that fails before the patch the bench reads the
// added neurons' response there against their thresholds (relative pre-activation: 1 at the neuron's own context,
// 0 at its threshold, < 0 silent), and whether the variant is fixed.
//   node bench/run.mjs repair-variants [--cases 6] [--key-margins 0.5] [--regression-limit 30] [--variants N] [--margin 2] [--layer L] [--json]
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/engine/model/load';
import { type AddedNeuron } from '../src/engine/model/added';
import { patchSet } from '../src/engine/patches/patchset';
import { harvestGuard } from '../src/engine/repair/guard';
import { repair } from '../src/engine/repair/index';
import { completions } from '../src/engine/repair/verify';
import { repairTarget, teacherForce } from '../src/engine/trace/teacher';
import type { RepairCase } from '../src/engine/types';
import { options, ROOT } from './common';

const opt = options({
  cases: { type: 'string', default: '6' }, 'key-margins': { type: 'string', default: '0.5' }, 'regression-limit': { type: 'string', default: '30' },
  variants: { type: 'string', default: '' }, margin: { type: 'string', default: '2' }, layer: { type: 'string', default: '' }, from: { type: 'string', default: '0' },
  file: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'dev.jsonl') },
  regression: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'regression.jsonl') },
});
const log = (s: string) => process.stderr.write(`bench/repair-variants: ${s}\n`);

/** Relative pre-activation of `a` at x (1 at `own`, 0 at the threshold). */
function relative(a: AddedNeuron, x: Float32Array, at: number, own: number, d: number): number {
  const pre = (y: number) => {
    let s = -a.threshold;
    for (let c = 0; c < d; c++) s += a.key[c] * x[y * d + c];
    return s;
  };
  return pre(at) / own;
}

async function main(): Promise<void> {
  const model = await loadModel(opt.model!);
  const d = model.info.width;
  const lines = readFileSync(opt.regression!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  const reference = lines.filter((_, i) => i % 2 === 0).slice(0, Number(opt['regression-limit']));
  const guard = await harvestGuard(model, reference);
  const all = readFileSync(opt.file!, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as RepairCase & { id: string });
  const cases = all.filter((c) => c.variants?.length).slice(Number(opt.from), Number(opt.from) + Number(opt.cases));
  log(`${cases.length} cases with variants (${cases.reduce((s, c) => s + c.variants!.length, 0)} variants), ${reference.length} reference prompts, ${guard.length} guard lines`);
  const rows: unknown[] = [];
  for (const keyMargin of opt['key-margins']!.split(',').map(Number)) {
    let fixed = 0;
    let total = 0;
    let casesFixed = 0;
    let allFire = 0;
    let lineStartMiss = 0;
    const perCase: number[] = [];
    for (const c of cases) {
      const r = await repair(model, c, { method: 'keyed', reference, guard, analyse: false, keyMargin, margin: Number(opt.margin), ...(opt.layer ? { keyedLayer: Number(opt.layer) } : {}), ...(opt.variants ? { keyVariants: Number(opt.variants) } : {}) });
      if (!r.success) {
        log(`${c.id}: not fixed`);
        continue;
      }
      casesFixed++;
      const added = r.patch.added ?? [];
      const patched = patchSet([r.patch], d);
      const layers = [...new Set(added.map((a) => a.layer))];
      const own = new Map<AddedNeuron, number>();
      const t = repairTarget(model, c.prompt, c.desired);
      const xs = (await model.session.forward({ ids: [t.input], ffnInputs: layers, lastOnly: true })).ffnInputs;
      // Own pre-activation: the largest over the case's positions.
      for (const a of added) {
        const x = xs.get(a.layer)!;
        let best = 0;
        for (let p = t.first; p < t.input.length; p++) best = Math.max(best, relative(a, x, p, 1, d));
        own.set(a, best);
      }
      const got = await completions(model, c.variants!.map((v) => v.prompt), patched);
      perCase.push(got.filter((g, i) => g === c.variants![i].desired.replace(/\n$/, '')).length / c.variants!.length);
      for (const [vi, v] of c.variants!.entries()) {
        total++;
        const ok = got[vi] === v.desired.replace(/\n$/, '');
        if (ok) fixed++;
        const vt = repairTarget(model, v.prompt, v.desired);
        const f = await teacherForce(model, vt);
        const vx = (await model.session.forward({ ids: [vt.input], ffnInputs: layers, lastOnly: true })).ffnInputs;
        const failing = f.states.filter((s) => s.failing);
        const detail = failing.map((s) => {
          const pos = vt.first + s.index;
          const resp = added.map((a) => relative(a, vx.get(a.layer)!, pos, own.get(a)!, d));
          return { index: s.index, token: model.tokenizer.tokenText(s.desired), best: Math.max(...resp) };
        });
        if (detail.every((x) => x.best > 0)) allFire++;
        // The line's first token: the indentation-carrying newline (#0) or the first word after it (#1).
        if (detail.some((x) => x.index <= 1 && x.best <= 0)) lineStartMiss++;
        log(`${c.id} ρ=${keyMargin} variant ${vi}: ${ok ? 'FIXED' : 'not fixed'}; ${failing.length} failing of ${vt.targets.length}: `
          + detail.map((x) => `#${x.index} ${JSON.stringify(x.token)} ${x.best.toFixed(2)}`).join(', '));
        rows.push({ id: c.id, keyMargin, variant: vi, fixed: ok, failing: detail, neurons: added.length, got: got[vi].slice(0, 60), desired: v.desired });
      }
    }
    const meanPerCase = perCase.length ? perCase.reduce((a, b) => a + b, 0) / perCase.length : null;
    log(`ρ=${keyMargin}: ${casesFixed}/${cases.length} cases fixed; variants fixed ${fixed}/${total} (mean per fixed case ${meanPerCase === null ? 'n/a' : (100 * meanPerCase).toFixed(1)} %); `
      + `variants where some added neuron fires at every failing position ${allFire}/${total}; variants with a line-start position (#0/#1) no neuron fires at ${lineStartMiss}/${total}`);
    rows.push({ keyMargin, casesFixed, variantsFixed: fixed, variants: total, meanPerCase, allFire, lineStartMiss });
  }
  await model.release();
  if (opt.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
}
main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
