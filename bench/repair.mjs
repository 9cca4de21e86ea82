#!/usr/bin/env node
// Repair, measured: `neuronpatch eval` with the minimal, joint and keyed methods, and two baselines of
// tools/baseline/sgd.py on the PyTorch twin (SGD on every down_proj weight; the MINT re-implementation), on the same
// first N cases of bench/cases/dev.jsonl, printed side by side. Each case is repaired from the original weights.
// Side effects are measured by the engine for every method (repair/measures.ts; the baselines' weight changes are
// fed to it as value-vector edits by bench/measure-deltas.ts), on the same sets:
//   bench/cases/regression.jsonl is split in two: its odd lines are the REFERENCE code the methods are given
//   (reference statistics, the keyed thresholds) and the GUARD lines are harvested from it (`neuronpatch guard`:
//   lines of that code the model completes exactly right, from the line start or after its first word); its even
//   lines are the EVALUATION prompts (token locality on their greedy continuations, next token, KL, lines
//   unchanged, held-out loss over their text) and the UNSEEN guard lines are harvested from them (no method sees
//   them: "kept, unseen" is the fair comparison; "kept" on the given guard is what a user's accepted completions get).
// The time of one generation of each case's bad completion is measured with `neuronpatch generate --prompts`, so
// that repair time reads as a multiple of it.
//   npm run bench:repair -- [--limit 40] [--methods minimal,joint,keyed,sgd,mint] [--key-margins 0.5] [--model DIR]
//        [--cases F] [--regression F] [--regression-limit N] [--sgd-max-steps 30] [--sgd-reduction sum|mean]
//        [--no-build] [--json]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    limit: { type: 'string', default: '40' },
    methods: { type: 'string', default: 'minimal,joint,keyed,sgd,mint' },
    'key-margins': { type: 'string', default: '0.5' },
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
const allRegression = readFileSync(opt.regression, 'utf8').split('\n').filter((l) => l.trim());
const cap = opt['regression-limit'] ? Number(opt['regression-limit']) : Infinity;
const referenceLines = allRegression.filter((_, i) => i % 2 === 0).slice(0, cap);
const evaluationLines = allRegression.filter((_, i) => i % 2 === 1).slice(0, cap);
const reference = path.join(tmp, 'reference.jsonl');
const regression = path.join(tmp, 'evaluation.jsonl');
writeFileSync(reference, `${referenceLines.join('\n')}\n`);
writeFileSync(regression, `${evaluationLines.join('\n')}\n`);
const regressionCount = evaluationLines.length;
const guard = path.join(tmp, 'guard.jsonl');
const unseen = path.join(tmp, 'unseen-guard.jsonl');

/** runJson without blocking: the baselines run in PyTorch beside the engine's methods (same cases, same sets). */
function runJsonAsync(cmd, args, what) {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (status) => {
      const wallS = (performance.now() - started) / 1000;
      const lines = out.trim().split('\n').filter(Boolean);
      if (status !== 0 || !lines.length) {
        log(`${what} failed (exit ${status})`);
        resolve({ error: `exit ${status}`, wallS });
      } else resolve({ lines: lines.map((l) => JSON.parse(l)), wallS });
    });
  });
}

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

log(`guard lines from ${referenceLines.length} reference prompts, unseen guard lines from ${evaluationLines.length} evaluation prompts`);
const guardRun = runJson(process.execPath, [cli, 'guard', '--model', opt.model, '--from', reference, '--out', guard, '--json'], 'guard');
const unseenRun = runJson(process.execPath, [cli, 'guard', '--model', opt.model, '--from', regression, '--out', unseen, '--json'], 'unseen guard');
const guardCount = guardRun.lines?.[0]?.lines ?? 0;
const unseenCount = unseenRun.lines?.[0]?.lines ?? 0;
const side = ['--regression', regression, '--reference', reference, '--guard', guard, '--unseen-guard', unseen];

