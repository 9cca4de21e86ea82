// Hostile and broken files (issue 17, section 4): each gets one clear NeuronpatchError (no stack overflow, no
// raw terminal escape, no 10 MB message) and leaves every file untouched, or is read correctly where it is valid.
// Patch files are built here from a real repair of the embedded model, then corrupted, so they stay valid for the
// model's hash; the shared hostile fixtures (../shared/fixtures/hostile) are read as they are where present.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import { readCases } from '../../src/cli/cases';
import { loadModel, NeuronpatchError, repair, type Model } from '../../src/engine';
import { jsonDepth } from '../../src/engine/jsonlimits';
import { loadModel as loadInstrumented } from '../../src/engine/model/load';
import { recognise } from '../../src/engine/model/recognise';
import { embeddingAgreement } from '../../src/engine/model/tying';
import { loadModelProto } from '../../src/engine/onnx/proto';
import { jsonErrorOffset } from '../../src/engine/patches/jsonpos';
import { parseJson } from '../../src/engine/patches/format';
import { PatchStore } from '../../src/engine/patches/store';
import { checkPatchFile } from '../../src/engine/patches/validate';
import { quote, safeMessage } from '../../src/engine/untrusted';
import type { Patch } from '../../src/engine/types';
import { absence, copyModelFolder, entry, listing, root, sharedFixtures, skipIfAbsent, tempDir, testCacheDir } from '../helpers/models';
import { skipIfMissing } from '../helpers/need';

const ESC = '\u001b';
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

/** `fn` throws a NeuronpatchError matching `pattern`, short and free of raw control characters. */
async function clearError(fn: () => unknown, pattern: RegExp, what: string): Promise<string> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof NeuronpatchError, `${what}: a NeuronpatchError, not ${String((error as Error)?.stack ?? error)}`.slice(0, 2000));
  assert.match(error.message, pattern, what);
  assert.doesNotMatch(error.message, RAW_CONTROL, `${what}: no raw control character`);
  assert.ok(error.message.length < 5000, `${what}: a message of ${error.message.length} characters`);
  return error.message;
}

const demo = entry('demo');
let model: Model | undefined;
let patch: Patch | undefined;

function file(p: Patch | Record<string, unknown>, over: Record<string, unknown> = {}): Record<string, unknown> {
  return { format: 'neuronpatch/1', model: { name: model!.info.name, hash: model!.info.hash }, patches: [p], ...over };
}

function write(dir: string, name: string, value: unknown): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, typeof value === 'string' ? value : JSON.stringify(value));
  return f;
}

function need(t: TestContext): boolean {
  if (skipIfAbsent(t, demo)) return false;
  assert.ok(model, 'models/demo is present but did not load');
  return true;
}

before(async () => {
  if (absence(demo)) return;
  model = await loadModel(demo.dir, { cacheDir: testCacheDir() });
  const c = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[0]) as { prompt: string; desired: string };
  const r = await repair(model, c, { method: 'minimal' });
  assert.ok(r.success, 'the first dev case is repaired');
  patch = r.patch;
});

