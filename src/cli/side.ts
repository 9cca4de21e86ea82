// Options shared by `repair` and `eval` for side effects and the keyed method: reference code, guard lines and
// held-out code, and the `guard` command that harvests guard lines into a file.
import type { Model } from '../engine';
import { checkKeyMargin } from '../engine/repair/index';
import type { CacheOutcome } from '../engine/model/derivedCache';
import { baselineLines } from '../engine/repair/baseline';
import { harvestGuard } from '../engine/repair/guard';
import type { GuardLine } from '../engine/repair/measures';
import type { GreedyLine } from '../engine/repair/verify';
import type { Patch, RepairMethod } from '../engine/types';
import { didYouMean, UsageError, word } from './errors';
import { checkInputFile, demoRegressionFile, float, int, parse, print, readJsonl } from './args';
import { readRegression } from './cases';
import { type Command, openModel, warn } from './context';
import { Phases } from './progress';

export const sideOptions = {
  reference: { type: 'string' }, guard: { type: 'string' }, 'unseen-guard': { type: 'string' }, 'no-guard': { type: 'boolean' }, 'guard-max': { type: 'string' },
  'held-out': { type: 'string' }, 'key-margin': { type: 'string' }, 'keyed-layer': { type: 'string' },
} as const;

export interface SideValues {
  reference?: string;
  guard?: string;
  'unseen-guard'?: string;
  'no-guard'?: boolean;
  'guard-max'?: string;
  'held-out'?: string;
  'key-margin'?: string;
  'keyed-layer'?: string;
}

const METHODS = ['keyed', 'minimal', 'joint'] as const;

/**
 * --method, checked. Absent, it is the product's default, keyed, where reference code is given (`hasReference`:
 * --regression, --reference or --guard), since a keyed repair needs ordinary code its added neuron stays silent on;
 * without any it is minimal, and `warn` says so on stderr and which option would give keyed and measure side
 * effects. An explicit keyed without reference code is refused before the model loads.
 * @throws UsageError for a method not known, or keyed without reference code.
 */
export function methodOption(value: string | undefined, hasReference = true, warn?: (msg: string) => void, what = 'this repair'): RepairMethod {
  if (value === undefined) {
    if (hasReference) return 'keyed';
    warn?.('no reference code given (--regression, --reference or --guard FILE): the default method, keyed, needs some (ordinary code its added neuron must stay silent on), '
      + `so ${what} uses the minimal method, and its side effects are not measured. Pass --regression FILE (prompts of code like yours; for the demo model `
      + `${demoRegressionFile()}) to repair with keyed and measure them.`);
    return 'minimal';
  }
  if ((METHODS as readonly string[]).includes(value)) {
    if (value === 'keyed' && !hasReference) {
      throw new UsageError('--method keyed needs reference code: ordinary code its added neuron must stay silent on, and none was given.',
        `Pass --regression FILE (prompts of code like yours; for the demo model ${demoRegressionFile()}), --reference FILE or --guard FILE; or use --method minimal.`);
    }
    return value as RepairMethod;
  }
  throw new UsageError(`--method must be keyed, minimal or joint, got ${word(value)}${didYouMean(value, METHODS)}`);
}

/** The files of --regression, --reference, --guard, --unseen-guard and --held-out exist: checked before any work. */
export function checkSideFiles(values: SideValues & { regression?: string }): void {
  for (const [option, f] of [['--regression', values.regression], ['--reference', values.reference], ['--guard', values.guard], ['--unseen-guard', values['unseen-guard']], ['--held-out', values['held-out']]] as const) {
    if (f) checkInputFile(f, option);
  }
}

/** Whether reference code for a keyed repair is given: --regression, --reference or --guard. */
export function hasReference(values: SideValues & { regression?: string }): boolean {
  return !!(values.regression || values.reference || values.guard);
}

export function readGuard(file: string, option = '--guard'): GuardLine[] {
  return readJsonl<GuardLine>(file, (v) => {
    const g = v as Partial<GuardLine> | null;
    return g && typeof g.prompt === 'string' && typeof g.desired === 'string' ? undefined : 'needs "prompt" and "desired" strings';
  }, warn, 'guard lines', option);
}

/** How a cached value was obtained, in words for a phase: "from the cache" or "harvested, cached now". */
export function cacheWords(o: CacheOutcome | undefined, made: string): string {
  return !o ? made : o.hit ? 'from the cache' : `${made} (${o.why})`;
}

/**
 * Reference code (default: the regression prompts), guard lines (a file, or harvested from the reference code
 * unless --no-guard; cached per model and reference set) and held-out code for the loss (default: the regression
 * prompts). Each harvest is a phase of `phases`.
 */