const runs = methods.flatMap((m) => (m === 'keyed' ? opt['key-margins'].split(',').map((k) => ({ method: m, keyMargin: k.trim() })) : [{ method: m }]));
// The baselines start at once (one PyTorch process each, beside the engine's methods); their side effects are
// measured by the engine afterwards.
const baselines = new Map(runs.filter((r) => r.method === 'sgd' || r.method === 'mint').map(({ method }) => {
  log(`${method} baseline on ${cases.length} cases (in the background)`);
  const deltas = path.join(tmp, `deltas-${method}`);
  return [method, runJsonAsync(opt.python, [path.join(ROOT, 'tools', 'baseline', 'sgd.py'), '--method', method, '--model', opt.model, '--cases', opt.cases,
    '--limit', String(limit), '--max-steps', opt['sgd-max-steps'], '--reduction', opt['sgd-reduction'], '--save-deltas', deltas], method)];
}));
// The engine's methods run side by side too (one process each; on a shared machine several processes get more of it
// than one; each case's repair time is read against a generation timed in the same process).
const engineRuns = new Map(runs.filter((r) => !baselines.has(r.method)).map(({ method, keyMargin }) => {
  log(`neuronpatch eval --method ${method}${keyMargin ? ` --key-margin ${keyMargin}` : ''} on ${cases.length} cases`);
  return [`${method}:${keyMargin ?? ''}`, runJsonAsync(process.execPath, [cli, 'eval', '--model', opt.model, '--cases', opt.cases, ...side, '--method', method,
    '--limit', String(limit), ...(keyMargin ? ['--key-margin', keyMargin] : []), '--json'], `eval --method ${method}`)];
}));
const columns = [];
const order = [...runs.filter((r) => !baselines.has(r.method)), ...runs.filter((r) => baselines.has(r.method))];
for (const { method, keyMargin } of order) {
  let res;
  if (method === 'sgd' || method === 'mint') {
    const raw = await baselines.get(method);
    if (raw.error) res = raw;
    else {
      const resultsFile = path.join(tmp, `${method}.json`);
      writeFileSync(resultsFile, JSON.stringify(raw.lines[raw.lines.length - 1]));
      log(`${method}: side effects of each case's weight change, measured by the engine`);
      const measured = runJson(process.execPath, [path.join(ROOT, 'bench', 'run.mjs'), 'measure-deltas', '--model', opt.model, '--results', resultsFile,
        '--regression', regression, '--guard', guard, '--unseen-guard', unseen, '--cases', opt.cases], `${method} measures`);
      res = measured.error ? measured : { lines: measured.lines, wallS: raw.wallS };
    }
  } else {
    res = await engineRuns.get(`${method}:${keyMargin ?? ''}`);
  }
  if (res.error) {
    columns.push({ method, keyMargin, error: res.error, wallS: res.wallS });
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
  const share = (k) => (x) => (x?.[k] ? x[k].kept / Math.max(1, x[k].of) : undefined);
  columns.push({
    method, keyMargin,
    tokenLocality: mean(fixed.map((r) => r.tokenLocality)),
    keptLines: mean(fixed.map(share('kept'))),
    keptUnseen: mean(fixed.map(share('keptUnseen'))),
    lossChange: mean(fixed.map((r) => r.lossChange)),
    cases: out.cases ?? tried.length,
    alreadyCorrect: out.alreadyCorrect ?? results.length - tried.length,
    successRate: out.successRate ?? (tried.length ? fixed.length / tried.length : null),
    // minimal falls back to the joint solver where its greedy search runs out of budget; these say how often.
    ownSuccessRate: out.ownSuccessRate ?? null,
    fallbacks: out.fallbacks ?? null,
    medianNeurons: out.medianNeurons ?? median(fixed.map(neurons)),
    neuronsPerFailingToken: out.neuronsPerFailingToken ?? median(fixed.map((r) => neurons(r) / Math.max(r.failingTokens ?? 1, 1))),
    // Side effects and generalization over the fixed cases, as `neuronpatch eval` aggregates them.
    specificity: mean(fixed.map((r) => r.specificity)),
    nextTokenSpecificity: mean(fixed.map((r) => r.nextTokenSpecificity)),
    meanKl: mean(fixed.map((r) => r.meanKl)),
    generalization: mean(fixed.map((r) => r.generalization)),
    variantCases: fixed.filter((r) => r.generalization !== null && r.generalization !== undefined).length,
    medianMs: out.medianMs ?? median(tried.map(ms)),
    repairOverGeneration: median(ratios),
    ownRepairOverGeneration: out.medianRepairToGeneration ?? out.repairToGeneration ?? null,
    wallS: res.wallS,
  });
}
rmSync(tmp, { recursive: true, force: true });

const medianGenMs = median([...genMs.values()]);
const summary = {
  model: opt.model, cases: cases.length, regressionPrompts: regressionCount, referencePrompts: referenceLines.length, guardLines: guardCount,
  unseenGuardLines: unseenCount, medianGenerationMs: medianGenMs, generateMatchesBefore: sameBefore, columns,
};
if (opt.json) {
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} else {
  const pct2 = (x) => (x === null || x === undefined ? 'n/a' : `${(100 * x).toFixed(2)} %`);
  const pct = (x) => (x === null || x === undefined ? 'n/a' : `${(100 * x).toFixed(1)} %`);
  const num = (x, d = 1) => (x === null || x === undefined ? 'n/a' : Number(x).toFixed(d));
  const label = { minimal: 'minimal (MINT-style)', joint: 'joint (ASTRA-style)', keyed: 'keyed (added neurons)', sgd: `SGD on down_proj (baseline, ${opt['sgd-reduction']} CE)`, mint: 'MINT re-implementation (baseline)' };
  const labelOf = (c) => `${label[c.method] ?? c.method}${c.keyMargin ? `, key margin ${c.keyMargin}` : ''}`;
  const rows = [
    ['cases repaired from the original model', (c) => num(c.cases, 0)],
    ['already right (left out)', (c) => num(c.alreadyCorrect, 0)],
    ['success rate (greedy line = desired)', (c) => pct(c.successRate)],
    ['  fixed by the method alone', (c) => (c.ownSuccessRate === null ? '–' : pct(c.ownSuccessRate))],
    ['  cases that fell back to the joint solver', (c) => (c.fallbacks === null ? '–' : num(c.fallbacks, 0))],
    ['median neurons edited', (c) => num(c.medianNeurons)],
    ['neurons per failing token (median)', (c) => num(c.neuronsPerFailingToken, 2)],
    [`token locality (${regressionCount} prompts' greedy continuations, teacher-forced)`, (c) => pct2(c.tokenLocality)],
    [`correct lines kept (${guardCount} guard lines given to the repair)`, (c) => pct(c.keptLines)],
    [`correct lines kept, unseen (${unseenCount} lines no method sees)`, (c) => pct(c.keptUnseen)],
    ['held-out loss change', (c) => (c.lossChange === null || c.lossChange === undefined ? 'n/a' : `${c.lossChange >= 0 ? '+' : ''}${(100 * c.lossChange).toFixed(3)} %`)],
    ['mean next-token KL on evaluation prompts', (c) => (c.meanKl === null || c.meanKl === undefined ? 'n/a' : Number(c.meanKl).toExponential(2))],
    ['next token unchanged', (c) => pct(c.nextTokenSpecificity)],
    [`lines unchanged (strict, ${regressionCount} greedy lines)`, (c) => pct(c.specificity)],
    ['variants fixed (fixed cases that have variants)', (c) => `${pct(c.generalization)} (${c.variantCases ?? 0})`],
    ['median repair time ms', (c) => num(c.medianMs, 0)],
    [`repair / one engine generation (${num(medianGenMs, 0)} ms median)`, (c) => `${num(c.repairOverGeneration)}×`],
    ['repair / one generation in its own runtime', (c) => (c.ownRepairOverGeneration === null ? '–' : `${num(c.ownRepairOverGeneration)}×`)],
    ['wall time of the whole run s', (c) => num(c.wallS, 0)],
  ];
  const cols = columns.map((c) => (c.error ? { ...c, failed: true } : c));
  const out = [
    `repair on the first ${cases.length} cases of ${path.relative(ROOT, opt.cases)}, model ${opt.model}; reference code: ${referenceLines.length} prompts `
      + `(odd lines of ${path.relative(ROOT, opt.regression)}), guard: ${guardCount} lines harvested from it; evaluation: ${regressionCount} prompts (even lines), `
      + `${unseenCount} unseen guard lines harvested from them`,
    `(\`neuronpatch generate\` reproduced the recorded bad completion for ${sameBefore}/${cases.length} cases)`,
    '',
    `| | ${cols.map(labelOf).join(' | ')} |`,
    `|---|${cols.map(() => '---').join('|')}|`,
    ...rows.map(([name, f]) => `| ${name} | ${cols.map((c) => (c.failed ? `failed (${c.error})` : f(c))).join(' | ')} |`),
    '',
  ];
  process.stdout.write(out.join('\n'));
}
