// Verified cache files for values derived from one model and one set of inputs (the guard lines harvested from
// reference code, the unpatched greedy lines of the regression prompts, the unpatched held-out loss), kept in the
// model's cache folder (`<NEURONPATCH_CACHE>/<model hash>/`, see cache.ts). As with the instrumented graph, nothing
// read back is trusted: an entry is used only when it parses, has this kind and format version, names the model's
// full hash and the inputs' hash it was asked for, its payload's sha256 is the one recorded, and the caller's shape
// check passes. Anything else (missing, truncated, garbage, another model's or another input set's entry copied
// under this name, an edited payload) is recomputed and rewritten, atomically, and the reason is given.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { MAX_JSON_DEPTH, jsonDepth } from '../jsonlimits';

/** What an entry is for: its kind (`guard`, `lines`, `loss`), the model's sha256 and the inputs' key. */
export interface DerivedKey {
  kind: string;
  /** Bumped by the caller when the value's meaning or layout changes. */
  format: number;
  /** sha256 of the model (ModelInfo.hash). */
  model: string;
  /** Everything the value depends on besides the model (inputs, options), hashed by `inputsHash`. */
  inputs: string;
}

interface Envelope {
  kind: string;
  format: number;
  model: string;
  inputs: string;
  sha256: string;
  payload: string;
}

/** sha256 (hex) of a JSON-serialisable value: the `inputs` of a DerivedKey. */
export function inputsHash(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

/** The file of an entry in `dir` (the model's cache folder): `<kind>-<first 16 hex of the inputs hash>.json`. */
export function derivedFile(dir: string, key: DerivedKey): string {
  return path.join(dir, `${key.kind}-${key.inputs.slice(0, 16)}.json`);
}

export type Lookup<T> = { value: T } | { why: string };

/**
 * The entry for `key` in `dir` when it verifies (see the module comment), else why not. `check` says what is wrong
 * with the parsed payload's shape, or undefined when it is usable. Never throws.
 */
export function readDerived<T>(dir: string, key: DerivedKey, check: (v: unknown) => string | undefined): Lookup<T> {
  const file = derivedFile(dir, key);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { why: 'not cached yet' };
  }
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(text) as Partial<Envelope>;
  } catch {
    return { why: 'the cache file does not parse' };
  }
  if (!env || typeof env !== 'object' || Array.isArray(env) || typeof env.payload !== 'string') return { why: 'the cache file holds no entry' };
  if (env.kind !== key.kind || env.format !== key.format) return { why: `the cache file is of another kind or format (${String(env.kind).slice(0, 20)}/${String(env.format).slice(0, 8)})` };
  if (env.model !== key.model) return { why: 'the cache file is for another model' };
  if (env.inputs !== key.inputs) return { why: 'the cache file is for other inputs' };
  if (createHash('sha256').update(env.payload).digest('hex') !== env.sha256) return { why: 'the cache file does not match its recorded sha256' };
  let value: unknown;
  try {
    value = JSON.parse(env.payload);
    if (jsonDepth(value) > MAX_JSON_DEPTH) return { why: 'the cached value nests too deep' };
  } catch {
    return { why: 'the cached value does not parse' };
  }
  const problem = check(value);
  return problem ? { why: `the cached value is malformed (${problem})` } : { value: value as T };
}

/** Writes the entry for `key` in `dir` atomically (readers see the old entry or the new one). */
export async function writeDerived(dir: string, key: DerivedKey, value: unknown): Promise<void> {
  const payload = JSON.stringify(value);
  const env: Envelope = { ...key, sha256: createHash('sha256').update(payload).digest('hex'), payload };
  await writeFileAtomic(derivedFile(dir, key), JSON.stringify(env));
}

/** How a cached value was obtained this time: read back, or computed (and why it was not read). */
export type CacheOutcome = { hit: true } | { hit: false; why: string };

/**
 * The verified entry for `key`, or `compute()`'s value, written for next time. A cache folder that cannot be
 * written is not an error (the value is returned; `why` says it was not saved).
 */
export async function cachedDerived<T>(
  dir: string, key: DerivedKey, check: (v: unknown) => string | undefined, compute: () => Promise<T>,
): Promise<{ value: T; cache: CacheOutcome }> {
  const got = readDerived<T>(dir, key, check);
  if ('value' in got) return { value: got.value, cache: { hit: true } };
  const value = await compute();
  try {
    await writeDerived(dir, key, value);
  } catch (e) {
    return { value, cache: { hit: false, why: `${got.why}; not saved: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` } };
  }
  return { value, cache: { hit: false, why: got.why } };
}
