// `trace`, `repair` and `export`: the repair flow from the command line.
import * as path from 'node:path';
import { repair, trace } from '../engine';
import { exportPatched } from '../engine/export/export';
import { rescuePatch } from '../engine/patches/rescue';
import { PatchStore } from '../engine/patches/store';
import { NeuronpatchError } from '../engine/types';
import { checkSideFiles, hasReference, keyedOptions, methodOption, regressionBefore, sideInputs, sideOptions } from './side';
import { Phases, repairProgress } from './progress';
import { neuronName } from '../engine/neuronName';
import { checkInputFile, int, marginOption, parse, print, promptArg, readText } from './args';
import { didYouMean, EXIT, UsageError, word } from './errors';
import { readRegression } from './cases';
import { type Command, openModel, readPatches, trackPhases, warn } from './context';
import { repairText, traceText } from './report';


/** The prompt of --prompt (read with --unescape's escapes) or --prompt-file. */
function promptOf(values: { prompt?: string; 'prompt-file'?: string; unescape?: boolean }, command: string): string {
  if (values.prompt !== undefined && values['prompt-file'] !== undefined) throw new UsageError(`${command}: give either --prompt or --prompt-file, not both.`);
  if (values.prompt !== undefined) return promptArg(values.prompt, !!values.unescape, 'prompt');
  if (!values['prompt-file']) throw new UsageError(`${command} needs the prompt: --prompt-file FILE or --prompt TEXT.`, `neuronpatch ${command} --help lists its options.`);
  return readText(values['prompt-file'], '--prompt-file');
}

/** The desired text of --desired (read with --unescape's escapes). */
function desiredOf(values: { desired?: string; unescape?: boolean }): string {
  return promptArg(values.desired ?? '', !!values.unescape, 'desired');
}

export const traceCommand: Command = async (args) => {
  const { values } = parse('trace', args, {
    prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, desired: { type: 'string' }, top: { type: 'string' },
    patches: { type: 'string', multiple: true }, unescape: { type: 'boolean' },
  });
  if (values.desired === undefined) throw new UsageError('trace needs --desired TEXT (the completion the prompt should get).', 'neuronpatch trace --help lists its options.');
  const top = int(values.top, 'top', 10);
  const c = { prompt: promptOf(values, 'trace'), desired: desiredOf(values) };
  for (const f of values.patches ?? []) checkInputFile(f, '--patches');
  const model = await openModel(values.model, values.threads, values.dtype);
  const active = await readPatches(model, values.patches ?? []);
  const t = await trace(model, c, { top, active });
  if (t.notice) warn(t.notice);
  print(!!values.json, t, () => traceText(t, model.info.neurons));
  await model.dispose();
  return 0;
};

