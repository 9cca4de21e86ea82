// Verified cache files for values derived from one model and one set of inputs (the guard lines harvested from
// reference code, the unpatched greedy lines of the regression prompts, the unpatched held-out loss), kept in the
// model's cache folder (`<NEURONPATCH_CACHE>/<model hash>/`, see cache.ts). As with the instrumented graph, nothing
// read back is trusted: an entry is used only when it parses, has this kind and format version, names the model's
// full hash and the inputs' hash it was asked for, its payload's sha256 is the one recorded, and the caller's shape
// check passes. Anything else (missing, truncated, garbage, another model's or another input set's entry copied
// under this name, an edited payload) is recomputed and rewritten, atomically, and the reason is given.
// Large numeric values (the keyed method's protected-code activations and whitening: tens to hundreds of MB at a
// real model's size) are binary entries (`<kind>-<hash>.bin`): a JSON header line (the same key, the sha256 and
// length of the bytes, a small JSON `meta`), padded to a multiple of 8 bytes, then the raw bytes, verified alike.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import * as path from 'node:path';
import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises';
import { tempPathBeside, writeFileAtomic } from '../atomic';
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

/** A binary entry's value: small JSON `meta` (shapes, counts) and the bytes it describes. */
export interface BinaryValue<M> {
  meta: M;
  /** The raw bytes, starting on an 8-byte boundary of their own buffer (Float64Array views need it). */
  bytes: Uint8Array;
}

interface BinaryHeader {
  kind: string;
  format: number;
  model: string;
  inputs: string;
  /** sha256 of the meta's JSON, a newline, and the bytes. */
  sha256: string;
  length: number;
  meta: unknown;
}

/** The file of a binary entry in `dir`: `<kind>-<first 16 hex of the inputs hash>.bin`. */
export function derivedBinaryFile(dir: string, key: DerivedKey): string {
  return path.join(dir, `${key.kind}-${key.inputs.slice(0, 16)}.bin`);
}

/** Largest header line read (a header holds the key, a hash and a small meta). */
const MAX_HEADER = 64 * 1024;

const binaryHash = (meta: unknown, bytes: Uint8Array): string =>
  createHash('sha256').update(JSON.stringify(meta)).update('\n').update(bytes).digest('hex');

/**
 * The binary entry for `key` in `dir` when it verifies (as readDerived: kind, format, model, inputs, the bytes'
 * length and sha256, then `check(meta, bytes)`), else why not. Never throws.
 */
export function readDerivedBinary<M>(dir: string, key: DerivedKey, check: (meta: unknown, bytes: Uint8Array) => string | undefined): Lookup<BinaryValue<M>> {
  const file = derivedBinaryFile(dir, key);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { why: 'not cached yet' };
  }
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(MAX_HEADER, size));
    readSync(fd, head, 0, head.length, 0);
    const nl = head.indexOf(0x0a);
    if (nl < 0) return { why: 'the cache file has no header line' };
    let h: Partial<BinaryHeader>;
    try {
      h = JSON.parse(head.subarray(0, nl).toString('utf8')) as Partial<BinaryHeader>;
    } catch {
      return { why: 'the cache file\'s header does not parse' };
    }
    if (!h || typeof h !== 'object' || Array.isArray(h) || typeof h.sha256 !== 'string' || !Number.isInteger(h.length)) return { why: 'the cache file holds no entry' };
    if (h.kind !== key.kind || h.format !== key.format) return { why: `the cache file is of another kind or format (${String(h.kind).slice(0, 20)}/${String(h.format).slice(0, 8)})` };
    if (h.model !== key.model) return { why: 'the cache file is for another model' };
    if (h.inputs !== key.inputs) return { why: 'the cache file is for other inputs' };
    const start = Math.ceil((nl + 1) / 8) * 8;
    if (size !== start + h.length!) return { why: `the cache file holds ${size - start} bytes of data, ${h.length} recorded` };
    const bytes = new Uint8Array(h.length!);
    for (let done = 0; done < bytes.length;) {
      const n = readSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), start + done);
      if (n <= 0) return { why: 'the cache file was cut short while reading' };
      done += n;
    }
    if (binaryHash(h.meta, bytes) !== h.sha256) return { why: 'the cache file does not match its recorded sha256' };
    const problem = check(h.meta, bytes);
    return problem ? { why: `the cached value is malformed (${problem})` } : { value: { meta: h.meta as M, bytes } };
  } catch (e) {
    return { why: `the cache file cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  } finally {
    closeSync(fd);
  }
}

/** Writes the binary entry for `key` in `dir` atomically. `parts` are written one after the other as its bytes. */
export async function writeDerivedBinary(dir: string, key: DerivedKey, meta: unknown, parts: Uint8Array[]): Promise<void> {
  const length = parts.reduce((n, p) => n + p.byteLength, 0);
  const hash = createHash('sha256').update(JSON.stringify(meta)).update('\n');
  for (const p of parts) hash.update(p);
  const header: BinaryHeader = { ...key, sha256: hash.digest('hex'), length, meta };
  let line = JSON.stringify(header);
  // Padded with spaces so that the bytes start on an 8-byte boundary.
  line += ' '.repeat((8 - ((Buffer.byteLength(line) + 1) % 8)) % 8);
  // As writeFileAtomic, part by part (no copy of the whole value): a temp file beside the entry, synced, renamed.
  const file = derivedBinaryFile(dir, key);
  await mkdir(dir, { recursive: true });
  const tmp = tempPathBeside(file);
  let handle: FileHandle | undefined;
  try {
    handle = await open(tmp, 'wx');
    for (const p of [Buffer.from(`${line}\n`), ...parts]) await handle.write(p);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(tmp, file);
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/**
 * The verified binary entry for `key`, or `compute()`'s (meta, parts), written for next time (as cachedDerived: a
 * cache folder that cannot be written is not an error). Computed values come back as their parts, cached ones as
 * the bytes read: `decode` turns either into the caller's value.
 */
export async function cachedDerivedBinary<M, T>(
  dir: string, key: DerivedKey, check: (meta: unknown, bytes: Uint8Array) => string | undefined,
  compute: () => Promise<{ value: T; meta: M; parts: Uint8Array[] }>, decode: (v: BinaryValue<M>) => T,
): Promise<{ value: T; cache: CacheOutcome }> {
  const got = readDerivedBinary<M>(dir, key, check);
  if ('value' in got) return { value: decode(got.value), cache: { hit: true } };
  const made = await compute();
  try {
    await writeDerivedBinary(dir, key, made.meta, made.parts);
  } catch (e) {
    return { value: made.value, cache: { hit: false, why: `${got.why}; not saved: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` } };
  }
  return { value: made.value, cache: { hit: false, why: got.why } };
}