describe('deeply nested JSON', () => {
  it('jsonErrorOffset and jsonDepth walk 100,000 levels without recursion', () => {
    const deep = '['.repeat(100_000);
    assert.equal(jsonErrorOffset(deep), 100_000);
    assert.equal(jsonErrorOffset(`${'{"a":'.repeat(50_000)}1${'}'.repeat(49_999)}`), 50_000 * 5 + 1 + 49_999);
    assert.equal(jsonErrorOffset('{"a": [1, 2, {"b": tru}]}'), 22);
    assert.equal(jsonErrorOffset('[1, 2] x'), 7);
    assert.equal(jsonDepth(JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)), 65);
    assert.equal(jsonDepth({ a: [{ b: 1 }] }), 3);
  });

  it('a broken patch file nested 10,000 and 100,000 deep: a line and column, not a stack overflow', async () => {
    const dir = tempDir('deep');
    for (const n of [10_000, 100_000]) {
      const f = write(dir, `deep-${n}.json`, `{"format": "neuronpatch/1", "note": ${'['.repeat(n)}\n}`);
      await clearError(() => parseJson(fs.readFileSync(f, 'utf8'), f), /:2:1: not valid JSON/, `${n} levels`);
    }
  });

  it('a valid patch file with a key nested 10,000 deep is refused when opened, before any repair, and left untouched', async (t) => {
    if (!need(t)) return;
    const dir = tempDir('deepnote');
    const raw = `{"format": "neuronpatch/1", "model": {"name": "demo", "hash": "${model!.info.hash}"}, "patches": [], "note": ${'{"x":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
    const f = write(dir, 'patches.json', raw);
    await clearError(() => PatchStore.open(f, model!.info), /more than 64 levels deep/, 'deep note');
    assert.equal(fs.readFileSync(f, 'utf8'), raw);
  });

  it('config.json and tokenizer.json nested 10,000 deep: a clear error at load', async (t) => {
    if (skipIfAbsent(t, demo)) return;
    for (const name of ['config.json', 'tokenizer.json']) {
      const dir = copyModelFolder(demo, `deep-${name}`);
      const j = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as Record<string, unknown>;
      const text = JSON.stringify(j).replace(/}$/, `, "extra": ${'['.repeat(10_000)}${']'.repeat(10_000)}}`);
      fs.writeFileSync(path.join(dir, name), text);
      await clearError(() => loadModel(dir, { cacheDir: tempDir('cache') }), /more than 64 levels deep/, name);
    }
  });
});

describe('deltas that overflow the weights', () => {
  it('1e308 and 3.5e38 are refused for float32 weights; 7e4 for float16, 6e4 accepted there', async (t) => {
    if (!need(t)) return;
    for (const big of [1e308, 3.5e38, -1e39]) {
      const p = { ...patch!, edits: patch!.edits.map((e, i) => (i === 0 ? { ...e, delta: e.delta.map((x, k) => (k === 5 ? big : x)) } : e)) };
      const { problems } = checkPatchFile(file(p), model!.info);
      assert.equal(problems.length, 1, `${big}: ${problems.join('; ')}`);
      assert.match(problems[0], /edits\[0\]\.delta\[5\]: .* does not fit the model's float32 weights/);
    }
    const fp16 = { ...model!.info, weightType: 'float16' as const };
    const with16 = (v: number) => file({ ...patch!, edits: patch!.edits.map((e) => ({ ...e, delta: e.delta.map((x, k) => (k === 0 ? v : x)) })) });
    assert.match(checkPatchFile(with16(70000), fp16).problems[0] ?? '', /float16 weights \(largest 65504\)/);
    assert.deepEqual(checkPatchFile(with16(60000), fp16).problems, []);
  });

  it('the shared fixtures 198/199 are refused (when ../shared is present and made for this model)', async (t) => {
    if (!need(t)) return;
    for (const name of ['198_delta_1e308.json', '199_delta_3_5e38.json']) {
      const f = path.join(sharedFixtures, 'hostile', name);
      if (skipIfMissing(t, fs.existsSync(f) ? undefined : `${f} is absent`, 'beside')) return;
      await clearError(() => PatchStore.open(f, model!.info), /does not fit the model's float32 weights|holds patches for model/, name);
    }
  });
});

describe('untrusted strings are quoted and cut', () => {
  it('quote and safeMessage escape ESC, CSI (8-bit), OSC, bidi overrides, and cut 5 MB', () => {
    assert.equal(quote(`a${ESC}[2Jb`), '"a\\u001b[2Jb"');
    assert.equal(quote('\u009b31m\u202e'), '"\\u009b31m\\u202e"');
    assert.match(quote('x'.repeat(5_000_000)), /^"x{80}… \(5,000,000 characters in all\)"$/);
    assert.equal(safeMessage(`line 1\nline ${ESC}]0;title\u0007 2`), 'line 1\nline \\u001b]0;title\\u0007 2');
    assert.ok(safeMessage('y'.repeat(10_000_000)).length < 4100);
  });

  it('another model\'s file with escapes and a 5 MB name in model.name, and escapes in ids: quoted, cut', async (t) => {
    if (!need(t)) return;
    const dir = tempDir('ansi');
    const evil = `${ESC}[2J${ESC}[31mEVIL${ESC}]0;pwned\u0007`;
    const m1 = await clearError(() => PatchStore.open(write(dir, 'a.json', file(patch!, { model: { name: evil, hash: 'f'.repeat(64) } })), model!.info), /holds patches for model "\\u001b\[2J/, 'escapes');
    assert.ok(!m1.includes(ESC));
    await clearError(() => PatchStore.open(write(dir, 'b.json', file(patch!, { model: { name: 'n'.repeat(5_000_000), hash: 'f'.repeat(64) } })), model!.info), /characters in all/, '5 MB name');
    const twice = file(patch!, { patches: [{ ...patch!, id: evil }, { ...patch!, id: evil }] });
    await clearError(() => PatchStore.open(write(dir, 'c.json', twice), model!.info), /"\\u001b\[2J.*is also the id/, 'escaped id');
    const bad = await clearError(() => PatchStore.open(write(dir, 'd.json', `{"format": ${ESC}[31mRED}`), model!.info), /not valid JSON/, 'escape in the JSON excerpt');
    assert.ok(!bad.includes(ESC));
  });

  it('the CLI prints no raw escape from a patch file or config.json _name_or_path', async (t) => {
    if (!need(t)) return;
    const cli = path.join(root, 'dist', 'cli.js');
    if (skipIfMissing(t, fs.existsSync(cli) ? undefined : 'dist/cli.js is not built: npm run build', 'repo')) return;
    const dir = copyModelFolder(demo, 'ansi-config');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    cfg._name_or_path = `${ESC}[2J${ESC}]0;pwned\u0007${'z'.repeat(1_000_000)}`;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    const env = { ...process.env, NEURONPATCH_CACHE: testCacheDir(), ORT_DISABLE_TELEMETRY: '1' };
    const info = spawnSync(process.execPath, [cli, 'info', '--model', dir], { env, encoding: 'utf8' });
    assert.equal(info.status, 0, info.stderr);
    assert.doesNotMatch(info.stdout + info.stderr, RAW_CONTROL);
    assert.ok(info.stdout.length < 2000, `info prints ${info.stdout.length} characters`);
    const other = write(tempDir('ansi-cli'), 'p.json', file(patch!, { model: { name: `${ESC}[2J${ESC}]0;x\u0007`, hash: 'e'.repeat(64) } }));
    const gen = spawnSync(process.execPath, [cli, 'generate', '--prompt', 'x', '--patches', other], { env, encoding: 'utf8' });
    assert.equal(gen.status, 1);
    assert.match(gen.stderr, /holds patches for model "\\u001b\[2J/);
    assert.doesNotMatch(gen.stderr, RAW_CONTROL);
  });
});

describe('huge prompts', () => {
  it('a 10 MB prompt is cut before tokenising: the same completion as its tail, a notice, in seconds', async (t) => {
    if (!need(t)) return;
    const line = 'def f(x):\n    return x + 1\n\n';
    const tail = `${line.repeat(40)}def g(y):\n    return`;
    const huge = line.repeat(Math.ceil(10_000_000 / line.length)) + tail;
    const t0 = Date.now();
    const a = await model!.generate(huge, { maxNewTokens: 8 });
    const ms = Date.now() - t0;
    const b = await model!.generate(huge.slice(-model!.tokenizer.tail(huge, model!.info.context).text.length), { maxNewTokens: 8 });
    assert.equal(a.completion, b.completion);
    assert.match(a.notice ?? '', /characters; only its last .* were cut before tokenising/);
    t.diagnostic(`10 MB prompt: ${ms} ms; ${a.notice}`);
    assert.ok(ms < 60_000, `${ms} ms`);
  });

  it('a patch whose case.prompt is 10 MB stacks under a new repair in seconds', async (t) => {
    if (!need(t)) return;
    const big = { ...patch!, case: { ...patch!.case, prompt: 'x = 1\n'.repeat(1_700_000) + patch!.case.prompt } };
    const c = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[1]) as { prompt: string; desired: string };
    const t0 = Date.now();
    const r = await repair(model!, c, { method: 'minimal', active: [big] });
    t.diagnostic(`repair on top of a 10 MB case.prompt: ${Date.now() - t0} ms, success ${r.success}`);
    assert.ok(Date.now() - t0 < 120_000);
  });

  it('a desired text longer than the context window can hold is refused before tokenising', async (t) => {
    if (!need(t)) return;
    await clearError(() => repair(model!, { prompt: 'x = ', desired: '1'.repeat(50_000_000) }), /more than the model's context window can hold/, 'desired');
  });
});

describe('model folders', () => {
  const small = (t: TestContext): string | undefined => (skipIfAbsent(t, demo) ? undefined : copyModelFolder(demo, 'folder'));
  const editJson = (dir: string, name: string, edit: (j: Record<string, any>) => unknown): void => {
    const f = path.join(dir, name);
    const j = JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(f, JSON.stringify(edit(j) ?? j));
  };
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['tokenizer.json is null', (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), 'null'), /not a Hugging Face tokenizer/],
    ['an empty vocabulary', (d) => editJson(d, 'tokenizer.json', (j) => { j.model.vocab = {}; }), /empty vocabulary/],
    ['two tokens with one id', (d) => editJson(d, 'tokenizer.json', (j) => { const k = Object.keys(j.model.vocab); j.model.vocab[k[10]] = j.model.vocab[k[11]]; }), /both have the id/],
    ['a vocabulary with a hole', (d) => editJson(d, 'tokenizer.json', (j) => { const k = Object.keys(j.model.vocab).find((x) => j.model.vocab[x] === 7)!; delete j.model.vocab[k]; }), /none at 7/],
    ['eos_token_id outside the vocabulary', (d) => editJson(d, 'config.json', (j) => { j.eos_token_id = 99_999; }), /eos_token_id 99999 is outside the model's 4096 output rows/],
    // models/demo's lm_head is its own matrix (tie_word_embeddings: false in its config).
    ['tie_word_embeddings: true with a lm_head of its own', (d) => editJson(d, 'config.json', (j) => { j.tie_word_embeddings = true; }), /says tie_word_embeddings is true, but the graph's lm_head .* is not the token embedding .*mean cosine of -?0\.\d\d on 16 sampled tokens/],
  ];
  for (const [what, damage, pattern] of cases) {
    it(what, async (t) => {
      const dir = small(t);
      if (!dir) return;
      damage(dir);
      const before = listing(dir);
      await clearError(() => loadModel(dir, { cacheDir: tempDir('cache') }), pattern, what);
      assert.deepEqual(listing(dir), before);
    });
  }

  it('a tied table the export stored twice is no contradiction; a separate lm_head is measured as one', async (t) => {
    const gpt2 = entry('demo-gpt2');
    if (skipIfAbsent(t, demo) || skipIfAbsent(t, gpt2)) return;
    const tied = await loadInstrumented(gpt2.dir, { cacheDir: testCacheDir() });
    const own = await loadInstrumented(demo.dir, { cacheDir: testCacheDir() });
    try {
      assert.equal(tied.info.tiedUnembedding, true);
      const twice = embeddingAgreement(tied.weights, recognise(await loadModelProto(tied.onnxPath)));
      if (twice !== undefined) assert.ok(twice > 0.999, `demo-gpt2's two copies agree: ${twice}`);
      const separate = embeddingAgreement(own.weights, recognise(await loadModelProto(own.onnxPath)));
      assert.ok(separate !== undefined && Math.abs(separate) < 0.5, `models/demo's own lm_head: ${separate}`);
    } finally {
      tied.release();
      own.release();
    }
  });

  it('genai_config.json naming ../other/model.onnx (or an absolute path) is refused', async (t) => {
    const e = entry('ortgenai-tiny-gpt2-fp32');
    if (skipIfAbsent(t, e)) return;
    const dir = copyModelFolder(e, 'genai-escape');
    fs.mkdirSync(path.join(dir, '..', 'other'));
    const decoder = JSON.parse(fs.readFileSync(path.join(dir, 'genai_config.json'), 'utf8')).model.decoder.filename as string;
    fs.copyFileSync(path.join(dir, decoder), path.join(dir, '..', 'other', 'model.onnx'));
    for (const name of ['../other/model.onnx', path.join(dir, '..', 'other', 'model.onnx')]) {
      editJson(dir, 'genai_config.json', (j) => { j.model.decoder.filename = name; });
      await clearError(() => loadModel(dir, { cacheDir: tempDir('cache') }), /outside the model folder/, name);
    }
  });
});

describe('case files', () => {
  it('a BOM before the first line is read; an empty or all-invalid file is an error naming it', () => {
    const dir = tempDir('cases');
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    const bom = write(dir, 'bom.jsonl', '\ufeff{"prompt": "a = ", "desired": "1"}\n{"prompt": "b = ", "desired": "2"}\n');
    assert.deepEqual(readCases(bom, warn).map((c) => c.desired), ['1', '2']);
    assert.deepEqual(warnings, []);
    assert.throws(() => readCases(write(dir, 'empty.jsonl', ''), warn), (e: Error) => e instanceof NeuronpatchError && /has no repair cases: it is empty/.test(e.message));
    const bad = write(dir, 'bad.jsonl', Array.from({ length: 100 }, (_, i) => (i % 2 ? '{"prompt": 1}' : 'oops')).join('\n'));
    assert.throws(() => readCases(bad, warn), (e: Error) => e instanceof NeuronpatchError && /no valid repair cases: all 100 line\(s\) were skipped/.test(e.message));
    assert.equal(warnings.length, 20, 'at most 20 skipped lines are shown');
  });
});
