// Reading repair cases and regression prompts (JSONL, as the architecture's file contracts describe).
import type { RepairCase } from '../engine/types';
import { readJsonl } from './args';

const isString = (v: unknown): v is string => typeof v === 'string';

/** The repair cases of `file` (given with `option`, named in errors). */
export function readCases(file: string, warn: (msg: string) => void, option = '--cases'): RepairCase[] {
  return readJsonl<RepairCase>(file, (v) => {
    const c = v as Partial<RepairCase> | null;
    if (!c || typeof c !== 'object') return 'not a JSON object';
    if (!isString(c.prompt)) return 'no "prompt" string';
    if (!isString(c.desired)) return 'no "desired" string';
    if (c.variants !== undefined && !(Array.isArray(c.variants) && c.variants.every((x) => x && isString(x.prompt) && isString(x.desired)))) {
      return '"variants" must be a list of {"prompt", "desired"}';
    }
    return undefined;
  }, warn, 'repair cases', option);
}

/** The prompts of a JSONL file of `{"prompt"}` lines (given with `option`, named in errors), at most `limit`. */
export function readRegression(file: string | undefined, warn: (msg: string) => void, limit?: number, option = '--regression'): string[] {
  if (!file) return [];
  const prompts = readJsonl<{ prompt: string }>(file, (v) => (isString((v as { prompt?: unknown })?.prompt) ? undefined : 'no "prompt" string'), warn, 'regression prompts', option)
    .map((p) => p.prompt);
  return limit ? prompts.slice(0, limit) : prompts;
}
