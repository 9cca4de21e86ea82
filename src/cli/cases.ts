// Reading repair cases and regression prompts (JSONL, as the architecture's file contracts describe).
import type { RepairCase } from '../engine/types';
import { readJsonl } from './args';

const isString = (v: unknown): v is string => typeof v === 'string';

export function readCases(file: string, warn: (msg: string) => void): RepairCase[] {
  return readJsonl<RepairCase>(file, (v) => {
    const c = v as Partial<RepairCase> | null;
    if (!c || typeof c !== 'object') return 'not a JSON object';
    if (!isString(c.prompt)) return 'no "prompt" string';
    if (!isString(c.desired)) return 'no "desired" string';
    if (c.variants !== undefined && !(Array.isArray(c.variants) && c.variants.every((x) => x && isString(x.prompt) && isString(x.desired)))) {
      return '"variants" must be a list of {"prompt", "desired"}';
    }
    return undefined;
  }, warn, 'repair cases');
}

export function readRegression(file: string | undefined, warn: (msg: string) => void, limit?: number): string[] {
  if (!file) return [];
  const prompts = readJsonl<{ prompt: string }>(file, (v) => (isString((v as { prompt?: unknown })?.prompt) ? undefined : 'no "prompt" string'), warn, 'regression prompts')
    .map((p) => p.prompt);
  return limit ? prompts.slice(0, limit) : prompts;
}
