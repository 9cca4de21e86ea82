#!/usr/bin/env node
// Harvests the development repair cases and the regression prompts from the demo model's held-out files.
//
//   node tools/cases/harvest.mjs [--model models/demo] [--out bench/cases] [--cases 240] [--regression 240]
//                                [--seed 1234] [--threads N]
//
// Corpus and split are tools/demo-model/corpus.py's (the held-out tenth, printed by tools/cases/heldout.py). The
// held-out files are split in two by a hash of the path: dev cases come from one half, regression prompts from
// the other. A prompt is a file's text up to the start of a line, cut from the left at a line boundary so that it
// has at most --max-prompt-tokens tokens (200 by default, well inside the model's context window: a repair traces
// every prompt token, and short prompts keep the repair tests and benches fast); `desired` is
// that line's true text. A line becomes a case only where the model's greedy line (the engine's `generate`:
// healed boundary, end-of-line stop, the CLI's defaults) differs from it. The same line elsewhere in the dev
// half, where the model fails it too, becomes a variant. Everything is deterministic: sorted files, a seeded
// shuffle, greedy decoding. Writes dev.jsonl, regression.jsonl and README.md (the statistics) to --out.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadEngine } from './load-engine.mjs';
import { isCandidate, promptFor } from './lines.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'models', 'demo') },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'cases') },
    cases: { type: 'string', default: '240' },
    regression: { type: 'string', default: '240' },
    variants: { type: 'string', default: '3' },
    'variant-tries': { type: 'string', default: '6' },
    'max-prompt-tokens': { type: 'string', default: '200' },
    seed: { type: 'string', default: '1234' },
    threads: { type: 'string' },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});
const N_CASES = Number(opt.cases);
const N_REGRESSION = Number(opt.regression);
const MAX_VARIANTS = Number(opt.variants);
const VARIANT_TRIES = Number(opt['variant-tries']);
const MAX_PROMPT_TOKENS = Number(opt['max-prompt-tokens']);
const SEED = Number(opt.seed);
const started = performance.now();
const log = (s) => process.stderr.write(`harvest: ${s}\n`);

// ---------------------------------------------------------------- the engine, in-process
const { engine, model } = await loadEngine(opt.model, opt.threads);
const MAX_NEW = engine.DEFAULT_MAX_NEW_TOKENS;
if (MAX_PROMPT_TOKENS + MAX_NEW > model.info.context) {
  throw new Error(`--max-prompt-tokens ${MAX_PROMPT_TOKENS} + ${MAX_NEW} new tokens exceed the context of ${model.info.context}`);
}
let generations = 0;
let generateMs = 0;
async function greedyLine(prompt) {
  const t = performance.now();
  const [c] = await engine.generate(model, [prompt], { maxNewTokens: MAX_NEW });
  generateMs += performance.now() - t;
  generations++;
  return c.completion;
}
const countTokens = (text) => model.tokenizer.encode(text).length;

// ---------------------------------------------------------------- corpus and split
const held = JSON.parse(execFileSync(opt.python, [path.join(ROOT, 'tools', 'cases', 'heldout.py')], {
  encoding: 'utf8', maxBuffer: 1 << 30,
}));
const files = held.files.map(([rel, text]) => ({ rel, lines: text.split('\n') })).sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
const half = (rel) => createHash('sha256').update(`neuronpatch-cases:${rel}`).digest()[0] & 1;
const devFiles = files.filter((f) => half(f.rel) === 0);
const regFiles = files.filter((f) => half(f.rel) === 1);