export const repairCommand: Command = async (args) => {
  const { values } = parse('repair', args, {
    prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, desired: { type: 'string' }, method: { type: 'string' },
    regression: { type: 'string' }, 'regression-limit': { type: 'string' }, margin: { type: 'string' }, out: { type: 'string' }, verbose: { type: 'boolean' },
    unescape: { type: 'boolean' },
    ...sideOptions,
  });
  if (values.desired === undefined) throw new UsageError('repair needs --desired TEXT (the completion the prompt should get).', 'neuronpatch repair --help lists its options.');
  // The command line is checked before any work: numbers, the method, the input files.
  const margin = marginOption(values.margin);
  const regressionLimit = int(values['regression-limit'], 'regression-limit', 0) || undefined;
  keyedOptions(values);
  int(values['guard-max'], 'guard-max', 200);
  const prompt = promptOf(values, 'repair');
  const desired = desiredOf(values);
  checkSideFiles(values);
  const method = methodOption(values.method, hasReference(values), warn);
  // Every phase of the command is timed on the wall clock; any past ~2 s shows progress on stderr.
  const phases = new Phases();
  trackPhases(phases);
  try {
    const model = await phases.run('loading the model', () => openModel(values.model, values.threads, values.dtype));
    // An existing patch file is read (and validated) before any work, and the new patch is stacked on it.
    const store = values.out ? await PatchStore.open(values.out, model.info) : undefined;
    if (store?.swept.length) warn(`removed ${store.swept.length} temp file(s) left by writers that died: ${store.swept.join(', ')}`);
    const keyed = keyedOptions(values, model.info.layers);
    const regression = readRegression(values.regression, warn, regressionLimit);
    const side = await sideInputs(model, values, regression, phases);
    const before = await regressionBefore(model, regression, phases, store?.active());
    const r = await repair(model, { prompt, desired }, {
      method, regression, regressionBefore: before, active: store?.active(), margin,
      onProgress: repairProgress(phases, !!values.verbose, warn), onSideEffectProgress: (done, total) => phases.tick(done, total), ...side, ...keyed,
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
      sideEffectsMeasured: r.specificity !== null, ...(r.sideEffects ? { sideEffects: r.sideEffects } : {}), ...(r.layerChoice ? { layerChoice: r.layerChoice } : {}),
      added: r.patch.added?.length ?? 0,
      ...(r.fallback ? { fallback: r.fallback } : {}),
      wall: { ms: Math.round(wall.totalMs), phases: wall.phases.map((p) => ({ name: p.name, ms: Math.round(p.ms) })) },
    };
    print(!!values.json, { ...summary, ...(rescued ? { rescued: true } : {}) }, () =>
      repairText(r, model.info.neurons) + (patchPath ? `patch written to ${patchPath}\n` : '') + phases.text());
    await model.dispose();
    return rescued ? EXIT.rescued : r.success ? EXIT.ok : EXIT.notFixed;
  } finally {
    phases.end();
    trackPhases(undefined);
  }
};

export const exportCommand: Command = async (args) => {
  const { values } = parse('export', args, { patches: { type: 'string', multiple: true }, out: { type: 'string' }, quantized: { type: 'string' } });
  if (!values.out) throw new UsageError('export needs --out DIR (a new folder).', 'neuronpatch export --help lists its options.');
  const quantized = values.quantized ?? 'side-branch';
  if (quantized !== 'side-branch' && quantized !== 'requantize') {
    throw new UsageError(`--quantized must be side-branch or requantize, got ${word(quantized)}${didYouMean(quantized, ['side-branch', 'requantize'])}`);
  }
  if (!values.patches?.length) throw new UsageError('export needs at least one --patches FILE.', 'neuronpatch export --help lists its options.');
  for (const f of values.patches) checkInputFile(f, '--patches');
  const model = await openModel(values.model, values.threads, values.dtype);
  // --quantized says how a patch of a quantized weight is baked: on a model with no quantized FFN output weight a
  // requantize has nothing to act on, and would be silently ignored.
  if (quantized === 'requantize' && !model.loaded.graph.sites.some((s) => s.weight.quant)) {
    await model.dispose();
    throw new UsageError(`--quantized requantize only applies to a quantized model, and ${word(model.info.name)} stores its FFN output weights as ${model.info.weightFormat ?? model.info.weightType}: `
      + 'there is nothing to re-quantize.', 'Leave out --quantized: the patched weights of a float model are written exactly, in its own float type.');
  }
  const patches = await readPatches(model, values.patches);
  const res = await exportPatched({
    sourceFolder: model.info.folder, onnxPath: model.loaded.onnxPath, graph: model.loaded.graph, patches, outDir: path.resolve(values.out),
    quantized,
  });
  const q = res.quantized;
  if (quantized === 'requantize' && !q) warn('--quantized requantize: the patches edit no quantized weight of this model (their layers are float, or they only add keyed neurons, which go in as a float side branch), so nothing was re-quantized.');
  const how = !q ? '' : q.method === 'side-branch'
    ? ` (quantized layers ${q.layers.join(', ')}: the patch as a float side branch, exact)`
    : ` (quantized layers ${q.layers.join(', ')}: ${q.blocks} block(s) re-quantized; largest weight error ${q.maxWeightError!.toExponential(2)})`;
  print(!!values.json, { out: res.outDir, files: res.files, patches: patches.length, quantized: q }, () => `exported ${patches.length} patch(es) into ${res.outDir}${how}\n`);
  await model.dispose();
  return 0;
};
