// `trace`, `repair` and `export`: the repair flow from the command line.
import * as path from 'node:path';
import { repair, trace } from '../engine';
import { exportPatched } from '../engine/export/export';
import { rescuePatch } from '../engine/patches/rescue';
import { PatchStore } from '../engine/patches/store';
import { NeuronpatchError } from '../engine/types';
import { keyedOptions, methodOption as method, regressionBefore, sideInputs, sideOptions } from './side';
import { Phases, repairProgress } from './progress';
import { neuronName } from '../engine/neuronName';
import { int, marginOption, parse, print, promptArg, readText } from './args';
import { readRegression } from './cases';
import { type Command, openModel, readPatches, trackPhases, warn } from './context';
import { repairText, traceText } from './report';


/** The prompt of --prompt (read with --unescape's escapes) or --prompt-file. */
function promptOf(values: { prompt?: string; 'prompt-file'?: string; unescape?: boolean }): string {
  if (values.prompt !== undefined && values['prompt-file'] !== undefined) throw new NeuronpatchError('Give either --prompt or --prompt-file, not both.');
  if (values.prompt !== undefined) return promptArg(values.prompt, !!values.unescape, 'prompt');
  if (!values['prompt-file']) throw new NeuronpatchError('Give the prompt with --prompt-file FILE (or --prompt TEXT).');
  return readText(values['prompt-file'], 'prompt file');
}

/** The desired text of --desired (read with --unescape's escapes). */
function desiredOf(values: { desired?: string; unescape?: boolean }): string {
  return promptArg(values.desired ?? '', !!values.unescape, 'desired');
}

export const traceCommand: Command = async (args) => {
  const { values } = parse(args, {
    prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, desired: { type: 'string' }, top: { type: 'string' },
    patches: { type: 'string', multiple: true }, unescape: { type: 'boolean' },
  });
  if (values.desired === undefined) throw new NeuronpatchError('trace needs --desired TEXT.');
  const c = { prompt: promptOf(values), desired: desiredOf(values) };
  const model = await openModel(values.model, values.threads, values.dtype);
  const active = await readPatches(model, values.patches ?? []);
  const t = await trace(model, c, { top: int(values.top, 'top', 10), active });
  if (t.notice) warn(t.notice);
  print(!!values.json, t, () => traceText(t, model.info.neurons));
  await model.dispose();
  return 0;
};

