// Limits on JSON read from files: how deep it may nest. V8's JSON.parse reads a million levels of `[[[…]]]`
// without trouble, but everything that walks the value afterwards by recursion (JSON.stringify, validators,
// structured clone to a worker or a webview) overflows the stack at a few thousand. Every JSON file neuronpatch
// reads (patch files, config.json, tokenizer.json, genai_config.json, case lines, cache metadata) is checked here
// right after parsing, by an iterative walk.
import { NeuronpatchError } from './types';

/** Deepest nesting accepted: a patch file needs 5 levels, tokenizer.json about 8. */
export const MAX_JSON_DEPTH = 64;

/**
 * The nesting depth of a parsed JSON value (a scalar is 0, `[]` is 1), walked with an explicit stack; stops
 * counting once past `limit` (returns limit + 1), so a hostile value costs at most its size.
 */
export function jsonDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const depth = d + 1;
    if (depth > deepest) deepest = depth;
    if (deepest > limit) return limit + 1;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth]);
  }
  return deepest;
}

/** Throws a NeuronpatchError naming `what` when `value` nests deeper than `limit`. */
export function checkJsonDepth(value: unknown, what: string, limit = MAX_JSON_DEPTH): void {
  if (jsonDepth(value, limit) > limit)
    throw new NeuronpatchError(
      `${what} nests JSON more than ${limit} levels deep; neuronpatch reads no file that deep.`,
      'It is not a file neuronpatch or a model exporter wrote: restore it, or move it aside.',
    );
}

/** JSON.parse, then the depth check (SyntaxError is left to the caller, who knows the file). */
export function parseBounded(text: string, what: string, limit = MAX_JSON_DEPTH): unknown {
  const value = JSON.parse(text) as unknown;
  checkJsonDepth(value, what, limit);
  return value;
}
