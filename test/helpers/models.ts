// Shared by the engine's unit tests: where the model folders are, which of them exist here, a temp cache folder
// per test run (never the user's ~/.cache), loaded models shared within one test file, and a plain
// onnxruntime session on a model's ORIGINAL file to compare the engine against.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import { ort } from '../../src/engine/onnx/runtime';
import { loadModel, type Model } from '../../src/engine';
import { mulberry32 as rng } from '../../src/engine/random';
import { skipIfMissing } from './need';

export { rng };

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'neuronpatch') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no neuronpatch package.json above ${from}`);
  }
}

/** The repository root (tests run compiled from out/test/…). */
export const root = findRoot(__dirname);
/** Third-party model folders that sit beside every checkout here and in CI, absent on a user's clone. */
export const sharedFixtures = path.resolve(root, '..', 'shared', 'fixtures');

export type Source = 'demo' | 'shared' | 'fixture';

export interface ModelEntry {
  name: string;
  dir: string;
  source: Source;
}

const KNOWN_TEST_FIXTURES = ['tiny-gpt-neox', 'tiny-codegen', 'tiny-starcoder', 'tiny-qwen2', 'tiny-qwen2-fp16'];

function testFixtureNames(): string[] {
  const dir = path.join(root, 'test', 'fixtures');
  const found = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isDirectory()) : [];
  return [...new Set([...KNOWN_TEST_FIXTURES, ...found])].sort();
}

/** Every model folder the tests know of, present or not (absent ones are skipped with a message). */
export const MODELS: ModelEntry[] = [
  { name: 'demo', dir: path.join(root, 'models', 'demo'), source: 'demo' },
  { name: 'demo-gpt2', dir: path.join(root, 'models', 'demo-gpt2'), source: 'demo' },
  { name: 'ortgenai-tiny-llama-fp16', dir: path.join(sharedFixtures, 'ortgenai-tiny-llama-fp16'), source: 'shared' },
  { name: 'ortgenai-tiny-gpt2-fp32', dir: path.join(sharedFixtures, 'ortgenai-tiny-gpt2-fp32'), source: 'shared' },
  ...testFixtureNames().map((name): ModelEntry => ({ name, dir: path.join(root, 'test', 'fixtures', name), source: 'fixture' })),
];

export function entry(name: string): ModelEntry {
  const e = MODELS.find((m) => m.name === name);
  if (!e) throw new Error(`unknown model folder ${name}`);
  return e;
}

function decoderFile(dir: string): string | undefined {
  const genai = path.join(dir, 'genai_config.json');
  const named = fs.existsSync(genai)
    ? (JSON.parse(fs.readFileSync(genai, 'utf8')) as { model?: { decoder?: { filename?: string } } }).model?.decoder?.filename
    : undefined;
  return [named, 'model.onnx', 'onnx/model.onnx'].find((f): f is string => !!f && fs.existsSync(path.join(dir, f)));
}

/** Why a model folder cannot be used here, or undefined when it is complete. */
export function absence(e: ModelEntry): string | undefined {
  const where = path.relative(root, e.dir);
  const how = {
    demo: 'build it with tools/demo-model/build.sh',
    shared: '../shared/fixtures/ exists only beside the project\'s own checkouts, not on a user\'s clone',
    fixture: 'write it with /usr/bin/python3 tools/fixtures/make_fixtures.py',
  }[e.source];
  if (!fs.existsSync(e.dir)) return `${e.name} is absent (${where}): ${how}`;
  const missing = [
    fs.existsSync(path.join(e.dir, 'config.json')) || fs.existsSync(path.join(e.dir, 'genai_config.json')) ? undefined : 'config.json',
    fs.existsSync(path.join(e.dir, 'tokenizer.json')) ? undefined : 'tokenizer.json',
    decoderFile(e.dir) ? undefined : 'model.onnx',
  ].filter(Boolean);
  return missing.length ? `${e.name} is absent or incomplete (${where} has no ${missing.join(', ')}): ${how}` : undefined;
}

export const present = (e: ModelEntry): boolean => absence(e) === undefined;

/**
 * Skips the test (returns true) when the model folder is absent or incomplete, saying why; in CI a folder of the
 * repository (models/*, test/fixtures/*) that is missing fails the test instead (see need.ts). ../shared folders
 * are optional everywhere.
 */
export function skipIfAbsent(t: TestContext, e: ModelEntry): boolean {
  return skipIfMissing(t, absence(e), e.source === 'shared' ? 'beside' : 'repo');
}

/** The ONNX decoder file of a present model folder. */
export function onnxFile(e: ModelEntry): string {
  const f = decoderFile(e.dir);
  if (!f) throw new Error(`${e.name}: no decoder file`);
  return path.join(e.dir, f);
}

// ---------------------------------------------------------------------------------------------------------------
// Temp folders: one root per test process, removed when it exits.

let runRoot: string | undefined;

function tempRoot(): string {
  if (!runRoot) {
    runRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-test-'));
    const dir = runRoot;
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return runRoot;
}

/** The instrumented-graph cache of this test run (never the user's home cache). */
export function testCacheDir(): string {
  const dir = path.join(tempRoot(), 'cache');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** A fresh empty folder under this run's temp root. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(tempRoot(), `${prefix}-`));
}

/** A copy of a model folder in a fresh temp folder (for tests that damage or edit files). */
export function copyModelFolder(e: ModelEntry, prefix = e.name): string {
  const dir = path.join(tempDir(prefix), e.name);
  fs.cpSync(e.dir, dir, { recursive: true });
  return dir;
}

/** Every file under `dir` with its size and modification time, sorted: equal before and after means untouched. */
export function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, d.name);
      const st = fs.statSync(path.join(dir, r));
      out.push(d.isDirectory() ? `${r}/` : `${r} ${st.size} ${st.mtimeMs}`);
      if (d.isDirectory()) walk(r);
    }
  };
  walk('');
  return out.sort();
}

/**
 * sha256 (hex) of every file under `dir`, by path relative to it, sorted by path: equal before and after means the
 * folder is byte for byte untouched (a listing of sizes and times would miss an edit in place of the same size).
 */
export function folderHashes(dir: string): Record<string, string> {
  const out: [string, string][] = [];
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, d.name);
      if (d.isDirectory()) walk(r);
      else out.push([r, createHash('sha256').update(fs.readFileSync(path.join(dir, r))).digest('hex')]);
    }
  };
  walk('');
  return Object.fromEntries(out.sort((a, b) => (a[0] < b[0] ? -1 : 1)));
}

// ---------------------------------------------------------------------------------------------------------------
// Loaded models, shared by the tests of one file.

const loaded = new Map<string, Promise<Model>>();

/**
 * Loads (once per test file) the model of a present folder; skips the test with a message when it is absent
 * (`skipIfAbsent`: in CI, a repository folder that is absent fails the test).
 */
export async function modelOf(t: TestContext, e: ModelEntry): Promise<Model | undefined> {
  if (skipIfAbsent(t, e)) return undefined;
  let p = loaded.get(e.dir);
  if (!p) loaded.set(e.dir, (p = loadModel(e.dir, { cacheDir: testCacheDir() })));
  return p;
}

const plain = new Map<string, Promise<ort.InferenceSession>>();
const plainErrors = new Map<string, string>();

/**
 * A plain onnxruntime session on a model's original file (default options, no instrumentation). A file that
 * onnxruntime's default graph optimizer rejects is opened with optimizations disabled instead, so that the engine
 * can still be compared with it; `plainLoadError` then says why (reference.test fails on it).
 */
export function plainSession(file: string): Promise<ort.InferenceSession> {
  let p = plain.get(file);
  if (!p) {
    p = ort.InferenceSession.create(file).catch((e: Error) => {
      plainErrors.set(file, e.message);
      return ort.InferenceSession.create(file, { graphOptimizationLevel: 'disabled' });
    });
    plain.set(file, p);
  }
  return p;
}

/** Why onnxruntime could not open the file with its default options (after `plainSession`), if it could not. */
export function plainLoadError(file: string): string | undefined {
  return plainErrors.get(file);
}

/** Releases every session this file opened: call from `after()`. */
export async function releaseAll(): Promise<void> {
  for (const p of loaded.values()) await (await p.catch(() => undefined))?.dispose();
  for (const p of plain.values()) await (await p.catch(() => undefined))?.release();
  loaded.clear();
  plain.clear();
}

// ---------------------------------------------------------------------------------------------------------------
// A plain forward pass, fed from the session's own input metadata: ids, mask and positions in the graph's integer
// type, an empty past of the graph's float type and layout for every other input.

function indexTensor(type: string, rows: number[][]): ort.Tensor {
  const flat = rows.flat();
  const dims = [rows.length, rows[0].length];
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(flat), dims);
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(flat.map(BigInt)), dims);
  throw new Error(`index input of type ${type}`);
}

export function plainFeeds(session: ort.InferenceSession, ids: number[][], mask?: number[][]): Record<string, ort.Tensor> {
  const b = ids.length;
  const m = mask ?? ids.map((r) => r.map(() => 1));
  const positions = m.map((row) => {
    let seen = 0;
    return row.map((x) => (x ? seen++ : 0));
  });
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
    if (meta.name === 'input_ids') feeds[meta.name] = indexTensor(meta.type, ids);
    else if (meta.name === 'attention_mask') feeds[meta.name] = indexTensor(meta.type, m);
    else if (meta.name === 'position_ids') feeds[meta.name] = indexTensor(meta.type, positions);
    else if (meta.name === 'use_cache_branch') feeds[meta.name] = new ort.Tensor('bool', [false], [1]);  // a merged decoder's no-past branch
    else if (/^(num_)?logits_to_keep$/.test(meta.name)) {
      // 0: every position's logits.
      const dims = meta.shape.length ? [1] : [];
      feeds[meta.name] = meta.type === 'int32' ? new ort.Tensor('int32', Int32Array.of(0), dims) : new ort.Tensor('int64', BigInt64Array.of(0n), dims);
    }
    else {
      // A past: fixed dims as declared; the first symbolic dim is the batch, any other symbolic dim (the past
      // length) is 0.
      let batchSeen = false;
      const dims = meta.shape.map((d) => (typeof d === 'number' && d > 0 ? d : batchSeen ? 0 : ((batchSeen = true), b)));
      if (meta.type === 'float16') feeds[meta.name] = new ort.Tensor('float16', new Uint16Array(0), dims);
      else if (meta.type === 'float32') feeds[meta.name] = new ort.Tensor('float32', new Float32Array(0), dims);
      else throw new Error(`input ${meta.name} of type ${meta.type} is not a past`);
    }
  }
  return feeds;
}

/** fp16 bits → number, written out here so that the comparison does not rest on the engine's converter. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

export function floats(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, halfToFloat);
  throw new Error(`tensor of type ${t.type}`);
}

/** Logits [batch, seq, vocab] of the plain model file. */
export async function plainLogits(file: string, ids: number[][], mask?: number[][]): Promise<Float32Array> {
  const s = await plainSession(file);
  const out = await s.run(plainFeeds(s, ids, mask), ['logits']);
  return floats(out.logits);
}

/**
 * Greedy ids from a plain onnxruntime loop on the original file: the whole sequence every step, no KV cache and no
 * engine, so it runs on any input layout `plainFeeds` can fill (fused caches, extra scalars, no position ids).
 */
export async function plainGreedyUncached(file: string, ids: number[], steps: number, eos: number[]): Promise<number[]> {
  const seq = [...ids];
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const logits = await plainLogits(file, [seq]);
    const V = logits.length / seq.length;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[(seq.length - 1) * V + v] > logits[(seq.length - 1) * V + best]) best = v;
    out.push(best);
    seq.push(best);
    if (eos.includes(best)) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers.

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

export function argmax(a: ArrayLike<number>, from = 0, to = a.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if (a[i] > a[best]) best = i;
  return best - from;
}

/** Row `pos` of example `b` of a [batch, seq, n] array. */
export function row(a: Float32Array, seq: number, n: number, b: number, pos: number): Float32Array {
  return a.subarray((b * seq + pos) * n, (b * seq + pos + 1) * n);
}


/** Standard normal samples. */
export function gaussian(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return out;
}

/** The tolerance of a logit comparison between two computations of the same model in its own float type. */
export const logitTolerance = (m: Model): number => (m.info.weightType === 'float16' ? 2e-3 : 1e-5);

// ---------------------------------------------------------------------------------------------------------------
// Inputs every model can take.

export const CODE = 'import os\nimport sys\n\n\ndef main(argv):\n    for i, arg in enumerate(argv):\n        if arg.startswith("--"):\n            print(i, arg)\n    return 0\n';
/** Text the GPT-2 fixture can take: GPT-2's tokenizer gives ids below its model's 1000 rows for these words. */
export const PLAIN_WORDS = ' the in on and to of is the at it in on the';

/** A text prompt whose tokens the model can all take: code where the tokenizer allows, common words otherwise. */
export function textPrompt(m: Model): string {
  const fits = (s: string) => m.tokenizer.encode(s).every((id) => id < m.info.vocab);
  const found = [CODE, PLAIN_WORDS].find(fits);
  if (!found) throw new Error(`${m.info.name}: no test text tokenizes within the vocabulary of ${m.info.vocab}`);
  return found;
}

/** `n` token ids of a model: real code through its tokenizer where they fit, else fixed pseudo-random ids. */
export function sampleIds(m: Model, n: number, seed = 1): number[] {
  const ids = m.tokenizer.encode(CODE.repeat(Math.ceil(n / 20) + 1));
  if (ids.length >= n + seed && ids.every((id) => id < m.info.vocab)) return ids.slice(seed, seed + n);
  const r = rng(seed);
  const top = Math.min(m.info.vocab, 1000);
  return Array.from({ length: n }, () => 3 + Math.floor(r() * (top - 3)));
}