export const repairCommand: Command = async (args) => {
  const { values } = parse(args, {
    prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, desired: { type: 'string' }, method: { type: 'string' },
    regression: { type: 'string' }, 'regression-limit': { type: 'string' }, margin: { type: 'string' }, out: { type: 'string' }, verbose: { type: 'boolean' },
    unescape: { type: 'boolean' },
    ...sideOptions,
  });
  if (values.desired === undefined) throw new NeuronpatchError('repair needs --desired TEXT.');
  const prompt = promptOf(values);
  const desired = desiredOf(values);
  // Every phase of the command is timed on the wall clock; any past ~2 s shows progress on stderr.
  const phases = new Phases();
  trackPhases(phases);
  try {
    const model = await phases.run('loading the model', () => openModel(values.model, values.threads, values.dtype));
    // An existing patch file is read (and validated) before any work, and the new patch is stacked on it.
    const store = values.out ? await PatchStore.open(values.out, model.info) : undefined;
    if (store?.swept.length) warn(`removed ${store.swept.length} temp file(s) left by writers that died: ${store.swept.join(', ')}`);
    const regression = readRegression(values.regression, warn, values['regression-limit'] ? int(values['regression-limit'], 'regression-limit', 0) : undefined);
    const side = await sideInputs(model, values, regression, phases);
    const before = await regressionBefore(model, regression, phases, store?.active());
    const r = await repair(model, { prompt, desired }, {
      method: method(values.method), regression, regressionBefore: before, active: store?.active(), margin: marginOption(values.margin),
      onProgress: repairProgress(phases, !!values.verbose, warn), onSideEffectProgress: (done, total) => phases.tick(done, total), ...side, ...keyedOptions(values),
    });
    phases.end();
    if (r.notice) warn(r.notice);
    let patchPath: string | null = null;
    let rescued = false;
    if (store && r.success) {
      phases.enter('saving the patch');
      try {
        store.add(r.patch);
        await store.save();
        patchPath = path.resolve(values.out!);
      } catch (e) {
        // The repair's result is not lost: it goes into a patch file of its own, and the user is told where.
        const why = e instanceof NeuronpatchError ? e.message : (e as Error).message;
        patchPath = await rescuePatch(values.out!, model.info, r.patch);
        rescued = true;
        warn(`could not save the patch into ${values.out}: ${why}
The new patch was written to ${patchPath} instead; ` +
          `merge it by hand, or pass that file with --patches.`);
      }
      phases.end();
    } else if (store) {
      warn(`the repair did not succeed; ${values.out} was left as it was`);
    }
    const wall = phases.times();
    const summary = {
      success: r.success, before: r.before, after: r.after, failingTokens: r.failingTokens,
      neurons: r.neurons.map((n) => ({ layer: n.layer, neuron: n.neuron, name: neuronName(n, model.info.neurons) })), specificity: r.specificity, nextTokenSpecificity: r.nextTokenSpecificity, meanKl: r.meanKl,
      generalization: r.generalization, ms: Math.round(r.ms), generationMs: Math.round(r.generationMs), patch: patchPath, method: r.method,
      ...(r.sideEffects ? { sideEffects: r.sideEffects } : {}), ...(r.layerChoice ? { layerChoice: r.layerChoice } : {}),
      added: r.patch.added?.length ?? 0,
      ...(r.fallback ? { fallback: r.fallback } : {}),
      wall: { ms: Math.round(wall.totalMs), phases: wall.phases.map((p) => ({ name: p.name, ms: Math.round(p.ms) })) },
    };
    print(!!values.json, { ...summary, ...(rescued ? { rescued: true } : {}) }, () =>
      repairText(r, model.info.neurons) + (patchPath ? `patch written to ${patchPath}\n` : '') + phases.text());
    await model.dispose();
    return rescued ? 4 : r.success ? 0 : 3;
  } finally {
    phases.end();
    trackPhases(undefined);
  }
};

export const exportCommand: Command = async (args) => {
  const { values } = parse(args, { patches: { type: 'string', multiple: true }, out: { type: 'string' }, quantized: { type: 'string' } });
  if (!values.out) throw new NeuronpatchError('export needs --out DIR (a new folder).');
  const quantized = values.quantized ?? 'side-branch';
  if (quantized !== 'side-branch' && quantized !== 'requantize') {
    throw new NeuronpatchError(`--quantized must be side-branch or requantize, got "${quantized.slice(0, 40)}".`);
  }
  if (!values.patches?.length) throw new NeuronpatchError('export needs at least one --patches FILE.');
  const model = await openModel(values.model, values.threads, values.dtype);
  const patches = await readPatches(model, values.patches);
  const res = await exportPatched({
    sourceFolder: model.info.folder, onnxPath: model.loaded.onnxPath, graph: model.loaded.graph, patches, outDir: path.resolve(values.out),
    quantized,
  });
  const q = res.quantized;
  const how = !q ? '' : q.method === 'side-branch'
    ? ` (quantized layers ${q.layers.join(', ')}: the patch as a float side branch, exact)`
    : ` (quantized layers ${q.layers.join(', ')}: ${q.blocks} block(s) re-quantized; largest weight error ${q.maxWeightError!.toExponential(2)})`;
  print(!!values.json, { out: res.outDir, files: res.files, patches: patches.length, quantized: q }, () => `exported ${patches.length} patch(es) into ${res.outDir}${how}\n`);
  await model.dispose();
  return 0;
};
