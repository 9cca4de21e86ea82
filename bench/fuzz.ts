// Hostile-input fuzz (issue 17): about 1,500 hostile or broken inputs against the engine's front doors (patch
// files, model folders, case files, webview messages, the instrumented-graph cache, huge prompts), concurrent
// writers of one patch file, and kill -9 of writers mid-save. Every input is classified:
//   clear error   a NeuronpatchError (or a rejected webview message / a rebuilt cache entry) with a message of
//                 under 5,000 characters, free of raw control characters and of stack traces
//   accepted      a valid input read correctly (benign mutations; a BOM; a valid variant)
//   crash         any other exception, or an error message that is huge, has raw escapes or a stack trace
//   hang          a trial over its time limit
//   silent        hostile input accepted: a patch file whose accepted content breaks the format's invariants,
//                 a webview message that passes validation while malformed, a cache entry trusted while wrong
//   data lost     a patch file changed by a refused read, a patch reported saved and missing from the file
//   npm run bench:fuzz -- [--seed 1] [--quick] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCases } from '../src/cli/cases';
import { loadModel, type Model } from '../src/engine';
import { jsonDepth } from '../src/engine/jsonlimits';
import { lockPathOf } from '../src/engine/patches/lock';
import { PatchStore } from '../src/engine/patches/store';
import { largestFinite } from '../src/engine/patches/validate';
import { repair } from '../src/engine/repair/index';
import { NeuronpatchError, PATCH_FORMAT, type ModelInfo, type Patch, type PatchFile } from '../src/engine/types';
import { isWebviewMessage } from '../src/vscode/panel/messages';
import { mulberry32, options, ROOT } from './common';

type Outcome = 'clear' | 'accepted' | 'crash' | 'hang' | 'silent' | 'lost';
const OUTCOMES: Outcome[] = ['clear', 'accepted', 'crash', 'hang', 'silent', 'lost'];

interface Row {
  tried: number;
  counts: Record<Outcome, number>;
  examples: string[];
}

const table = new Map<string, Row>();

function record(category: string, what: string, outcome: Outcome, detail = ''): void {
  let row = table.get(category);
  if (!row) table.set(category, (row = { tried: 0, counts: { clear: 0, accepted: 0, crash: 0, hang: 0, silent: 0, lost: 0 }, examples: [] }));
  row.tried++;
  row.counts[outcome]++;
  if (outcome !== 'clear' && outcome !== 'accepted' && row.examples.length < 5) row.examples.push(`${what}: ${outcome} ${detail}`.slice(0, 300));
}

const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

/** How an error reads to a user: clear, or a crash (and why). */
function classifyError(e: unknown): { outcome: Outcome; detail: string } {
  if (!(e instanceof NeuronpatchError)) return { outcome: 'crash', detail: `${(e as Error)?.name}: ${String((e as Error)?.message).slice(0, 160)}` };
  if (e.message.length > 5000) return { outcome: 'crash', detail: `a message of ${e.message.length} characters` };
  if (RAW_CONTROL.test(e.message)) return { outcome: 'crash', detail: 'raw control characters in the message' };
  if (/\n\s+at .*:\d+:\d+\)?$/m.test(e.message)) return { outcome: 'crash', detail: 'a stack trace in the message' };
  return { outcome: 'clear', detail: '' };
}