const random = engine.mulberry32(SEED);
function shuffle(a) {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Candidate lines in a fair order: files shuffled, lines shuffled within each file, then taken round-robin. */
function roundRobin(group) {
  const perFile = shuffle(group.map((f) => ({ f, ks: shuffle(f.lines.map((_, k) => k).filter((k) => isCandidate(f, k))) })));
  const out = [];
  for (let r = 0; perFile.some((p) => r < p.ks.length); r++) for (const p of perFile) if (r < p.ks.length) out.push({ f: p.f, k: p.ks[r] });
  return out;
}

// ---------------------------------------------------------------- dev cases
const devOrder = roundRobin(devFiles);
const byLine = new Map(); // stripped line → its positions in the dev half, in file and line order
for (const f of devFiles) f.lines.forEach((_, k) => {
  if (!isCandidate(f, k)) return;
  const key = f.lines[k].trim();
  if (!byLine.has(key)) byLine.set(key, []);
  byLine.get(key).push({ f, k });
});

const cases = [];
const used = new Set();
let devTried = 0;
let devExact = 0;
let skippedLong = 0;
const variantStats = { candidates: 0, tried: 0, alreadyRight: 0, kept: 0 };
for (const { f, k } of devOrder) {
  if (cases.length >= N_CASES) break;
  const desired = f.lines[k];
  const key = desired.trim();
  if (used.has(key)) continue;
  const p = promptFor(f, k, MAX_PROMPT_TOKENS, countTokens);
  if (!p) {
    skippedLong++;
    continue;
  }
  const got = await greedyLine(p.prompt);
  devTried++;
  if (got === desired) {
    devExact++;
    continue;
  }
  used.add(key);
  const variants = [];
  const others = (byLine.get(key) ?? []).filter((o) => !(o.f === f && o.k === k));
  variantStats.candidates += others.length;
  for (const o of others.slice(0, VARIANT_TRIES)) {
    if (variants.length >= MAX_VARIANTS) break;
    const vp = promptFor(o.f, o.k, MAX_PROMPT_TOKENS, countTokens);
    if (!vp) continue;
    const vgot = await greedyLine(vp.prompt);
    variantStats.tried++;
    if (vgot === o.f.lines[o.k]) {
      variantStats.alreadyRight++;
      continue;
    }
    variants.push({ prompt: vp.prompt, desired: o.f.lines[o.k], source: `${o.f.rel}:${o.k + 1}`, before: vgot });
  }
  variantStats.kept += variants.length;
  cases.push({
    id: `dev-${String(cases.length + 1).padStart(4, '0')}`, prompt: p.prompt, desired, variants,
    source: `${f.rel}:${k + 1}`, before: got, promptTokens: p.tokens,
  });
  if (cases.length % 40 === 0) log(`${cases.length} cases from ${devTried} lines (${((performance.now() - started) / 1000).toFixed(0)} s)`);
}

// ---------------------------------------------------------------- regression prompts
const regression = [];
let regExact = 0;
for (const { f, k } of roundRobin(regFiles)) {
  if (regression.length >= N_REGRESSION) break;
  const p = promptFor(f, k, MAX_PROMPT_TOKENS, countTokens);
  if (!p) continue;
  const got = await greedyLine(p.prompt);
  if (got === f.lines[k]) regExact++;
  regression.push({ prompt: p.prompt, source: `${f.rel}:${k + 1}`, promptTokens: p.tokens });
}
await model.release();

// ---------------------------------------------------------------- files and statistics
mkdirSync(opt.out, { recursive: true });
const jsonl = (rows) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
writeFileSync(path.join(opt.out, 'dev.jsonl'), jsonl(cases));
writeFileSync(path.join(opt.out, 'regression.jsonl'), jsonl(regression));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const pct = (a, b) => `${((100 * a) / b).toFixed(1)} %`;
const seconds = (performance.now() - started) / 1000;
const stats = {
  model: model.info.name, hash: model.info.hash, heldOutFiles: files.length, devFiles: devFiles.length, regressionFiles: regFiles.length,
  devCandidateLines: devOrder.length, devLinesTried: devTried, devExact, failuresFound: cases.length,
  casesWithVariants: cases.filter((c) => c.variants.length).length, ...variantStats,
  regressionPrompts: regression.length, regressionExact: regExact, skippedLong,
  medianPromptTokens: median(cases.map((c) => c.promptTokens)), maxPromptTokens: Math.max(...cases.map((c) => c.promptTokens), ...regression.map((r) => r.promptTokens)),
  medianDesiredChars: median(cases.map((c) => c.desired.length)),
  generations, meanGenerateMs: generations ? generateMs / generations : 0, seconds,
};
const readme = `# Development repair cases

Written by \`node tools/cases/harvest.mjs\` (${new Date().toISOString().slice(0, 10)}); do not edit by hand: rerun it after the demo model
changes. Model \`${stats.model}\` (sha256 \`${stats.hash.slice(0, 16)}…\`).

## Files
- \`dev.jsonl\`: ${cases.length} real failures of the model on held-out files, one JSON object a line:
  \`{"id", "prompt", "desired", "variants": [{"prompt", "desired", "source", "before"}], "source", "before", "promptTokens"}\`.
  \`prompt\` is a held-out file's text up to the start of a line (cut from the left at a line boundary to at most
  ${MAX_PROMPT_TOKENS} tokens, leaving the rest of the ${model.info.context}-token context to the completion); \`desired\` is that line's
  true text; \`before\` is the model's greedy line there (\`neuronpatch generate\`: healed boundary, end-of-line stop,
  ${MAX_NEW} new tokens at most), which differs from \`desired\`; \`source\` is \`file:line\` under the corpus root.
  \`variants\` are other places in the same half of the held-out files where the same line (stripped of
  indentation) comes next and the model gets it wrong too (at most ${MAX_VARIANTS} a case, from the first ${VARIANT_TRIES} such places).
- \`regression.jsonl\`: ${regression.length} prompts \`{"prompt", "source", "promptTokens"}\` of the same shape from the other
  half of the held-out files, for side-effect checks.

## How they were drawn
- Corpus and split: \`tools/demo-model/corpus.py\` (the held-out tenth: ${files.length} files under \`${held.root}\`),
  split in two by sha256 of the path: ${devFiles.length} files for cases, ${regFiles.length} for regression prompts.
- Candidate lines: 4–80 characters of code after stripping, no trailing whitespace, not a comment, at least the
  fourth line of its file. Files and lines are shuffled (seed ${SEED}) and taken round-robin, one line per
  file a round; a line whose stripped text is already a case is skipped.

## Statistics (measured by this run)
| | |
|---|---|
| held-out files (dev half / regression half) | ${files.length} (${devFiles.length} / ${regFiles.length}) |
| candidate lines in the dev half | ${devOrder.length} |
| lines tried (greedy line generated) | ${devTried} |
| failures found (dev cases) | ${cases.length} |
| model's exact-match rate on the dev lines tried | ${pct(devExact, devTried)} (${devExact} / ${devTried}) |
| model's exact-match rate on the regression prompts' true lines | ${pct(regExact, regression.length)} (${regExact} / ${regression.length}) |
| cases with variants | ${stats.casesWithVariants} (${variantStats.kept} variants; ${variantStats.tried} places tried, ${variantStats.alreadyRight} already right and left out) |
| prompt tokens: median (cases) / max (all) | ${stats.medianPromptTokens} / ${stats.maxPromptTokens} |
| desired line, median characters | ${stats.medianDesiredChars} |
| greedy generations / mean ms each | ${generations} / ${stats.meanGenerateMs.toFixed(1)} |
| harvest time | ${seconds.toFixed(0)} s |
`;
writeFileSync(path.join(opt.out, 'README.md'), readme);
process.stdout.write(`${JSON.stringify(stats)}\n`);
