// `demo`: the main job on the embedded model. A real failing case from the development set is shown, traced,
// repaired and verified; the patch file and a Markdown report are written.
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { repair, trace } from '../engine';
import { rescuePatch } from '../engine/patches/rescue';
import { PatchStore } from '../engine/patches/store';
import { NeuronpatchError } from '../engine/types';
import { defaultModelDir, int, parse } from './args';
import { readCases, readRegression } from './cases';
import { type Command, openModel, warn } from './context';
import { markdownReport, repairText, traceText } from './report';

export const demo: Command = async (args) => {
  const { values } = parse(args, { out: { type: 'string' }, cases: { type: 'string' }, regression: { type: 'string' }, case: { type: 'string' }, 'regression-limit': { type: 'string' } });
  const root = path.resolve(defaultModelDir(), '..', '..');
  const casesFile = values.cases ?? path.join(root, 'bench', 'cases', 'dev.jsonl');
  const cases = readCases(casesFile, warn);
  if (!cases.length) throw new NeuronpatchError(`No repair cases in ${casesFile}.`);
  const regression = readRegression(values.regression ?? path.join(root, 'bench', 'cases', 'regression.jsonl'), warn, int(values['regression-limit'], 'regression-limit', 100));
  const out = path.resolve(values.out ?? path.join('demo-output', new Date().toISOString().replace(/[:.]/g, '-')));
  const say = (s = '') => process.stdout.write(`${s}\n`);

  const model = await openModel(values.model, values.threads, values.dtype);
  const i = model.info;
  say(`neuronpatch demo on ${i.name}: ${i.architecture}, ${i.layers} layers × ${i.neurons} neurons, width ${i.width}, vocabulary ${i.vocab}`);
  const pick = values.case ? cases.filter((c) => c.id === values.case) : cases;
  if (!pick.length) throw new NeuronpatchError(`No case with id ${values.case} in ${casesFile}.`);
  for (const c of pick.slice(0, 5)) {
    const before = await model.generate(c.prompt);
    if (before.completion === c.desired) continue;
    say(`\n── case ${c.id ?? ''}: the prompt ends with\n${c.prompt.split('\n').slice(-6).join('\n')}▮`);
    say(`\nthe model completes: ${JSON.stringify(before.completion)}  (${before.ms.toFixed(0)} ms)`);
    say(`desired:             ${JSON.stringify(c.desired)}`);
    say('\n── trace');
    say(traceText(await trace(model, c, { top: 8 })));
    say('── repair (minimal)');
    const r = await repair(model, c, { method: 'minimal', regression, onProgress: (l) => say(`  ${l}`) });
    say(repairText(r));
    if (!r.success) {
      say('This case was not fixed within the neuron budget; trying the next one.');
      continue;
    }
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
    writeFileSync(report, markdownReport(i, r, patchFile));
    const again = await model.generate(c.prompt, { patches: store.active() });
    say(`with the patch file applied, generate gives: ${JSON.stringify(again.completion)}`);
    say(`\npatch  ${patchFile}\nreport ${report}`);
    await model.dispose();
    return 0;
  }
  await model.dispose();
  say('None of the first cases could be fixed.');
  return 3;
};
