// `eval`: repair every case of a file from the unpatched model and report the measures of issue 4.
import { repair } from '../engine';
import { median } from '../engine/linalg';
import { NeuronpatchError, type RepairMethod } from '../engine/types';
import { int, marginOption, parse, print } from './args';
import { UsageError } from './errors';
import { readCases, readRegression } from './cases';
import { type Command, openModel, trackPhases, warn } from './context';
import { Phases } from './progress';
import { checkSideFiles, hasReference, keyedOptions, methodOption, regressionBefore as linesBefore, sideInputs, sideOptions } from './side';

interface CaseResult {
  id: string;
  alreadyCorrect?: boolean;
  success: boolean;
  /** The solver whose patch was kept (joint where minimal fell back to it). */
  method?: RepairMethod;
  failingTokens: number;
  neurons: number;
  specificity: number | null;
  nextTokenSpecificity?: number | null;
  meanKl: number | null;
  generalization: number | null;
  /** Side effects as model editing measures them (null where not measured). */
  tokenLocality?: number | null;
  kept?: { kept: number; of: number } | null;
  keptUnseen?: { kept: number; of: number } | null;
  lossChange?: number | null;
  /** Keyed: the layer choice, in words. */
  layerChoice?: string;
  ms: number;
  generationMs: number;
  error?: string;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

export const evaluate: Command = async (args) => {
  const { values } = parse('eval', args, {
    cases: { type: 'string' }, method: { type: 'string' }, regression: { type: 'string' }, limit: { type: 'string' },
    'regression-limit': { type: 'string' }, margin: { type: 'string' }, 'no-fallback': { type: 'boolean' }, verbose: { type: 'boolean' },
    ...sideOptions,
  });
  if (!values.cases) throw new UsageError('eval needs --cases FILE.jsonl.', 'neuronpatch eval --help lists its options.');
  const margin = marginOption(values.margin);
  const limit = int(values.limit, 'limit', 0) || undefined;
  const regressionLimit = int(values['regression-limit'], 'regression-limit', 0) || undefined;
  keyedOptions(values);
  int(values['guard-max'], 'guard-max', 200);
  let cases = readCases(values.cases, warn);
  if (limit) cases = cases.slice(0, limit);
  const regression = readRegression(values.regression, warn, regressionLimit);
  checkSideFiles(values);
  const method: RepairMethod = methodOption(values.method, hasReference(values), warn, 'eval');
  const phases = new Phases();
  trackPhases(phases);
  const model = await phases.run('loading the model', () => openModel(values.model, values.threads, values.dtype));
  const keyedOpts = keyedOptions(values, model.info.layers);
  const side = await sideInputs(model, values, regression, phases);
  const regressionBefore = await linesBefore(model, regression, phases);

  const results: CaseResult[] = [];
  phases.enter(`repairing ${cases.length} case(s) (${method})`);
  for (const [i, c] of cases.entries()) {
    phases.tick(i, cases.length);
    const id = c.id ?? `case-${i + 1}`;
    const before = await model.generate(c.prompt);
    if (before.completion === c.desired.replace(/\n$/, '')) {
      results.push({ id, alreadyCorrect: true, success: true, failingTokens: 0, neurons: 0, specificity: null, meanKl: null, generalization: null, ms: 0, generationMs: before.ms });
      continue;
    }
    try {
      const r = await repair(model, c, { method, margin, regression, regressionBefore, analyse: false, fallback: !values['no-fallback'], ...side, ...keyedOpts });
      const fx = r.sideEffects;
      results.push({
        id, success: r.success, method: r.method, failingTokens: r.failingTokens, neurons: r.neurons.length, specificity: r.specificity,
        nextTokenSpecificity: r.nextTokenSpecificity, meanKl: r.meanKl,
        tokenLocality: fx?.tokenLocality ?? null, kept: fx?.kept ?? null, keptUnseen: fx?.keptUnseen ?? null, lossChange: fx?.heldOutLoss?.change ?? null,
        ...(r.layerChoice ? { layerChoice: r.layerChoice } : {}),
        generalization: r.generalization, ms: Math.round(r.ms), generationMs: Math.round(r.generationMs),
      });
    } catch (e) {
      if (!(e instanceof NeuronpatchError)) throw e;
      results.push({ id, success: false, failingTokens: 0, neurons: 0, specificity: null, meanKl: null, generalization: null, ms: 0, generationMs: before.ms, error: e.message });
    }
    const last = results[results.length - 1];
    if (values.verbose) warn(`${id}: ${last.success ? 'fixed' : 'not fixed'}, ${last.neurons} neuron(s), ${last.ms} ms${last.error ? ` (${last.error})` : ''}`);
  }
  phases.end();
  trackPhases(undefined);
  await model.dispose();
  const wall = phases.times();

  const attempted = results.filter((r) => !r.alreadyCorrect);
  const fixed = attempted.filter((r) => r.success);
  // Fixed by the method asked for, without a fallback to the other one.
  const own = fixed.filter((r) => r.method === method);
  const summary = {
    method, margin, cases: attempted.length, alreadyCorrect: results.length - attempted.length,
    successRate: attempted.length ? fixed.length / attempted.length : null,
    ownSuccessRate: attempted.length ? own.length / attempted.length : null,
    fallbacks: attempted.filter((r) => r.method && r.method !== method).length,
    medianNeurons: fixed.length ? median(fixed.map((r) => r.neurons)) : null,
    neuronsPerFailingToken: fixed.length ? median(fixed.map((r) => r.neurons / Math.max(1, r.failingTokens))) : null,
    specificity: mean(fixed.flatMap((r) => (r.specificity === null ? [] : [r.specificity]))),
    nextTokenSpecificity: mean(fixed.flatMap((r) => (r.nextTokenSpecificity == null ? [] : [r.nextTokenSpecificity]))),
    meanKl: mean(fixed.flatMap((r) => (r.meanKl === null ? [] : [r.meanKl]))),
    generalization: mean(fixed.flatMap((r) => (r.generalization === null ? [] : [r.generalization]))),
    tokenLocality: mean(fixed.flatMap((r) => (r.tokenLocality == null ? [] : [r.tokenLocality]))),
    keptLines: mean(fixed.flatMap((r) => (r.kept ? [r.kept.kept / Math.max(1, r.kept.of)] : []))),
    guardLines: side.guard?.length ?? 0,
    keptUnseenLines: mean(fixed.flatMap((r) => (r.keptUnseen ? [r.keptUnseen.kept / Math.max(1, r.keptUnseen.of)] : []))),
    unseenGuardLines: side.unseenGuard?.length ?? 0,
    heldOutLossChange: mean(fixed.flatMap((r) => (r.lossChange == null ? [] : [r.lossChange]))),
    keyMargin: method === 'keyed' ? keyedOpts.keyMargin ?? 0.5 : undefined,
    medianMs: attempted.length ? median(attempted.map((r) => r.ms)) : null,
    medianGenerationMs: attempted.length ? median(attempted.map((r) => r.generationMs)) : null,
    medianRepairToGeneration: attempted.length ? median(attempted.map((r) => r.ms / Math.max(1, r.generationMs))) : null,
    regressionPrompts: regression.length,
    wall: { ms: Math.round(wall.totalMs), phases: wall.phases.map((p) => ({ name: p.name, ms: Math.round(p.ms) })) },
    results,
  };
  const f = (x: number | null, digits = 1) => (x === null ? 'n/a' : x.toFixed(digits));
  print(!!values.json, summary, () => [
    `${method} (margin ${margin}): ${fixed.length}/${attempted.length} fixed (${f(summary.successRate === null ? null : summary.successRate * 100)} %), ${summary.alreadyCorrect} already correct`,
    ...(summary.fallbacks ? [`  ${own.length} (${f(summary.ownSuccessRate! * 100)} %) by ${method} alone; ${summary.fallbacks} fell back to the joint solver`] : []),
    `median neurons ${f(summary.medianNeurons)}, per failing token ${f(summary.neuronsPerFailingToken, 2)}`,
    `specificity ${f(summary.specificity === null ? null : summary.specificity * 100, 2)} % of ${regression.length} regression lines unchanged `
      + `(next token: ${f(summary.nextTokenSpecificity === null ? null : summary.nextTokenSpecificity * 100, 2)} %), mean KL ${summary.meanKl?.toExponential(2) ?? 'n/a'}`,
    `token locality ${f(summary.tokenLocality === null ? null : summary.tokenLocality * 100, 2)} %, correct lines kept ${f(summary.keptLines === null ? null : summary.keptLines * 100, 1)} % of ${summary.guardLines}, `
      + `held-out loss ${summary.heldOutLossChange === null ? 'n/a' : `${summary.heldOutLossChange >= 0 ? '+' : ''}${(summary.heldOutLossChange * 100).toFixed(3)} %`}`,
    `generalization ${summary.generalization === null ? 'n/a (no variants)' : `${f(summary.generalization * 100)} %`}`,
    `median repair ${f(summary.medianMs, 0)} ms = ${f(summary.medianRepairToGeneration, 2)}× one generation (${f(summary.medianGenerationMs, 0)} ms), side-effect check apart`,
    phases.text(),
  ].join('\n'));
  return 0;
};