export async function sideInputs(model: Model, values: SideValues, regression: string[], phases?: Phases): Promise<{ reference?: string[]; guard?: GuardLine[]; unseenGuard?: GuardLine[]; heldOut?: string[] }> {
  const reference = values.reference ? readRegression(values.reference, warn, undefined, '--reference') : undefined;
  const heldOut = values['held-out'] ? readRegression(values['held-out'], warn, undefined, '--held-out') : undefined;
  const guardMax = int(values['guard-max'], 'guard-max', 200);
  const harvest = async (texts: string[], what: string): Promise<GuardLine[]> => {
    const p = phases ?? new Phases({ write: () => undefined });
    const label = `${what}: lines the model completes right in ${texts.length} prompts`;
    let cache: CacheOutcome | undefined;
    const lines = await p.run(label, (tick) => harvestGuard(model.loaded, texts, {
      max: guardMax, onCache: (o) => (cache = o),
      onProgress: (stage, done, total) => {
        p.rename(`${label}: ${stage === 'scanning' ? 'scanning' : 'confirming candidates'}`);
        tick(done, total);
      },
    }).then((g) => {
      p.rename(`${what}: ${g.length} lines from ${texts.length} prompts, ${cacheWords(cache, 'harvested')}`);
      return g;
    }));
    return lines;
  };
  let guard: GuardLine[] | undefined;
  if (values.guard) guard = readGuard(values.guard);
  else if (!values['no-guard'] && (reference ?? regression).length) {
    guard = await harvest(reference ?? regression, 'guard set');
  }
  // Lines the repair is not given, for a fair "correct lines kept": a file, or harvested from the regression
  // prompts where the reference code is other code.
  let unseenGuard: GuardLine[] | undefined;
  if (values['unseen-guard']) unseenGuard = readGuard(values['unseen-guard'], '--unseen-guard');
  else if (reference && regression.length && !values['no-guard']) {
    unseenGuard = await harvest(regression, 'unseen guard set (measured only)');
  }
  return { reference, guard, unseenGuard, heldOut };
}

/**
 * The greedy lines of the regression prompts before the repair (under `active`), a phase of `phases`: read from
 * the cache per model, prompts and patches, or decoded and cached.
 */
export async function regressionBefore(model: Model, regression: string[], phases: Phases, active?: readonly Patch[]): Promise<GreedyLine[] | undefined> {
  if (!regression.length) return undefined;
  const label = `regression lines before the repair: ${regression.length} prompts`;
  return phases.run(label, async (tick) => {
    const { lines, cache } = await baselineLines(model.loaded, regression, { active, onProgress: tick });
    phases.rename(`${label}, ${cacheWords(cache, 'decoded')}`);
    return lines;
  });
}

/**
 * --key-margin and --keyed-layer, checked before any work; --keyed-layer against the model's layers where `layers`
 * is given. @throws UsageError naming the option, the value and what is accepted.
 */
export function keyedOptions(values: SideValues, layers?: number): { keyMargin?: number; keyedLayer?: number } {
  return {
    ...(values['key-margin'] !== undefined ? { keyMargin: checkKeyMargin(float(values['key-margin'], 'key-margin', 0.5, { above: 0, below: 1, what: 'a number between 0 and 1 (exclusive; default 0.5)' })) } : {}),
    ...(values['keyed-layer'] !== undefined ? { keyedLayer: int(values['keyed-layer'], 'keyed-layer', 0, 0, layers === undefined ? undefined : layers - 1) } : {}),
  };
}

/** `guard --from prompts.jsonl --out guard.jsonl [--max N]`: the lines the model completes exactly right. */
export const guardCommand: Command = async (args) => {
  const { values } = parse('guard', args, { from: { type: 'string' }, out: { type: 'string' }, max: { type: 'string' }, 'no-mid-line': { type: 'boolean' } });
  if (!values.from) throw new UsageError('guard needs --from FILE.jsonl (prompts of reference code).', 'neuronpatch guard --help lists its options.');
  const max = int(values.max, 'max', 200);
  const texts = readRegression(values.from, warn, undefined, '--from');
  const model = await openModel(values.model, values.threads, values.dtype);
  const lines = await harvestGuard(model.loaded, texts, { max, midLine: !values['no-mid-line'] });
  if (values.out) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(values.out, lines.map((l) => JSON.stringify(l)).join('\n') + (lines.length ? '\n' : ''));
  }
  print(!!values.json, { lines: lines.length, from: texts.length, out: values.out ?? null }, () => `${lines.length} guard lines from ${texts.length} texts${values.out ? ` written to ${values.out}` : ''}\n`);
  await model.dispose();
  return 0;
};