/** Runs `fn` with a time limit; the limit only catches asynchronous hangs (a synchronous one is timed after it returns). */
async function timed<T>(fn: () => Promise<T> | T, limitMs: number): Promise<{ value?: T; error?: unknown; hang?: boolean; ms: number }> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const value = await Promise.race([
      Promise.resolve().then(fn),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('__hang__')), limitMs))),
    ]);
    const ms = Date.now() - t0;
    return ms > limitMs ? { hang: true, ms } : { value, ms };
  } catch (error) {
    const ms = Date.now() - t0;
    if ((error as Error)?.message === '__hang__' || ms > limitMs) return { hang: true, ms };
    return { error, ms };
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Patch files

/** What an accepted patch file must satisfy; a violation is a silent acceptance. */
function invariantsBroken(file: PatchFile | Patch[], info: ModelInfo): string | undefined {
  const patches = Array.isArray(file) ? file : file.patches;
  const { max } = largestFinite(info.weightType);
  const ids = new Set<string>();
  for (const p of patches) {
    if (typeof p.id !== 'string' || !p.id || ids.has(p.id)) return `id ${String(p.id).slice(0, 20)}`;
    ids.add(p.id);
    if (typeof p.enabled !== 'boolean') return 'enabled';
    for (const k of ['prompt', 'desired', 'before', 'after'] as const) if (typeof p.case?.[k] !== 'string') return `case.${k}`;
    for (const e of p.edits) {
      if (!Number.isInteger(e.layer) || e.layer < 0 || e.layer >= info.layers) return 'layer';
      if (!Number.isInteger(e.neuron) || e.neuron < 0 || e.neuron >= info.neurons) return 'neuron';
      if (e.delta.length !== info.width) return 'delta length';
      if (!e.delta.every((x) => typeof x === 'number' && Number.isFinite(x) && Math.abs(x) <= max)) return 'delta value';
    }
  }
  if (jsonDepth(patches) > 64) return 'depth';
  return undefined;
}

const HOSTILE_VALUES: [string, () => unknown][] = [
  ['null', () => null], ['true', () => true], ['-1', () => -1], ['1.5', () => 1.5], ['1e308', () => 1e308], ['-3.5e38', () => -3.5e38],
  ['empty string', () => ''], ['5 MB string', () => 'x'.repeat(5_000_000)], ['escape string', () => '\u001b[2J\u001b]0;pwned\u0007\u009b31m'],
  ['{}', () => ({})], ['[]', () => []], ['deep 10k', () => JSON.parse(`${'['.repeat(10_000)}${']'.repeat(10_000)}`)],
  ['1e6 numbers', () => new Array(1_000_000).fill(0.5)], ['NaN string', () => 'NaN'], ['2^53', () => 2 ** 53],
];

type Path = (string | number)[];
const FIELDS: Path[] = [
  ['format'], ['model'], ['model', 'name'], ['model', 'hash'], ['patches'], ['patches', 0], ['patches', 0, 'id'], ['patches', 0, 'createdAt'],
  ['patches', 0, 'enabled'], ['patches', 0, 'method'], ['patches', 0, 'case'], ['patches', 0, 'case', 'prompt'], ['patches', 0, 'case', 'desired'],
  ['patches', 0, 'case', 'before'], ['patches', 0, 'edits'], ['patches', 0, 'edits', 0], ['patches', 0, 'edits', 0, 'layer'],
  ['patches', 0, 'edits', 0, 'neuron'], ['patches', 0, 'edits', 0, 'delta'], ['patches', 0, 'edits', 0, 'delta', 0],
  ['patches', 0, 'metrics'], ['patches', 0, 'metrics', 'success'], ['patches', 0, 'metrics', 'specificity'], ['patches', 0, 'metrics', 'margin'],
  ['patches', 0, 'note'], ['note'],
];

function setAt(root: unknown, at: Path, value: unknown): unknown {
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let o = copy;
  for (const k of at.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  o[at[at.length - 1]] = value;
  return copy;
}

/** JSON text of a value that may nest deeper than JSON.stringify can (the deep hostile value). */
function toText(v: unknown): string {
  try {
    return JSON.stringify(v);
  } catch {
    return '"unserialisable"';
  }
}

async function patchFileTrial(dir: string, info: ModelInfo, what: string, text: string | Buffer, expect: 'refuse' | 'either' | 'accept'): Promise<void> {
  const file = path.join(dir, `p-${table.get('patch files')?.tried ?? 0}.json`);
  fs.writeFileSync(file, text);
  const before = fs.readFileSync(file);
  const r = await timed(() => PatchStore.open(file, info), 20_000);
  const after = fs.readFileSync(file);
  if (!before.equals(after)) return record('patch files', what, 'lost', 'the file changed');
  if (r.hang) return record('patch files', what, 'hang', `${r.ms} ms`);
  if (r.error) {
    const c = classifyError(r.error);
    if (c.outcome === 'clear' && expect === 'accept') return record('patch files', what, 'crash', `a valid file refused: ${(r.error as Error).message.slice(0, 120)}`);
    return record('patch files', what, c.outcome, c.detail);
  }
  const broken = invariantsBroken(r.value!.list(), info);
  if (broken || expect === 'refuse') return record('patch files', what, 'silent', broken ?? 'accepted');
  record('patch files', what, 'accepted');
  fs.rmSync(file, { force: true });
}

async function fuzzPatchFiles(dir: string, info: ModelInfo, patch: Patch, rand: () => number, quick: boolean): Promise<void> {
  const good: PatchFile = { format: PATCH_FORMAT, model: { name: info.name, hash: info.hash }, patches: [patch] };
  const goodText = JSON.stringify(good, null, 2);
  await patchFileTrial(dir, info, 'the valid file', goodText, 'accept');
  await patchFileTrial(dir, info, 'a BOM before it', `\ufeff${goodText}`, 'accept');
  // Every field × every hostile value.
  for (const at of FIELDS)
    for (const [name, make] of HOSTILE_VALUES) {
      if (quick && rand() < 0.7) continue;
      await patchFileTrial(dir, info, `${at.join('.')} = ${name}`, toText(setAt(good, at, make())), 'either');
    }
  // Deeply nested, valid and broken, at several places.
  for (const n of [1000, 10_000, 100_000]) {
    await patchFileTrial(dir, info, `note nested ${n} deep`, goodText.replace(/^\{/, `{"note": ${'{"x":'.repeat(n)}1${'}'.repeat(n)},`), 'refuse');
    await patchFileTrial(dir, info, `broken array nested ${n}`, '['.repeat(n), 'refuse');
    await patchFileTrial(dir, info, `broken note nested ${n}`, goodText.replace(/^\{/, `{"note": ${'['.repeat(n)}\n`), 'refuse');
  }
  // Truncations, byte flips, insertions.
  const n = quick ? 40 : 150;
  for (let i = 0; i < n; i++) {
    const at = 1 + Math.floor(rand() * (goodText.length - 2));
    await patchFileTrial(dir, info, `cut at ${at}`, goodText.slice(0, at), 'refuse');
  }
  const alphabet = '{}[],:"\\ 0123456789.eE+-tfnul\u001b\u0000\u009b\n';
  for (let i = 0; i < n; i++) {
    const chars = goodText.split('');
    const k = 1 + Math.floor(rand() * 3);
    for (let j = 0; j < k; j++) chars[Math.floor(rand() * chars.length)] = alphabet[Math.floor(rand() * alphabet.length)];
    await patchFileTrial(dir, info, `${k} byte(s) changed`, chars.join(''), 'either');
  }
  // Whole-file oddities.
  const odd: [string, string | Buffer, 'refuse' | 'either'][] = [
    ['empty', '', 'refuse'], ['whitespace', '   \n', 'refuse'], ['null', 'null', 'refuse'], ['a number', '42', 'refuse'],
    ['binary', Buffer.from(Array.from({ length: 4096 }, () => Math.floor(rand() * 256))), 'refuse'],
    ['UTF-16', Buffer.from(`\ufeff${goodText}`, 'utf16le'), 'refuse'], ['trailing garbage', `${goodText} x`, 'refuse'],
    ['another model\'s hash', goodText.replace(info.hash, 'f'.repeat(64)), 'refuse'],
    ['a future format', goodText.replace(PATCH_FORMAT, 'neuronpatch/99'), 'refuse'],
    ['two patches, one id', JSON.stringify({ ...good, patches: [patch, patch] }), 'refuse'],
    ['5,000 patches', JSON.stringify({ ...good, patches: Array.from({ length: 5000 }, (_, i) => ({ ...patch, id: `p${i}` })) }), 'either'],
    ['escape in model.name of another model', JSON.stringify({ ...good, model: { name: '\u001b[2J\u001b]0;x\u0007', hash: 'e'.repeat(64) } }), 'refuse'],
  ];
  for (const [what, text, expect] of odd) await patchFileTrial(dir, info, what, text, expect);
  // The element type: deltas in and out of float16's range on an fp16 model's dimensions.
  const fp16 = { ...info, weightType: 'float16' as const };
  for (const v of [65504, 65520, 1e5, -7e4, 6e4]) {
    const f = setAt(good, ['patches', 0, 'edits', 0, 'delta', 0], v);
    await patchFileTrial(dir, fp16, `fp16 delta ${v}`, JSON.stringify(f), Math.abs(v) > 65504 ? 'refuse' : 'accept');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Model folders: the demo folder's small files mutated, its ONNX file linked (the cache entry is shared).

async function fuzzModelFolders(base: string, cache: string, rand: () => number, quick: boolean): Promise<void> {
  const demo = path.join(ROOT, 'models', 'demo');
  const jsonFiles = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'].filter((f) => fs.existsSync(path.join(demo, f)));
  const originals = new Map(jsonFiles.map((f) => [f, JSON.parse(fs.readFileSync(path.join(demo, f), 'utf8')) as Record<string, any>]));
  let n = 0;
  const trial = async (what: string, setup: (dir: string) => void, expect: 'refuse' | 'either'): Promise<void> => {
    const dir = path.join(base, `m${n++}`);
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(demo)) {
      if (f.endsWith('.onnx') || f.endsWith('.data')) fs.symlinkSync(path.join(demo, f), path.join(dir, f));
      else if (fs.statSync(path.join(demo, f)).isFile()) fs.copyFileSync(path.join(demo, f), path.join(dir, f));
    }
    setup(dir);
    const r = await timed(async () => {
      const m = await loadModel(dir, { cacheDir: cache });
      try {
        const c = await m.generate('def f(x):\n    return', { maxNewTokens: 2 });
        return { info: m.info, completion: c.completion };
      } finally {
        await m.dispose();
      }
    }, 60_000);
    fs.rmSync(dir, { recursive: true, force: true });
    if (r.hang) return record('model folders', what, 'hang', `${r.ms} ms`);
    if (r.error) {
      const c = classifyError(r.error);
      return record('model folders', what, c.outcome, c.detail);
    }
    const name = r.value!.info.name;
    if (expect === 'refuse') return record('model folders', what, 'silent', 'loaded');
    if (RAW_CONTROL.test(name) || name.length > 200) return record('model folders', what, 'silent', `model name of ${name.length} characters`);
    record('model folders', what, 'accepted');
  };
  const fields: Record<string, string[]> = {
    'config.json': ['_name_or_path', 'vocab_size', 'eos_token_id', 'bos_token_id', 'num_hidden_layers', 'hidden_size', 'max_position_embeddings', 'tie_word_embeddings', 'model_type'],
    'tokenizer.json': ['model', 'added_tokens', 'pre_tokenizer', 'decoder', 'normalizer'],
    'tokenizer_config.json': ['add_bos_token', 'eos_token', 'model_max_length'],
    'generation_config.json': ['eos_token_id'],
  };
  for (const [f, keys] of Object.entries(fields)) {
    if (!originals.has(f)) continue;
    for (const k of keys)
      for (const [name, make] of HOSTILE_VALUES) {
        if (name === '1e6 numbers' || (quick && rand() < 0.7)) continue;
        await trial(`${f} ${k} = ${name}`, (dir) => fs.writeFileSync(path.join(dir, f), toText({ ...originals.get(f), [k]: make() })), 'either');
      }
  }
  const tok = originals.get('tokenizer.json')!;
  const vocabKeys = Object.keys(tok.model.vocab);
  const edits: [string, (t: Record<string, any>) => unknown, 'refuse' | 'either'][] = [
    ['tokenizer.json null', () => null, 'refuse'],
    ['an empty vocabulary', (t) => ({ ...t, model: { ...t.model, vocab: {} } }), 'refuse'],
    ['duplicate ids', (t) => ({ ...t, model: { ...t.model, vocab: { ...t.model.vocab, [vocabKeys[5]]: t.model.vocab[vocabKeys[6]] } } }), 'refuse'],
    ['a hole in the ids', (t) => { const v = { ...t.model.vocab }; delete v[vocabKeys.find((k) => v[k] === 100)!]; return { ...t, model: { ...t.model, vocab: v } }; }, 'refuse'],
    ['an id past the model', (t) => ({ ...t, model: { ...t.model, vocab: { ...t.model.vocab, zzzzzz: 999_999 } } }), 'refuse'],
    ['a negative id', (t) => ({ ...t, model: { ...t.model, vocab: { ...t.model.vocab, zzzzzz: -1 } } }), 'refuse'],
  ];
  for (const [what, edit, expect] of edits) await trial(what, (dir) => fs.writeFileSync(path.join(dir, 'tokenizer.json'), toText(edit(tok))), expect);
  const cfg = originals.get('config.json')!;
  for (const [what, patch, expect] of [
    ['eos_token_id past the model', { eos_token_id: 1_000_000 }, 'refuse'], ['bos_token_id negative', { bos_token_id: -5 }, 'either'],
    // models/demo has a lm_head of its own: saying it is tied contradicts the graph (refused since the rows are compared).
    ['tie_word_embeddings flipped', { tie_word_embeddings: !cfg.tie_word_embeddings }, cfg.tie_word_embeddings === false ? 'refuse' : 'either'],
  ] as const)
    await trial(what, (dir) => fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, ...patch })), expect);
  for (const f of jsonFiles) {
    // generation_config.json is read only when config.json names no eos id (the demo's does): either is right.
    const read = f === 'generation_config.json' ? 'either' : 'refuse';
    await trial(`${f} truncated`, (dir) => { const t = fs.readFileSync(path.join(dir, f), 'utf8'); fs.writeFileSync(path.join(dir, f), t.slice(0, t.length >> 1)); }, read);
    await trial(`${f} empty`, (dir) => fs.writeFileSync(path.join(dir, f), ''), read);
    await trial(`${f} nested 10,000 deep`, (dir) => fs.writeFileSync(path.join(dir, f), `${'['.repeat(10_000)}${']'.repeat(10_000)}`), read);
    await trial(`${f} with a BOM`, (dir) => fs.writeFileSync(path.join(dir, f), `\ufeff${fs.readFileSync(path.join(dir, f), 'utf8')}`), 'either');
  }
  for (const name of ['../other/model.onnx', '/etc/passwd', 'sub/../../x.onnx', 'model.onnx\u0000.txt']) {
    await trial(`genai_config.json decoder ${JSON.stringify(name)}`, (dir) => {
      fs.rmSync(path.join(dir, 'config.json'));
      fs.writeFileSync(path.join(dir, 'genai_config.json'), JSON.stringify({ model: { type: 'llama', vocab_size: 4096, eos_token_id: 0, decoder: { filename: name } } }));
      fs.mkdirSync(path.join(dir, '..', 'other'), { recursive: true });
      fs.copyFileSync(path.join(demo, 'model.onnx'), path.join(dir, '..', 'other', 'model.onnx'));
    }, 'refuse');
  }
  const onnxBytes = fs.readFileSync(path.join(demo, 'model.onnx'));
  for (const cut of [0, 100, onnxBytes.length >> 1, onnxBytes.length - 1]) {
    await trial(`model.onnx cut to ${cut} bytes`, (dir) => { fs.rmSync(path.join(dir, 'model.onnx')); fs.writeFileSync(path.join(dir, 'model.onnx'), onnxBytes.subarray(0, cut)); }, 'refuse');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Case files (the CLI's reader).

function fuzzCaseFiles(dir: string, rand: () => number, quick: boolean): void {
  const good = '{"prompt": "x = ", "desired": "1"}';
  const lines: [string, string, 'refuse' | 'accept' | 'either'][] = [
    ['a BOM first line', `\ufeff${good}\n${good}`, 'accept'], ['empty', '', 'refuse'], ['blank lines', '\n\n  \n', 'refuse'],
    ['all invalid', 'oops\n{"prompt": 1}\n[]\nnull', 'refuse'], ['a 10,000-deep line', `${'['.repeat(10_000)}${']'.repeat(10_000)}`, 'refuse'],
    ['escape in a line', `\u001b[2J${good}`, 'refuse'], ['CRLF', `${good}\r\n${good}\r\n`, 'accept'], ['UTF-16', Buffer.from(`\ufeff${good}`, 'utf16le').toString('latin1'), 'refuse'],
    ['a 100 MB prompt line', `{"prompt": "${'a'.repeat(quick ? 10_000_000 : 100_000_000)}", "desired": "b"}`, 'accept'],
  ];
  const values = ['null', '1', '"x"', '[]', '{}', '"\\u001b[2J"', `"${'y'.repeat(100_000)}"`, 'true', '-1e308'];
  for (const k of ['prompt', 'desired', 'variants', 'id', 'lineEnd'])
    for (const v of values) lines.push([`${k} = ${v.slice(0, 20)}`, `{"prompt": "x = ", "desired": "1", "${k}": ${v}}`, 'either']);
  const n = quick ? 40 : 120;
  for (let i = 0; i < n; i++) {
    const text = Array.from({ length: 1 + Math.floor(rand() * 5) }, () => {
      const c = good.split('');
      c[Math.floor(rand() * c.length)] = '{}[],:"\\ x\u001b\n'[Math.floor(rand() * 13)];
      return c.join('');
    }).join('\n');
    lines.push([`random lines ${i}`, text, 'either']);
  }
  for (const [what, text, expect] of lines) {
    const file = path.join(dir, 'cases.jsonl');
    fs.writeFileSync(file, text);
    const warnings: string[] = [];
    const t0 = Date.now();
    try {
      const cases = readCases(file, (m) => warnings.push(m));
      if (Date.now() - t0 > 30_000) record('case files', what, 'hang', `${Date.now() - t0} ms`);
      else if (expect === 'refuse') record('case files', what, 'silent', `${cases.length} cases`);
      else if (!cases.length || cases.some((c) => typeof c.prompt !== 'string' || typeof c.desired !== 'string')) record('case files', what, 'silent', 'bad cases');
      else if (warnings.some((w) => RAW_CONTROL.test(w) || w.length > 5000)) record('case files', what, 'crash', 'a raw or huge warning');
      else record('case files', what, 'accepted');
    } catch (e) {
      const c = classifyError(e);
      record('case files', what, c.outcome === 'clear' && expect === 'accept' ? 'crash' : c.outcome, c.detail || (expect === 'accept' ? 'a valid file refused' : ''));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Webview messages: only the exact shapes pass.

function fuzzWebviewMessages(rand: () => number): void {
  const valid = [{ type: 'ready' }, ...['apply', 'discard', 'otherMethod', 'export'].map((action) => ({ type: 'action', action, patchId: 'abc' }))];
  for (const m of valid) record('webview messages', 'valid', isWebviewMessage(m) ? 'accepted' : 'crash', 'valid message refused');
  const junk: unknown[] = [null, undefined, 1, 'ready', [], [{ type: 'ready' }], {}, { type: 'READY' }, { type: 'ready', extra: 1 }, { type: 'action' },
    { type: 'action', action: 'apply' }, { type: 'action', action: 'apply', patchId: '' }, { type: 'action', action: 'apply', patchId: 'x'.repeat(5000) },
    { type: 'action', action: 'rm -rf', patchId: 'a' }, { type: 'action', action: 'apply', patchId: 7 }, { type: 'action', action: 'apply', patchId: 'a', x: 1 },
    Object.create({ type: 'ready' }), JSON.parse('{"__proto__": {"type": "ready"}}'), { type: 'action', action: ['apply'], patchId: 'a' }];
  const keys = ['type', 'action', 'patchId', 'x', '__proto__', 'constructor'];
  const vals = [null, 1, 'ready', 'action', 'apply', 'export', '', 'a'.repeat(300), {}, [], true, '\u001b[2J'];
  for (let i = 0; i < 130; i++) {
    const o: Record<string, unknown> = {};
    for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) o[keys[Math.floor(rand() * keys.length)]] = vals[Math.floor(rand() * vals.length)];
    junk.push(o);
  }
  for (const m of junk) {
    const isValid = valid.some((v) => JSON.stringify(v) === JSON.stringify(m) && m !== null && Object.getPrototypeOf(m) === Object.prototype && Object.keys(m as object).length === Object.keys(v).length);
    try {
      const ok = isWebviewMessage(m);
      record('webview messages', JSON.stringify(m)?.slice(0, 60) ?? String(m), ok === isValid ? (ok ? 'accepted' : 'clear') : ok ? 'silent' : 'crash', ok ? 'passed validation' : 'a valid one refused');
    } catch (e) {
      record('webview messages', String(m), 'crash', (e as Error).message);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The instrumented-graph cache.

async function fuzzCache(base: string, reference: { layers: number; width: number; completion: string }, rand: () => number, quick: boolean): Promise<void> {
  const demo = path.join(ROOT, 'models', 'demo');
  const gpt2 = path.join(ROOT, 'models', 'demo-gpt2');
  const cache = path.join(base, 'cache');
  const loadOnce = async (dir: string, cacheDir?: string) => {
    const m = await loadModel(dir, cacheDir ? { cacheDir } : {});
    try {
      return { layers: m.info.layers, width: m.info.width, completion: (await m.generate('import os\n\ndef main(', { maxNewTokens: 6 })).completion, entry: m.loaded.cacheDir };
    } finally {
      await m.dispose();
    }
  };
  const first = await loadOnce(demo, cache);
  const meta = path.join(first.entry, 'instrumented.json');
  const graph = path.join(first.entry, 'model.instrumented.onnx');
  const goodMeta = fs.readFileSync(meta, 'utf8');
  const goodGraph = fs.readFileSync(graph);
  const other = fs.existsSync(gpt2) ? await loadOnce(gpt2, cache) : undefined;
  const harms: [string, () => void][] = [
    ['meta empty', () => fs.writeFileSync(meta, '')], ['meta garbage', () => fs.writeFileSync(meta, '\u0000\u00ff\u001b[2J')],
    ['meta null', () => fs.writeFileSync(meta, 'null')], ['meta []', () => fs.writeFileSync(meta, '[]')],
    ['meta without graph', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(goodMeta), graph: undefined }))],
    ['meta graph {}', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(goodMeta), graph: {} }))],
    ['meta graph sites []', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(goodMeta), graph: { ...JSON.parse(goodMeta).graph, sites: [] } }))],
    ['meta old version', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(goodMeta), version: 1 }))],
    ['meta 10,000 deep', () => fs.writeFileSync(meta, `${'['.repeat(10_000)}${']'.repeat(10_000)}`)],
    ['graph missing', () => fs.rmSync(graph)], ['graph empty', () => fs.writeFileSync(graph, '')],
    ['graph flipped bytes', () => { const b = Buffer.from(goodGraph); b.fill(7, b.length >> 1, (b.length >> 1) + 64); fs.writeFileSync(graph, b); }],
    ['graph truncated', () => fs.writeFileSync(graph, goodGraph.subarray(0, goodGraph.length >> 1))],
    ['meta hash of another model', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(goodMeta), hash: 'f'.repeat(64) }))],
  ];
  for (let i = 0; i < (quick ? 5 : 25); i++) {
    const at = Math.floor(rand() * goodMeta.length);
    harms.push([`meta cut at ${at}`, () => fs.writeFileSync(meta, goodMeta.slice(0, at))]);
  }
  if (other) {
    harms.push(['another model\'s entry under this key', () => {
      fs.copyFileSync(path.join(other.entry, 'instrumented.json'), meta);
      fs.copyFileSync(path.join(other.entry, 'model.instrumented.onnx'), graph);
    }]);
    harms.push(['another model\'s entry with this hash written in', () => {
      const m = JSON.parse(fs.readFileSync(path.join(other.entry, 'instrumented.json'), 'utf8'));
      fs.writeFileSync(meta, JSON.stringify({ ...m, hash: JSON.parse(goodMeta).hash }));
      fs.copyFileSync(path.join(other.entry, 'model.instrumented.onnx'), graph);
    }]);
  }
  for (const [what, harm] of harms) {
    fs.writeFileSync(meta, goodMeta);
    fs.writeFileSync(graph, goodGraph);
    harm();
    const r = await timed(() => loadOnce(demo, cache), 120_000);
    if (r.hang) record('caches', what, 'hang', `${r.ms} ms`);
    else if (r.error) record('caches', what, 'crash', classifyError(r.error).detail || (r.error as Error).message.slice(0, 120));
    else if (r.value!.layers !== reference.layers || r.value!.width !== reference.width || r.value!.completion !== reference.completion) record('caches', what, 'silent', 'a wrong entry was used');
    else record('caches', what, 'clear'); // rebuilt and right
  }
  // Bad cache locations.
  const file = path.join(base, 'a-file');
  fs.writeFileSync(file, 'x');
  const saved = process.env.NEURONPATCH_CACHE;
  for (const where of [file, path.join(file, 'sub'), '/proc', '/proc/self/x', '/sys/kernel/x', '/dev/null', '/dev/null/x']) {
    process.env.NEURONPATCH_CACHE = where;
    const r = await timed(() => loadOnce(demo), 30_000);
    if (r.hang) record('caches', `NEURONPATCH_CACHE=${where}`, 'hang', `${r.ms} ms`);
    else if (r.error) record('caches', `NEURONPATCH_CACHE=${where}`, classifyError(r.error).outcome, classifyError(r.error).detail);
    else record('caches', `NEURONPATCH_CACHE=${where}`, 'silent', 'loaded with a cache there');
  }
  if (saved === undefined) delete process.env.NEURONPATCH_CACHE;
  else process.env.NEURONPATCH_CACHE = saved;
}

