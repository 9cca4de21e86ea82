// Options shared by `repair` and `eval` for side effects and the keyed method: reference code, guard lines and
// held-out code, and the `guard` command that harvests guard lines into a file.
import type { Model } from '../engine';
import { checkKeyMargin } from '../engine/repair/index';
import { harvestGuard } from '../engine/repair/guard';
import type { GuardLine } from '../engine/repair/measures';
import { NeuronpatchError, type RepairMethod } from '../engine/types';
import { float, int, parse, print, readJsonl } from './args';
import { readRegression } from './cases';
import { type Command, openModel, warn } from './context';

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

export function methodOption(value: string | undefined): RepairMethod {
  if (value === undefined || value === 'minimal' || value === 'joint' || value === 'keyed') return value ?? 'minimal';
  throw new NeuronpatchError(`--method must be minimal, joint or keyed, got "${value}".`);
}

export function readGuard(file: string): GuardLine[] {
  return readJsonl<GuardLine>(file, (v) => {
    const g = v as Partial<GuardLine> | null;
    return g && typeof g.prompt === 'string' && typeof g.desired === 'string' ? undefined : 'needs "prompt" and "desired" strings';
  }, warn);
}

/**
 * Reference code (default: the regression prompts), guard lines (a file, or harvested from the reference code
 * unless --no-guard) and held-out code for the loss (default: the regression prompts).
 */
export async function sideInputs(model: Model, values: SideValues, regression: string[]): Promise<{ reference?: string[]; guard?: GuardLine[]; unseenGuard?: GuardLine[]; heldOut?: string[] }> {
  const reference = values.reference ? readRegression(values.reference, warn) : undefined;
  const heldOut = values['held-out'] ? readRegression(values['held-out'], warn) : undefined;
  let guard: GuardLine[] | undefined;
  if (values.guard) guard = readGuard(values.guard);
  else if (!values['no-guard'] && (reference ?? regression).length) {
    guard = await harvestGuard(model.loaded, reference ?? regression, { max: int(values['guard-max'], 'guard-max', 200) });
    warn(`guard set: ${guard.length} lines the model completes exactly right, harvested from ${(reference ?? regression).length} ${reference ? 'reference' : 'regression'} prompts`);
  }
  // Lines the repair is not given, for a fair "correct lines kept": a file, or harvested from the regression
  // prompts where the reference code is other code.
  let unseenGuard: GuardLine[] | undefined;
  if (values['unseen-guard']) unseenGuard = readGuard(values['unseen-guard']);
  else if (reference && regression.length && !values['no-guard']) {
    unseenGuard = await harvestGuard(model.loaded, regression, { max: int(values['guard-max'], 'guard-max', 200) });
    warn(`unseen guard set: ${unseenGuard.length} lines harvested from the ${regression.length} regression prompts (measured only)`);
  }
  return { reference, guard, unseenGuard, heldOut };
}

export function keyedOptions(values: SideValues): { keyMargin?: number; keyedLayer?: number } {
  return {
    ...(values['key-margin'] !== undefined ? { keyMargin: checkKeyMargin(float(values['key-margin'], 'key-margin', 0.5)) } : {}),
    ...(values['keyed-layer'] !== undefined ? { keyedLayer: int(values['keyed-layer'], 'keyed-layer', 0) } : {}),
  };
}

/** `guard --from prompts.jsonl --out guard.jsonl [--max N]`: the lines the model completes exactly right. */
export const guardCommand: Command = async (args) => {
  const { values } = parse(args, { from: { type: 'string' }, out: { type: 'string' }, max: { type: 'string' }, 'no-mid-line': { type: 'boolean' } });
  if (!values.from) throw new NeuronpatchError('guard needs --from FILE.jsonl (prompts of reference code).');
  const texts = readRegression(values.from, warn);
  const model = await openModel(values.model, values.threads);
  const lines = await harvestGuard(model.loaded, texts, { max: int(values.max, 'max', 200), midLine: !values['no-mid-line'] });
  if (values.out) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(values.out, lines.map((l) => JSON.stringify(l)).join('\n') + (lines.length ? '\n' : ''));
  }
  print(!!values.json, { lines: lines.length, from: texts.length, out: values.out ?? null }, () => `${lines.length} guard lines from ${texts.length} texts${values.out ? ` written to ${values.out}` : ''}\n`);
  await model.dispose();
  return 0;
};
