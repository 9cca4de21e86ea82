#!/usr/bin/env node
// Repair, measured: `neuronpatch eval` with the minimal and the joint method, and the SGD baseline
// (tools/baseline/sgd.py: fine-tuning every down_proj weight of the PyTorch twin), on the same first N cases of
// bench/cases/dev.jsonl with bench/cases/regression.jsonl, printed side by side. The time of one generation of
// each case's bad completion is measured with `neuronpatch generate --prompts` (per prompt, model loaded), so that
// repair time reads as a multiple of it.
//   npm run bench:repair -- [--limit 40] [--methods minimal,joint,sgd] [--model DIR] [--cases F] [--regression F]
//                           [--regression-limit N] [--sgd-max-steps 30] [--sgd-reduction sum|mean] [--no-build] [--json]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    limit: { type: 'string', default: '40' },
    methods: { type: 'string', default: 'minimal,joint,sgd' },
    model: { type: 'string', default: path.join(ROOT, 'models', 'demo') },
    cases: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'dev.jsonl') },
    regression: { type: 'string', default: path.join(ROOT, 'bench', 'cases', 'regression.jsonl') },
    'regression-limit': { type: 'string' },
    'sgd-max-steps': { type: 'string', default: '30' },
    'sgd-reduction': { type: 'string', default: 'sum' },
    python: { type: 'string', default: '/usr/bin/python3' },
    'no-build': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const limit = Number(opt.limit);
const methods = opt.methods.split(',').map((m) => m.trim()).filter(Boolean);
const log = (s) => process.stderr.write(`bench/repair: ${s}\n`);
const cli = path.join(ROOT, 'dist', 'cli.js');
const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mean = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  return s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
};

if (!opt['no-build']) execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--no-tsc'], { cwd: ROOT, stdio: 'inherit' });

const cases = readFileSync(opt.cases, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)).slice(0, limit);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-bench-'));
let regression = opt.regression;
if (opt['regression-limit']) {
  regression = path.join(tmp, 'regression.jsonl');
  const lines = readFileSync(opt.regression, 'utf8').split('\n').filter((l) => l.trim()).slice(0, Number(opt['regression-limit']));
  writeFileSync(regression, `${lines.join('\n')}\n`);
}
const regressionCount = readFileSync(regression, 'utf8').split('\n').filter((l) => l.trim()).length;

/** Runs a command, passes its stderr through, returns the last JSON line of its stdout and its wall time. */
function runJson(cmd, args, what) {
  const started = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 30 });
  const wallS = (performance.now() - started) / 1000;
  const lines = (r.stdout ?? '').trim().split('\n').filter(Boolean);
  if (r.status !== 0 || !lines.length) {
    log(`${what} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''})`);
    return { error: `exit ${r.status}`, wallS };
  }
  return { lines: lines.map((l) => JSON.parse(l)), wallS };
}

// One generation of each case's bad completion, timed by the engine (model load excluded).
const casesFile = path.join(tmp, 'cases.jsonl');
writeFileSync(casesFile, cases.map((c) => JSON.stringify({ prompt: c.prompt })).join('\n') + '\n');
log(`timing one generation of each of ${cases.length} bad completions`);
const gen = runJson(process.execPath, [cli, 'generate', '--model', opt.model, '--prompts', casesFile, '--json'], 'generate');
const genMs = new Map();
let sameBefore = 0;
(gen.lines ?? []).forEach((g, i) => {
  genMs.set(cases[i].id, g.ms);
  if (g.completion === cases[i].before) sameBefore++;
});

