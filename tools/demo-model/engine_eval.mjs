#!/usr/bin/env node
// Measures a demo model as the extension uses it, with the engine's own decoding; build.py writes the figures
// into MODEL_CARD.md.
//
//   node tools/demo-model/engine_eval.mjs [--model models/demo] [--lines 200] [--seed 14] [--latency 10] [--windows 16]
//
// - Exact lines: candidate lines of the held-out standard-library files (tools/cases/heldout.py; the rule of
//   tools/cases/harvest.mjs: 4–80 characters of code, not a comment, no trailing whitespace, at least the fourth
//   line), files sorted, lines shuffled with a seeded mulberry32 and the first --lines taken. Each prompt is the
//   file's text up to the start of the line, cut from the left at a line boundary to fit the context window less
//   the completion's 48 tokens; the completion is the engine's `generate` (healed boundary, greedy, end-of-line
//   stop), exactly what `neuronpatch generate` and the editor's ghost text run. Exact = the completed line equals
//   the true line, indentation included.
// - Latency: the first ghost text on a warm model (one generation done before): wall-clock ms of `generate` for
//   one line after a prompt filling the window less the completion (--latency prompts, median and max).
// - Samples: the first ten sampled lines, prompt's last line, true line, model's line.
// - Next token (teacher forced, --windows N > 0): top-1 / top-5 over N seeded windows of --window tokens (default:
//   the model's context) of the held-out standard-library files and of pip, setuptools and wheel (never trained
//   on), each stream the files' ids joined by id 0; the same measure for any model folder, old or new.
// Prints one JSON object on stdout.
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadEngine } from '../cases/load-engine.mjs';
import { isCandidate, promptFor } from '../cases/lines.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'models', 'demo') },
    lines: { type: 'string', default: '200' },
    latency: { type: 'string', default: '10' },
    seed: { type: 'string', default: '14' },
    'max-prompt-tokens': { type: 'string' },
    python: { type: 'string', default: '/usr/bin/python3' },
    threads: { type: 'string' },
    windows: { type: 'string', default: '0' },
    window: { type: 'string' },
  },
});
const log = (s) => process.stderr.write(`engine_eval: ${s}\n`);

const { engine, model } = await loadEngine(opt.model, opt.threads);
const MAX_NEW = engine.DEFAULT_MAX_NEW_TOKENS;
const budget = opt['max-prompt-tokens'] ? Number(opt['max-prompt-tokens']) : model.info.context - MAX_NEW - 1;
const countTokens = (text) => model.tokenizer.encode(text).length;

const held = JSON.parse(execFileSync(opt.python, [path.join(ROOT, 'tools', 'cases', 'heldout.py')], {
  encoding: 'utf8', maxBuffer: 1 << 30,
}));
const files = held.files.map(([rel, text]) => ({ rel, lines: text.split('\n') }))
  .sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));

const random = engine.mulberry32(Number(opt.seed));
const all = [];
for (const f of files) f.lines.forEach((_, k) => { if (isCandidate(f, k)) all.push({ f, k }); });
for (let i = all.length - 1; i > 0; i--) {
  const j = Math.floor(random() * (i + 1));
  [all[i], all[j]] = [all[j], all[i]];
}
const picked = all.slice(0, Number(opt.lines));

const line = async (prompt) => (await engine.generate(model, [prompt], { maxNewTokens: MAX_NEW }))[0].completion;
await line('import os\n'); // warm: the first run of a session pays for its set-up

let exact = 0;
let promptTokens = 0;
const samples = [];
const t0 = performance.now();
for (const [i, { f, k }] of picked.entries()) {
  const p = promptFor(f, k, budget, countTokens);
  const got = await line(p.prompt);
  if (got === f.lines[k]) exact++;
  promptTokens += p.tokens;
  if (samples.length < 10) {
    samples.push({ file: f.rel, line: k + 1, context: f.lines[k - 1], true: f.lines[k], model: got, same: got === f.lines[k] });
  }
  if ((i + 1) % 50 === 0) log(`${i + 1} lines, ${exact} exact (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

// Latency: prompts that fill the window less the completion, from the longest held-out files.
const long = files.filter((f) => countTokens(f.lines.join('\n')) > budget + 200).slice(0, Number(opt.latency));
const ms = [];
for (const f of long) {
  let k = f.lines.length - 2;
  while (k > 3 && !isCandidate(f, k)) k--;
  const p = promptFor(f, k, budget, countTokens);
  const t = performance.now();
  await line(p.prompt);
  ms.push({ ms: performance.now() - t, tokens: p.tokens });
}
ms.sort((a, b) => a.ms - b.ms);
/** Top-1 / top-5 next-token accuracy of the model's own forward over seeded windows of a token stream. */
async function teacher(docs, n, len, seed) {
  const stream = [];
  for (const text of docs) stream.push(...model.tokenizer.encode(text), 0);
  const rnd = engine.mulberry32(seed);
  let top1 = 0;
  let top5 = 0;
  let count = 0;
  for (let w = 0; w < n; w++) {
    const s = Math.floor(rnd() * (stream.length - len - 1));
    const ids = stream.slice(s, s + len + 1);
    const r = await model.session.forward({ ids: [ids.slice(0, len)] });
    const V = r.logits.length / r.logitPositions;
    for (let i = 0; i < len; i++) {
      const row = r.logits.subarray(i * V, (i + 1) * V);
      const want = row[ids[i + 1]];
      let above = 0;
      for (let v = 0; v < V; v++) if (row[v] > want) above++;
      if (above === 0) top1++;
      if (above < 5) top5++;
      count++;
    }
  }
  return { top1: top1 / count, top5: top5 / count, tokens: count, window: len };
}
let nextToken;
if (Number(opt.windows) > 0) {
  const len = opt.window ? Number(opt.window) : Math.min(model.info.context, 1024);
  const unlike = JSON.parse(execFileSync(opt.python, ['-c',
    'import json, sys; sys.path.insert(0, sys.argv[1]); import corpus; json.dump([t for _, t in sorted(corpus.unlike_files())], sys.stdout)',
    path.join(ROOT, 'tools', 'demo-model')], { encoding: 'utf8', maxBuffer: 1 << 30 }));
  nextToken = {
    heldOut: await teacher(files.map((f) => f.lines.join('\n')), Number(opt.windows), len, 1),
    unlike: await teacher(unlike, Number(opt.windows), len, 2),
  };
}
await model.release();
const result = {
  model: model.info.name, context: model.info.context, maxPromptTokens: budget, lines: picked.length, exact,
  exactRate: exact / picked.length, meanPromptTokens: promptTokens / picked.length, seed: Number(opt.seed),
  latency: {
    prompts: ms.length, medianMs: ms.length ? ms[Math.floor((ms.length - 1) / 2)].ms : NaN,
    maxMs: ms.length ? ms[ms.length - 1].ms : NaN, loadAverage: loadavg()[0], meanPromptTokens: ms.reduce((a, b) => a + b.tokens, 0) / Math.max(1, ms.length),
  },
  samples, nextToken,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