// ---------------------------------------------------------------------------------------------------------------
// Huge prompts.

async function fuzzPrompts(model: Model): Promise<void> {
  const line = 'def f(x):\n    return x + 1\n\n';
  for (const [what, prompt] of [
    ['1 MB prompt', line.repeat(40_000)], ['10 MB prompt', line.repeat(400_000)], ['100 MB prompt', line.repeat(4_000_000)],
    ['10 MB one line', 'x'.repeat(10_000_000)], ['10 MB of escapes', '\u001b[2J'.repeat(2_500_000)], ['empty prompt', ''],
    ['10 MB of newlines', '\n'.repeat(10_000_000)], ['lone surrogates', '\ud800'.repeat(1_000_000)],
  ] as const) {
    const r = await timed(() => model.generate(prompt, { maxNewTokens: 4 }), 60_000);
    if (r.hang) record('prompts', what, 'hang', `${r.ms} ms`);
    else if (r.error) record('prompts', what, classifyError(r.error).outcome, classifyError(r.error).detail);
    else record('prompts', what, 'accepted');
  }
  const r = await timed(() => repair(model.loaded, { prompt: 'x = ', desired: '1'.repeat(50_000_000) }), 60_000);
  record('prompts', '50 MB desired text', r.hang ? 'hang' : r.error ? classifyError(r.error).outcome : 'silent');
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrent writers and kill -9: child processes of this script in writer mode.

interface WriterArgs {
  file: string;
  info: ModelInfo;
  patch: Patch;
  id: string;
}

async function writerMain(argsFile: string): Promise<void> {
  const a = JSON.parse(fs.readFileSync(argsFile, 'utf8')) as WriterArgs;
  const store = await PatchStore.open(a.file, a.info);
  store.add({ ...a.patch, id: a.id });
  await store.save();
  process.stdout.write(`saved ${a.id}\n`);
}

function runWriter(argsFile: string, env: Record<string, string>): { child: ReturnType<typeof spawn>; done: Promise<{ code: number | null; out: string; err: string }> } {
  const child = spawn(process.execPath, [process.argv[1], '--writer', argsFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  return { child, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err }))) };
}