const columns = [];
for (const method of methods) {
  let res;
  if (method === 'sgd') {
    log(`SGD baseline on ${cases.length} cases`);
    res = runJson(opt.python, [path.join(ROOT, 'tools', 'baseline', 'sgd.py'), '--model', opt.model, '--cases', opt.cases, '--regression', regression,
      '--limit', String(limit), '--max-steps', opt['sgd-max-steps'], '--reduction', opt['sgd-reduction']], 'sgd');
  } else {
    log(`neuronpatch eval --method ${method} on ${cases.length} cases`);
    res = runJson(process.execPath, [cli, 'eval', '--model', opt.model, '--cases', opt.cases, '--regression', regression, '--method', method,
      '--limit', String(limit), '--json'], `eval --method ${method}`);
  }
  if (res.error) {
    columns.push({ method, error: res.error, wallS: res.wallS });
    continue;
  }
  const out = res.lines[res.lines.length - 1];
  const results = Array.isArray(out.results) ? out.results : [];
  const tried = results.filter((r) => !r.alreadyCorrect && !r.skipped);
  const fixed = tried.filter((r) => r.success);
  const neurons = (r) => (typeof r.neurons === 'number' ? r.neurons : Array.isArray(r.neurons) ? r.neurons.length : undefined);
  const ms = (r) => r.ms;
  // Repair time over one generation of the same bad completion: the engine's generation for every method, and
  // for SGD also its own (PyTorch) generation.
  const ratios = tried.map((r) => (genMs.has(r.id) && ms(r) !== undefined ? ms(r) / genMs.get(r.id) : undefined));
  columns.push({
    method,
    cases: out.cases ?? tried.length,
    alreadyCorrect: out.alreadyCorrect ?? results.length - tried.length,
    successRate: out.successRate ?? (tried.length ? fixed.length / tried.length : null),
    // minimal falls back to the joint solver where its greedy search runs out of budget; these say how often.
    ownSuccessRate: out.ownSuccessRate ?? null,
    fallbacks: out.fallbacks ?? null,
    medianNeurons: out.medianNeurons ?? median(fixed.map(neurons)),
    neuronsPerFailingToken: out.neuronsPerFailingToken ?? median(fixed.map((r) => neurons(r) / Math.max(r.failingTokens ?? 1, 1))),
    // Side effects and generalization over the fixed cases, as `neuronpatch eval` aggregates them.
    specificity: out.specificity ?? mean(fixed.map((r) => r.specificity)),
    nextTokenSpecificity: out.nextTokenSpecificity ?? mean(fixed.map((r) => r.nextTokenSpecificity)),
    meanKl: out.meanKl ?? mean(fixed.map((r) => r.meanKl)),
    generalization: out.generalization ?? mean(fixed.map((r) => r.generalization)),
    medianMs: out.medianMs ?? median(tried.map(ms)),
    repairOverGeneration: median(ratios),
    ownRepairOverGeneration: out.medianRepairToGeneration ?? out.repairToGeneration ?? null,
    wallS: res.wallS,
  });
}
rmSync(tmp, { recursive: true, force: true });

const medianGenMs = median([...genMs.values()]);
const summary = { model: opt.model, cases: cases.length, regressionPrompts: regressionCount, medianGenerationMs: medianGenMs, generateMatchesBefore: sameBefore, columns };
if (opt.json) {
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} else {
  const pct = (x) => (x === null || x === undefined ? 'n/a' : `${(100 * x).toFixed(1)} %`);
  const num = (x, d = 1) => (x === null || x === undefined ? 'n/a' : Number(x).toFixed(d));
  const label = { minimal: 'minimal (MINT-style)', joint: 'joint (ASTRA-style)', sgd: `SGD on down_proj (baseline, ${opt['sgd-reduction']} CE)` };
  const rows = [
    ['cases repaired from the original model', (c) => num(c.cases, 0)],
    ['already right (left out)', (c) => num(c.alreadyCorrect, 0)],
    ['success rate (greedy line = desired)', (c) => pct(c.successRate)],
    ['  fixed by the method alone', (c) => (c.ownSuccessRate === null ? '–' : pct(c.ownSuccessRate))],
    ['  cases that fell back to the joint solver', (c) => (c.fallbacks === null ? '–' : num(c.fallbacks, 0))],
    ['median neurons edited', (c) => num(c.medianNeurons)],
    ['neurons per failing token (median)', (c) => num(c.neuronsPerFailingToken, 2)],
    [`specificity (${regressionCount} regression lines unchanged)`, (c) => pct(c.specificity)],
    ['  next token unchanged', (c) => pct(c.nextTokenSpecificity)],
    ['mean next-token KL on regression prompts', (c) => (c.meanKl === null || c.meanKl === undefined ? 'n/a' : Number(c.meanKl).toExponential(2))],
    ['generalization (variants fixed)', (c) => pct(c.generalization)],
    ['median repair time ms', (c) => num(c.medianMs, 0)],
    [`repair / one engine generation (${num(medianGenMs, 0)} ms median)`, (c) => `${num(c.repairOverGeneration)}×`],
    ['repair / one generation in its own runtime', (c) => (c.ownRepairOverGeneration === null ? '–' : `${num(c.ownRepairOverGeneration)}×`)],
    ['wall time of the whole run s', (c) => num(c.wallS, 0)],
  ];
  const cols = columns.map((c) => (c.error ? { ...c, failed: true } : c));
  const out = [
    `repair on the first ${cases.length} cases of ${path.relative(ROOT, opt.cases)}, ${regressionCount} regression prompts, model ${opt.model}`,
    `(\`neuronpatch generate\` reproduced the recorded bad completion for ${sameBefore}/${cases.length} cases)`,
    '',
    `| | ${cols.map((c) => label[c.method] ?? c.method).join(' | ')} |`,
    `|---|${cols.map(() => '---').join('|')}|`,
    ...rows.map(([name, f]) => `| ${name} | ${cols.map((c) => (c.failed ? `failed (${c.error})` : f(c))).join(' | ')} |`),
    '',
  ];
  process.stdout.write(out.join('\n'));
}
