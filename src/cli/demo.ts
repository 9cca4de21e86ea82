// `demo`: the main job on the embedded model, as the product does it by default (the keyed method; side effects on
// the 240 regression prompts and the guard lines the model gets right in them). A real failing case from the
// development set is shown, repaired (traced, solved, confirmed, checked) and verified with the patch file; the
// patch file and a Markdown report are written, and the wall time phase by phase.
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { repair } from '../engine';
import { rescuePatch } from '../engine/patches/rescue';
import { PatchStore } from '../engine/patches/store';
import { NeuronpatchError } from '../engine/types';
import { defaultModelDir, int, parse } from './args';
import { readCases, readRegression } from './cases';
import { type Command, openModel, trackPhases, warn } from './context';
import { Phases, repairProgress } from './progress';
import { methodOption, regressionBefore, sideInputs } from './side';
import { markdownReport, repairText, traceText } from './report';

export const demo: Command = async (args) => {
  const { values } = parse('demo', args, {
    out: { type: 'string' }, cases: { type: 'string' }, regression: { type: 'string' }, case: { type: 'string' }, 'regression-limit': { type: 'string' },
    method: { type: 'string' }, verbose: { type: 'boolean' },
  });
  // What the product does by default: the extension's method (keyed), the side effects on every regression
  // prompt of the bench (240, as `repair --regression bench/cases/regression.jsonl`), guard lines from them.
  const method = methodOption(values.method);
  const limit = int(values['regression-limit'], 'regression-limit', 0) || undefined;
  const root = path.resolve(defaultModelDir(), '..', '..');
  const casesFile = values.cases ?? path.join(root, 'bench', 'cases', 'dev.jsonl');
  const cases = readCases(casesFile, warn, '--cases');
  if (!cases.length) throw new NeuronpatchError(`No repair cases in ${casesFile}.`);
  const regression = readRegression(values.regression ?? path.join(root, 'bench', 'cases', 'regression.jsonl'), warn, limit, '--regression');
  const out = path.resolve(values.out ?? path.join('demo-output', new Date().toISOString().replace(/[:.]/g, '-')));
  const say = (s = '') => phases.say(`${s}\n`, process.stdout);

  const phases = new Phases();
  trackPhases(phases);
  try {
    const model = await phases.run('loading the model', () => openModel(values.model, values.threads, values.dtype));
    const i = model.info;
    say(`neuronpatch demo on ${i.name}: ${i.architecture}, ${i.layers} layers × ${i.neurons} neurons, width ${i.width}, vocabulary ${i.vocab}`);
    const pick = values.case ? cases.filter((c) => c.id === values.case) : cases;
    if (!pick.length) throw new NeuronpatchError(`No case with id ${values.case} in ${casesFile}.`);
    // The inputs of the side-effect check: the same for every case, cached per model and prompt set.
    const side = await sideInputs(model, {}, regression, phases);
    const before = await regressionBefore(model, regression, phases);
    for (const c of pick.slice(0, 5)) {
      const now = await phases.run(`checking that case ${c.id ?? ''} still fails`, () => model.generate(c.prompt));
      if (now.completion === c.desired) continue;
      say(`\n── case ${c.id ?? ''}: the prompt ends with\n${c.prompt.split('\n').slice(-6).join('\n')}▮`);
      say(`\nthe model completes: ${JSON.stringify(now.completion)}  (${now.ms.toFixed(0)} ms)`);
      say(`desired:             ${JSON.stringify(c.desired)}`);
      const r = await repair(model, c, {
        method, regression, regressionBefore: before, ...side,
        onProgress: repairProgress(phases, !!values.verbose, warn), onSideEffectProgress: (done, total) => phases.tick(done, total),
      });
      phases.end();
      // The trace is the one the repair made (top neurons at the first failing position), not a second run.
      say('\n── trace');
      say(traceText(r.trace, i.neurons));
      say(`── repair (${method})`);
      say(repairText(r, i.neurons));
      if (!r.success) {
        say('This case was not fixed; trying the next one.');
        continue;
      }
      phases.enter('writing the patch file and the report');
      mkdirSync(out, { recursive: true });
      let patchFile = path.join(out, 'patches.json');
      const store = await PatchStore.open(patchFile, i);
      try {
        store.add(r.patch);
        await store.save();
      } catch (e) {
        patchFile = await rescuePatch(patchFile, i, r.patch); // the repair is not lost to a failed save
        warn(`could not save the patch into ${path.join(out, 'patches.json')}: ${(e as Error).message}\nIt was written to ${patchFile} instead.`);
      }
      const report = path.join(out, 'report.md');
      phases.enter('generating with the patch file applied');
      const again = await model.generate(c.prompt, { patches: store.active() });
      phases.end();
      writeFileSync(report, markdownReport(i, r, patchFile, phases.text()));
      say(`with the patch file applied, generate gives: ${JSON.stringify(again.completion)}`);
      say(`\npatch  ${patchFile}\nreport ${report}\n`);
      say(phases.text());
      await model.dispose();
      return 0;
    }
    await model.dispose();
    say('None of the first cases could be fixed.');
    say(phases.text());
    return 3;
  } finally {
    phases.end();
    trackPhases(undefined);
  }
};