function idsIn(file: string): string[] | 'invalid' {
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as PatchFile).patches.map((p) => p.id);
  } catch {
    return 'invalid';
  }
}

async function fuzzWriters(base: string, info: ModelInfo, patch: Patch, rand: () => number, quick: boolean): Promise<void> {
  let k = 0;
  const args = (file: string, id: string): string => {
    const f = path.join(base, `args-${k++}.json`);
    fs.writeFileSync(f, JSON.stringify({ file, info, patch, id } satisfies WriterArgs));
    return f;
  };
  // Concurrent writers: 2 to 4 processes add one patch each to the same file, a delay injected inside the lock.
  for (let trial = 0; trial < (quick ? 4 : 12); trial++) {
    const dir = fs.mkdtempSync(path.join(base, 'conc-'));
    const file = path.join(dir, 'patches.json');
    const n = 2 + (trial % 3);
    const runs = await Promise.all(Array.from({ length: n }, (_, i) => runWriter(args(file, `t${trial}w${i}`), { NEURONPATCH_TEST_SAVE_DELAY_MS: String(Math.floor(rand() * 400)) }).done));
    const saved = runs.filter((r) => r.code === 0).map((r) => r.out.trim().replace('saved ', ''));
    const ids = idsIn(file);
    const what = `${n} concurrent writers`;
    if (ids === 'invalid') record('concurrent writers', what, 'lost', 'the file is not valid');
    else if (saved.some((id) => !ids.includes(id))) record('concurrent writers', what, 'lost', `${saved.length} saved, ${ids.length} in the file`);
    else if (runs.some((r) => r.code !== 0)) record('concurrent writers', what, classifyError(new Error(runs.find((r) => r.code !== 0)!.err)).outcome, runs.find((r) => r.code !== 0)!.err.slice(0, 160));
    else record('concurrent writers', what, 'accepted');
  }
  // kill -9 at a random moment of a save; then the file must be whole, hold every patch saved before, and the next
  // writer must succeed (taking over a stale lock) and sweep the temp files of the dead one.
  const dir = fs.mkdtempSync(path.join(base, 'kill-'));
  const file = path.join(dir, 'patches.json');
  const saved: string[] = [];
  for (let trial = 0; trial < (quick ? 10 : 40); trial++) {
    const id = `kill${trial}`;
    const w = runWriter(args(file, id), { NEURONPATCH_TEST_SAVE_DELAY_MS: String(Math.floor(rand() * 300)) });
    await new Promise((r) => setTimeout(r, 100 + rand() * 600));
    w.child.kill('SIGKILL');
    const r = await w.done;
    if (r.out.includes(`saved ${id}`)) saved.push(id);
    const ids = idsIn(file);
    const what = 'kill -9 mid-save';
    if (fs.existsSync(file) && ids === 'invalid') {
      record('kill -9', what, 'lost', 'half-written file');
      continue;
    }
    if (ids !== 'invalid' && saved.some((s) => !ids.includes(s))) {
      record('kill -9', what, 'lost', 'a saved patch is missing');
      continue;
    }
    // The next writer.
    const next = runWriter(args(file, `after${trial}`), {});
    const nr = await timed(() => next.done, 30_000);
    if (nr.hang) {
      next.child.kill('SIGKILL');
      record('kill -9', what, 'hang', 'the next writer waited over 30 s');
      continue;
    }
    if (nr.value!.code !== 0) {
      record('kill -9', what, 'crash', nr.value!.err.slice(0, 160));
      continue;
    }
    saved.push(`after${trial}`);
    const temps = fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));
    const after = idsIn(file);
    if (after === 'invalid' || saved.some((s) => !after.includes(s))) record('kill -9', what, 'lost', 'a saved patch is missing after the next write');
    else if (temps.length) record('kill -9', what, 'silent', `${temps.length} temp file(s) left after the next open`);
    else record('kill -9', what, 'clear', fs.existsSync(lockPathOf(file)) ? 'lock left' : '');
  }
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (process.argv[2] === '--writer') return writerMain(process.argv[3]);
  const opt = options({ seed: { type: 'string', default: '1' }, quick: { type: 'boolean', default: false } });
  const rand = mulberry32(Number(opt.seed));
  const quick = !!opt.quick;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-fuzz-'));
  process.env.NEURONPATCH_CACHE = path.join(base, 'home-cache');
  const t0 = Date.now();
  const say = (s: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)} s] ${s}\n`);
  try {
    const model = await loadModel(opt.model, { cacheDir: path.join(base, 'cache') });
    const c = JSON.parse(fs.readFileSync(path.join(ROOT, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[0]);
    const r = await repair(model.loaded, c, { method: 'minimal' });
    if (!r.success) throw new Error('the first dev case was not repaired: no real patch to corrupt');
    const reference = { layers: model.info.layers, width: model.info.width, completion: (await model.generate('import os\n\ndef main(', { maxNewTokens: 6 })).completion };
    const pf = fs.mkdtempSync(path.join(base, 'pf-'));
    say('patch files');
    await fuzzPatchFiles(pf, model.info, r.patch, rand, quick);
    say('case files');
    fuzzCaseFiles(fs.mkdtempSync(path.join(base, 'cases-')), rand, quick);
    say('webview messages');
    fuzzWebviewMessages(rand);
    say('prompts');
    await fuzzPrompts(model);
    await model.dispose();
    say('model folders');
    await fuzzModelFolders(fs.mkdtempSync(path.join(base, 'mf-')), path.join(base, 'cache'), rand, quick);
    say('caches');
    await fuzzCache(fs.mkdtempSync(path.join(base, 'cache-')), reference, rand, quick);
    say('concurrent writers and kill -9');
    await fuzzWriters(fs.mkdtempSync(path.join(base, 'w-')), model.info, r.patch, rand, quick);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
  const rows = [...table.entries()];
  const total = rows.reduce((acc, [, r]) => { acc.tried += r.tried; for (const o of OUTCOMES) acc.counts[o] += r.counts[o]; return acc; },
    { tried: 0, counts: { clear: 0, accepted: 0, crash: 0, hang: 0, silent: 0, lost: 0 } as Record<Outcome, number> });
  if (opt.json) {
    process.stdout.write(`${JSON.stringify({ seed: Number(opt.seed), quick, seconds: (Date.now() - t0) / 1000, rows: Object.fromEntries(rows), total })}\n`);
    return;
  }
  const line = (name: string, r: { tried: number; counts: Record<Outcome, number> }) =>
    `| ${name} | ${r.tried} | ${r.counts.clear} | ${r.counts.accepted} | ${r.counts.crash} | ${r.counts.hang} | ${r.counts.silent} | ${r.counts.lost} |`;
  process.stdout.write([
    `Hostile-input fuzz, seed ${opt.seed}${quick ? ' (quick)' : ''}, ${((Date.now() - t0) / 1000).toFixed(0)} s`, '',
    '| inputs | tried | clear error | accepted (valid) | crash | hang | silent acceptance | data lost |', '|---|---|---|---|---|---|---|---|',
    ...rows.map(([name, r]) => line(name, r)), line('**all**', total), '',
    ...rows.flatMap(([name, r]) => r.examples.map((e) => `- ${name}: ${e}`)), '',
  ].join('\n'));
  process.exitCode = total.counts.crash + total.counts.hang + total.counts.silent + total.counts.lost ? 1 : 0;
}

main().catch((e) => {
  process.stderr.write(`fuzz: ${(e as Error).stack}\n`);
  process.exitCode = 2;
});
