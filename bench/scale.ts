// Real size: random-weight stand-ins with the exact shapes of Qwen2.5-Coder-0.5B and -1.5B (tools/scale/build.py,
// built on demand into the cache) in fp32, fp16 and q4. For each: the engine's cold open (instrumenting + cache)
// and warm open, the disk its cache uses, peak RSS against a plain onnxruntime session on the same file, time to
// first token and tokens/s of a 24-token greedy completion from a 1,000-token prompt against a plain onnxruntime
// KV-cache loop and transformers.js on the same file, and the cost of trace, repair and the side-effect check.
// Every runner is its own child process (one big model in memory at a time; its peak RSS is its own); the
// repetitions alternate the runners' order and each figure is the median with its range over the repetitions.
// Random weights show cost only, never repair quality.
//   npm run bench:scale -- [--sizes 0.5b,1.5b] [--dtypes q4,fp16,fp32] [--reps 2] [--prompt-tokens 1000]
//                          [--new-tokens 24] [--regression 8] [--threads N] [--json]
//                          [--method keyed|minimal|joint] [--reopen]   (the repair child; keyed: the extension's default)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generate } from '../src/engine/generate';
import { defaultCacheDir, loadModel } from '../src/engine/model/load';
import { repair } from '../src/engine/repair/index';
import { ort } from '../src/engine/onnx/runtime';
import { CodeTokenizer } from '../src/engine/tokenizer';
import { trace } from '../src/engine/trace/index';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { RepairMethod } from '../src/engine/types';
import { EngineWorker } from '../src/vscode/worker/client';
import { fmt, median, options, PlainModel, ROOT, sessionOptions } from './common';
import { decodeComparison } from './scale-decode';

const FILES: Record<string, string> = { fp32: 'model.onnx', fp16: 'model_fp16.onnx', q4: 'model_q4.onnx' };
type Runner = 'plain' | 'engine' | 'transformers';

interface GenResult { openMs: number; ttftMs: number; tokensPerS: number; ids: number[]; maxRssMb: number; error?: string }

/** Cumulative "some" stall time (µs) of memory and I/O since boot (/proc/pressure; NaN where the kernel has none). */
function pressureStalls(): { memory: number; io: number } {
  const read = (f: string) => {
    try {
      return Number(/^some .*total=(\d+)/m.exec(readFileSync(`/proc/pressure/${f}`, 'utf8'))?.[1] ?? NaN);
    } catch {
      return NaN;
    }
  };
  return { memory: read('memory'), io: read('io') };
}

function methodOf(m: string): RepairMethod {
  if (m !== 'keyed' && m !== 'minimal' && m !== 'joint') throw new Error(`--editor-method ${JSON.stringify(m.slice(0, 40))}: use keyed, minimal or joint`);
  return m;
}

const scaleDir = () => path.join(defaultCacheDir(), 'scale');
const folderOf = (size: string) => path.join(scaleDir(), `qwen2.5-coder-${size}`);

/**
 * A folder whose onnx/model.onnx is the dtype's file (hard links: no disk), for the engine, which opens
 * onnx/model.onnx. transformers.js and the plain session read the public layout itself.
 */
function viewOf(size: string, dtype: string): string {
  const src = folderOf(size);
  if (dtype === 'fp32') return src;
  const view = path.join(scaleDir(), 'views', `${size}-${dtype}`);
  mkdirSync(path.join(view, 'onnx'), { recursive: true });
  const link = (from: string, to: string) => {
    if (existsSync(to) && statSync(to).ino === statSync(from).ino) return;
    rmSync(to, { force: true });
    linkSync(from, to);
  };
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) link(path.join(src, f), path.join(view, f));
  link(path.join(src, 'onnx', FILES[dtype]), path.join(view, 'onnx', 'model.onnx'));
  link(path.join(src, 'onnx', `${FILES[dtype]}_data`), path.join(view, 'onnx', `${FILES[dtype]}_data`));
  return view;
}

/** The prompt: regression prompts of the demo corpus joined until `tokens` tokens, cut to exactly that many. */
function longPrompt(tok: CodeTokenizer, tokens: number): string {
  const lines = readFileSync(path.join(ROOT, 'bench', 'cases', 'regression.jsonl'), 'utf8').split('\n').filter((l) => l.trim());
  let text = '';
  for (const l of lines) {
    text += `${(JSON.parse(l) as { prompt: string }).prompt}\n\n`;
    if (tok.encode(text).length > tokens + 50) break;
  }
  return tok.decode(tok.encode(text).slice(0, tokens));
}

const rssMb = () => process.resourceUsage().maxRSS / 1024;

/**
 * The repair case: the dev case with the shortest desired text. On random weights every desired token fails, and
 * the minimal solver's budget grows with the failing tokens (3 rounds each): the shortest case bounds the run.
 */
function benchCase(): { prompt: string; desired: string } {
  const cases = readFileSync(path.join(ROOT, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n').filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { prompt: string; desired: string });
  return cases.reduce((best, c) => (c.desired.trim().length && c.desired.length < best.desired.length ? c : best));
}

// ---- children ------------------------------------------------------------------------------------------------

async function childGenerate(runner: Runner, size: string, dtype: string, promptTokens: number, newTokens: number, threads?: number): Promise<GenResult> {
  const folder = folderOf(size);
  const tok = CodeTokenizer.fromFiles(path.join(folder, 'tokenizer.json'), path.join(folder, 'tokenizer_config.json'), 151936);
  const prompt = longPrompt(tok, promptTokens);
  const ids = tok.encode(prompt);
  const warm = tok.decode(ids.slice(0, 16));
  let started = performance.now();
  if (runner === 'engine') {
    const model = await loadModel(viewOf(size, dtype), { threads });
    const openMs = performance.now() - started;
    await generate(model, [warm], { maxNewTokens: 2, multiline: true, heal: false });
    let first = 0;
    started = performance.now();
    const [c] = await generate(model, [prompt], {
      maxNewTokens: newTokens, multiline: true, heal: false, onStep: (s) => { if (s === 0) first = performance.now(); },
    });
    const total = performance.now() - started;
    return { openMs, ttftMs: first - started, tokensPerS: (c.tokens.length - 1) / ((total - (first - started)) / 1000), ids: c.tokens.map((t) => t.id), maxRssMb: rssMb() };
  }
  if (runner === 'plain') {
    const plainFolder = viewOf(size, dtype);
    const plain = await PlainModel.open(plainFolder, threads);
    const openMs = performance.now() - started;
    const half = dtype === 'fp16';
    const presents = plain.presentNames();
    const V = 151936;
    const loop = async (input: number[], n: number, onFirst?: () => void): Promise<number[]> => {
      const out: number[] = [];
      let feed = [input];
      let past: ort.Tensor[] | undefined;
      let length = 0;
      for (let step = 0; step < n; step++) {
        const feeds = plain.feeds(feed, past, length);
        if (half && !past) for (const k of Object.keys(feeds)) if (k.startsWith('past_')) feeds[k] = new ort.Tensor('float16', new Uint16Array(0), feeds[k].dims);
        const res = await plain.session.run(feeds, ['logits', ...presents]);
        length += feed[0].length;
        past = presents.map((p) => res[p]);
        const data = res.logits.data as Float32Array | Uint16Array;
        const base = (feed[0].length - 1) * V;
        let best = 0;
        if (half) {
          const f = (h: number) => { const s = h >> 15 ? -1 : 1; const e = (h >> 10) & 31; const m = h & 1023; return e === 0 ? s * m * 2 ** -24 : e === 31 ? NaN : s * (1 + m / 1024) * 2 ** (e - 15); };
          let bv = -Infinity;
          for (let i = 0; i < V; i++) { const v = f(data[base + i]); if (v > bv) { bv = v; best = i; } }
        } else {
          for (let i = 1; i < V; i++) if (data[base + i] > data[base + best]) best = i;
        }
        out.push(best);
        if (step === 0) onFirst?.();
        feed = [[best]];
      }
      return out;
    };
    await loop(ids.slice(0, 16), 2);
    let first = 0;
    started = performance.now();
    const out = await loop(ids, newTokens, () => (first = performance.now()));
    const total = performance.now() - started;
    return { openMs, ttftMs: first - started, tokensPerS: (out.length - 1) / ((total - (first - started)) / 1000), ids: out, maxRssMb: rssMb() };
  }
  const tjs = await import('@huggingface/transformers');
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = `${scaleDir()}${path.sep}`;
  const pipe = await tjs.pipeline('text-generation', `qwen2.5-coder-${size}`, {
    dtype: dtype as 'fp32', local_files_only: true, device: 'cpu', session_options: sessionOptions(threads),
    // The stand-ins keep their weights in external data, as the public exports of models this size do.
    use_external_data_format: true,
  } as Parameters<typeof tjs.pipeline>[2]);
  const openMs = performance.now() - started;
  const out: number[] = [];
  let puts = 0;
  let first = 0;
  const streamer = {
    put(value: bigint[][]) {
      // The first put is the prompt; every later one a generated token.
      if (puts++ === 1) first = performance.now();
      if (puts > 1) out.push(Number(value[0][0]));
    },
    end() { /* nothing to flush */ },
  };
  await pipe(warm, { max_new_tokens: 2, do_sample: false });
  started = performance.now();
  await pipe(prompt, { max_new_tokens: newTokens, min_new_tokens: newTokens, do_sample: false, streamer } as Record<string, unknown>);
  const total = performance.now() - started;
  await pipe.dispose();
  return { openMs, ttftMs: first - started, tokensPerS: (out.length - 1) / ((total - (first - started)) / 1000), ids: out, maxRssMb: rssMb() };
}

interface OpenResult { coldMs: number; warmMs: number; cacheBytes: number; weightsBytes: number }

/** Cold open into an empty cache, then warm open from it; the cache's disk use. */
async function childOpen(size: string, dtype: string, threads?: number): Promise<OpenResult> {
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'np-scale-cache-'));
  try {
    let t = performance.now();
    const cold = await loadModel(viewOf(size, dtype), { threads, cacheDir });
    const coldMs = performance.now() - t;
    await cold.release();
    t = performance.now();
    const warm = await loadModel(viewOf(size, dtype), { threads, cacheDir });
    const warmMs = performance.now() - t;
    await warm.release();
    const du = (dir: string): number => readdirSync(dir, { withFileTypes: true })
      .reduce((s, e) => s + (e.isDirectory() ? du(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).size), 0);
    const data = path.join(folderOf(size), 'onnx', `${FILES[dtype]}_data`);
    return { coldMs, warmMs, cacheBytes: du(cacheDir), weightsBytes: statSync(data).size };
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

/** One repair() call, timed: wall, its own time, its phases and the peak RSS of each. */
interface TimedRepair {
  repairMs: number;
  /** The repair's own time (RepairResult.ms: locate and solve, then confirm by generation; no report, no side effects). */
  ownMs: number;
  /** Wall time per phase (the engine's progress lines: generating, tracing, reading, solving, confirming, analysing, measuring). */
  phases: Record<string, number>;
  /** Peak RSS of each phase (MB). */
  phaseRss: Record<string, number>;
  sideEffectsPerPromptMs: number; failingTokens: number; neurons: number; success: boolean; method: string;
  /** The repair's own generation of the case's current completion (RepairResult.generationMs): one generation under the load of that moment. */
  generationMs: number;
  /**
   * Per phase: the model's forwards (decoding steps included) and the token positions they ran (rows × width):
   * the work itself, which the machine's load does not change.
   */
  forwards: Record<string, { runs: number; positions: number }>;
}

interface RepairBench {
  /** One greedy generation of the case, and the bench's own trace of it (ms). */
  generationMs: number; traceMs: number;
  /** The method asked for. */
  asked: string; regression: number;
  /** The first repair on the model (fresh cache: every per-model and per-reference-set value is computed). */
  first: TimedRepair;
  /** The same repair again on the same loaded model and cache: what every later repair pays. */
  second: TimedRepair;
  /** With --reopen: the model released and opened again from the same cache folder (disk entries, nothing in memory). */
  reopened?: TimedRepair;
  maxRssMb: number;
  /** RSS once the model is loaded (MB). */
  loadedRssMb: number;
}

/** The engine's phase a progress line opens, or undefined for a line within the current phase (keyed rounds, the layer's why). */
const PHASES = ['generating', 'tracing', 'reading', 'solving', 'confirming', 'analysing', 'measuring', 'keeping'];
const phaseOf = (line: string): string | undefined => (PHASES.includes(line.split(' ')[0]) ? line.split(' ').slice(0, 2).join(' ') : undefined);

/**
 * Trace and repair of the bench case (benchCase) with `method`, the regression prompts as the protected code and
 * the side-effect check (as the extension passes its workspace's prompts), in a fresh cache folder: the first
 * repair computes every per-model and per-reference-set value, a second one on the same loaded model shows what
 * a user pays from then on, and with `reopen` a third after opening the model again from the same cache.
 */
async function childRepair(size: string, dtype: string, regression: number, method: RepairMethod, reopen: boolean, threads?: number): Promise<RepairBench> {
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'np-scale-repair-'));
  try {
    let model = await loadModel(viewOf(size, dtype), { threads, cacheDir });
    const read = (f: string) => readFileSync(path.join(ROOT, 'bench', 'cases', f), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { prompt: string; desired: string });
    const c = benchCase();
    const prompts = read('regression.jsonl').slice(0, regression).map((r) => r.prompt);
    // Resident memory sampled every 20 ms (onnxruntime runs off the JS thread, so the sampler runs during its
    // forwards): the peak of each phase, to find which one holds the memory.
    const loadedRssMb = process.memoryUsage.rss() / 2 ** 20;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
    const endPhase = (into: Record<string, number>, name: string) => {
      peak = Math.max(peak, process.memoryUsage.rss());
      into[name] = Math.max(into[name] ?? 0, Math.round(peak / 2 ** 20));
      peak = 0;
    };
    const misc: Record<string, number> = {};
    let t = performance.now();
    await generate(model, [c.prompt]);
    const generationMs = performance.now() - t;
    endPhase(misc, 'generation');
    t = performance.now();
    await trace(model, c);
    const traceMs = performance.now() - t;
    endPhase(misc, 'trace');
    const timed = async (label: string): Promise<TimedRepair> => {
      const marks: [string, number][] = [];
      const phaseRss: Record<string, number> = {};
      // The real session's forwards, counted per phase (a counter around the call, nothing replaced).
      const forwards: Record<string, { runs: number; positions: number }> = {};
      const session = model.session;
      const forward = session.forward.bind(session);
      session.forward = ((req: Parameters<typeof forward>[0]) => {
        const f = (forwards[marks[marks.length - 1]?.[0] ?? 'before'] ??= { runs: 0, positions: 0 });
        f.runs++;
        f.positions += req.ids.length * (req.ids[0]?.length ?? 0);
        return forward(req);
      }) as typeof forward;
      const started = performance.now();
      const r = await repair(model, c, {
        method, regression: prompts,
        onProgress: (line) => {
          if (process.env.NEURONPATCH_BENCH_VERBOSE) process.stderr.write(`${label} ${((performance.now() - started) / 1000).toFixed(1)} s ${line.slice(0, 300)}\n`);
          const name = phaseOf(line);
          if (!name) return;
          if (marks.length) endPhase(phaseRss, marks[marks.length - 1][0]);
          marks.push([name, performance.now()]);
        },
      });
      const repairMs = performance.now() - started;
      session.forward = forward;
      if (marks.length) endPhase(phaseRss, marks[marks.length - 1][0]);
      const phases: Record<string, number> = {};
      marks.forEach(([name, at], i) => (phases[name] = (phases[name] ?? 0) + (marks[i + 1]?.[1] ?? started + repairMs) - at));
      const side = Object.entries(phases).find(([k]) => k.startsWith('measuring side'))?.[1] ?? NaN;
      return {
        repairMs, ownMs: r.ms, phases, phaseRss, sideEffectsPerPromptMs: side / Math.max(1, prompts.length),
        failingTokens: r.failingTokens, neurons: r.neurons.length, success: r.success, method: r.method, generationMs: r.generationMs, forwards,
      };
    };
    const first = await timed('first');
    const second = await timed('second');
    let reopened: TimedRepair | undefined;
    if (reopen) {
      await model.release();
      model = await loadModel(viewOf(size, dtype), { threads, cacheDir });
      reopened = await timed('reopened');
    }
    clearInterval(sampler);
    await model.release();
    return { generationMs, traceMs, asked: method, regression: prompts.length, first, second, ...(reopened ? { reopened } : {}), maxRssMb: rssMb(), loadedRssMb };
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

interface EditorBench {
  /** The host's longest event-loop delay during the repair, and its 99th percentile (ms). */
  repairStallMs: number; repairStallP99Ms: number; repairTickGapMs: number; gapPhase: string; idleStallMs: number; repairMs: number;
  cancelRepair: { hostMs: number; workerMs: number }; cancelPhases: Record<string, { hostMs: number; workerMs: number }>; cancelGeneration: { hostMs: number; workerMs: number };
  keystroke: { reuse: number[]; fresh: number[] }; keystrokes: number; error?: string;
  /** The repair method (the extension's default: keyed), and how often the engine process was ended to land a cancel. */
  method: RepairMethod; restarts: { cancel: number; crash: number };
  /** The first reload after a cancel that ended the engine process: how long the next call waited for it (ms). */
  reloadMs: number;
  /**
   * Linux pressure stall information during the repair: ms in which some task of the machine waited for memory
   * (reclaim) or I/O. Outliers of the host's stall that coincide with these are the machine's, not the engine's.
   */
  pressureMs: { memory: number; io: number };
}

/**
 * The extension's view: the engine in its own process (dist/engineProcess.js, as the extension starts it). The
 * host's longest event-loop stall while a repair runs in the worker (monitorEventLoopDelay, and the largest gap
 * of a 10 ms ticker); how long a cancelled repair and a cancelled generation take to settle on the host and to
 * stop in the worker; keystroke → completion with and without the prefix's KV cache.
 */
async function childEditor(size: string, dtype: string, promptTokens: number, newTokens: number, keystrokes: number, regression: number, method: RepairMethod, threads?: number): Promise<EditorBench> {
  const worker = await EngineWorker.start(viewOf(size, dtype), { threads, workerFile: path.join(ROOT, 'dist', 'engineProcess.js') });
  try {
    const read = (f: string) => readFileSync(path.join(ROOT, 'bench', 'cases', f), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { prompt: string; desired: string });
    const c = benchCase();
    const prompts = read('regression.jsonl').slice(0, regression).map((r) => r.prompt);
    // Event-loop stalls of this (host) thread while the worker repairs.
    const h = monitorEventLoopDelay({ resolution: 10 });
    let last = performance.now();
    let gap = 0;
    // The phase of the repair (its last progress line) in which the ticker's largest gap ended.
    let phase = 'start';
    let gapPhase = '';
    const ticker = setInterval(() => {
      const now = performance.now();
      if (now - last > gap) [gap, gapPhase] = [now - last, phase];
      last = now;
    }, 10);
    h.enable();
    const psi0 = pressureStalls();
    let t = performance.now();
    await worker.repair(c, { method, regression: prompts, onProgress: (line) => (phase = line.split(' ').slice(0, 2).join(' ')) });
    const repairMs = performance.now() - t;
    h.disable();
    clearInterval(ticker);
    const psi1 = pressureStalls();
    const pressureMs = { memory: (psi1.memory - psi0.memory) / 1000, io: (psi1.io - psi0.io) / 1000 };
    // The same monitor with the worker idle: what this machine's scheduler alone costs the host thread.
    const idle = monitorEventLoopDelay({ resolution: 10 });
    idle.enable();
    await new Promise((r) => setTimeout(r, Math.min(20_000, repairMs)));
    idle.disable();
    // A cancel that ended the engine process is followed by a reload: the next call waits for it (timed here, once).
    let reloadMs = NaN;
    const settle = async () => {
      const restarts = worker.restarts.cancel;
      const t1 = performance.now();
      await worker.whenReady();
      if (restarts && Number.isNaN(reloadMs)) reloadMs = performance.now() - t1;
    };
    /**
     * Starts `run`, aborts it 1 s after it calls `begin` (NaN where it finished first), and times the host's settle
     * and the engine's stop (its answer at a checkpoint, or its process ended: whenCancelledStopped). An onnxruntime
     * run in flight cannot be interrupted, so the phase with the longest forwards decides.
     */
    const cancelTimed = async (run: (signal: AbortSignal, begin: () => void) => Promise<unknown>) => {
      await settle();
      const ac = new AbortController();
      let begin: () => void = () => undefined;
      const begun = new Promise<void>((r) => (begin = r));
      let finished = false;
      const p = run(ac.signal, begin).then(() => (finished = true), () => undefined);
      await Promise.race([begun, p]);
      await new Promise((r) => setTimeout(r, 1000));
      if (finished) return { hostMs: NaN, workerMs: NaN };
      const t0 = performance.now();
      ac.abort();
      await p;
      const hostMs = performance.now() - t0;
      await worker.whenCancelledStopped();
      return { hostMs, workerMs: performance.now() - t0 };
    };
    // A repair cancelled in each of its phases, 1 s after the phase began.
    const cancelInPhase = (phase: string) => cancelTimed((signal, begin) =>
      worker.repair(c, { method, regression: prompts, signal, onProgress: (line) => line.startsWith(phase) && begin() }));
    const cancelPhases: Record<string, { hostMs: number; workerMs: number }> = {};
    for (const phase of ['generating', 'tracing', 'solving']) cancelPhases[phase] = await cancelInPhase(phase);
    const cancelled = Object.values(cancelPhases).filter((x) => Number.isFinite(x.workerMs));
    const cancelRepair = cancelled.length ? cancelled.reduce((a, b) => (b.workerMs > a.workerMs ? b : a)) : { hostMs: NaN, workerMs: NaN };
    const folder = folderOf(size);
    const tok = CodeTokenizer.fromFiles(path.join(folder, 'tokenizer.json'), path.join(folder, 'tokenizer_config.json'), 151936);
    const doc = longPrompt(tok, promptTokens);
    const cancelGeneration = await cancelTimed((signal, begin) => {
      begin();
      return worker.generate(doc, { maxNewTokens: newTokens, multiline: true, signal });
    });
    // Keystrokes: one character typed at a time at the end of the document, a completion asked after each.
    const typed = 'def main(argv):\n    return 0';
    const keystroke = { reuse: [] as number[], fresh: [] as number[] };
    await settle();
    for (const mode of ['reuse', 'fresh'] as const) {
      await worker.generate(doc, { maxNewTokens: newTokens, reusePrefix: mode === 'reuse', lane: 'completion' });
      for (let k = 1; k <= keystrokes; k++) {
        t = performance.now();
        await worker.generate(doc + typed.slice(0, k), { maxNewTokens: newTokens, reusePrefix: mode === 'reuse', lane: 'completion' });
        keystroke[mode].push(performance.now() - t);
      }
    }
    return {
      repairStallMs: h.max / 1e6, repairStallP99Ms: h.percentile(99) / 1e6, repairTickGapMs: gap, gapPhase, idleStallMs: idle.max / 1e6, repairMs, cancelRepair, cancelPhases, cancelGeneration, keystroke, keystrokes,
      method, restarts: { ...worker.restarts }, reloadMs, pressureMs,
    };
  } finally {
    await worker.dispose();
  }
}

// ---- parent --------------------------------------------------------------------------------------------------

function runChild<T>(args: string[]): T | { error: string } {
  const r = spawnSync(process.execPath, ['--enable-source-maps', process.argv[1], ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    const err = (r.stderr ?? '').split('\n').find((l) => /Error|error/.test(l)) ?? `exit ${r.status}`;
    return { error: err.slice(0, 240) };
  }
}

const spread = (xs: number[], digits = 1) => {
  const ok = xs.filter(Number.isFinite);
  if (!ok.length) return 'n/a';
  return ok.length === 1 ? fmt(ok[0], digits) : `${fmt(median(ok), digits)} (${fmt(Math.min(...ok), digits)}–${fmt(Math.max(...ok), digits)})`;
};

/** The repair method of --method: keyed (the extension's default), minimal or joint. */
function repairMethod(asked: string): RepairMethod {
  if (asked === 'keyed' || asked === 'minimal' || asked === 'joint') return asked;
  throw new Error(`--method must be keyed, minimal or joint, got ${JSON.stringify(asked.slice(0, 40))}.`);
}

/** The repair child's lines: the first repair on the model and a second one, each as a multiple of one generation, with its phases. */
function repairLines(rep: RepairBench): string[] {
  const one = (label: string, r: TimedRepair) => [
    // Each repair against its own generation of the case (same moment, same load: the machine's load moves within a run).
    `${label}: ${fmt(r.repairMs / 1000, 1)} s = **${fmt(r.repairMs / r.generationMs, 1)}×** one generation of the case (its own: ${fmt(r.generationMs / 1000, 2)} s); its own locate, solve and confirm ${fmt(r.ownMs / 1000, 1)} s = ${fmt(r.ownMs / r.generationMs, 1)}× ` +
      `(${r.method}${r.method !== rep.asked ? `, fallen back from ${rep.asked}` : ''}, ${r.failingTokens} failing tokens → ${r.neurons} neurons, ${r.success ? 'succeeded' : 'did not succeed'} on random weights; ` +
      `side-effect check ${fmt(r.sideEffectsPerPromptMs / 1000, 2)} s per regression prompt)`,
    `  phases: ${Object.entries(r.phases).map(([k, v]) => `${k} ${fmt(v / 1000, 1)} s`).join(', ')}`,
    `  peak RSS by phase MB: ${Object.entries(r.phaseRss).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  forwards by phase (runs / token positions): ${Object.entries(r.forwards).map(([k, v]) => `${k} ${v.runs} / ${v.positions}`).join(', ')}`,
  ];
  return [
    `repair (${rep.asked}, as the extension repairs: the ${rep.regression} regression prompts are the protected code and the side-effect check; fresh cache folder) — ` +
      `one generation of the case before the repairs ${fmt(rep.generationMs / 1000, 2)} s, the bench's own trace ${fmt(rep.traceMs / 1000, 1)} s; peak RSS ${fmt(rep.maxRssMb, 0)} MB (${fmt(rep.loadedRssMb, 0)} once loaded)`,
    ...one('first repair on the model (per-model and per-reference-set values computed)', rep.first),
    ...one('second repair, same loaded model and cache (what every later repair pays)', rep.second),
    ...(rep.reopened ? one('after reopening the model (cache on disk, nothing in memory)', rep.reopened) : []),
  ];
}

async function main(): Promise<void> {
  const opt = options({
    sizes: { type: 'string', default: '0.5b,1.5b' }, dtypes: { type: 'string', default: 'q4,fp16,fp32' }, reps: { type: 'string', default: '2' },
    'prompt-tokens': { type: 'string', default: '1000' }, 'new-tokens': { type: 'string', default: '24' },
    regression: { type: 'string', default: '8' }, child: { type: 'string' }, size: { type: 'string' }, dtype: { type: 'string' },
    'skip-repair': { type: 'boolean', default: false }, 'skip-editor': { type: 'boolean', default: false },
    keystrokes: { type: 'string', default: '5' }, 'editor-method': { type: 'string', default: 'keyed' },
    method: { type: 'string', default: 'keyed' }, reopen: { type: 'boolean', default: false },
  });
  const threads = opt.threads ? Number(opt.threads) : undefined;
  const promptTokens = Number(opt['prompt-tokens']);
  const newTokens = Number(opt['new-tokens']);
  if (opt.child) {
    const size = opt.size!;
    const dtype = opt.dtype!;
    let out: unknown;
    if (opt.child === 'open') out = await childOpen(size, dtype, threads);
    else if (opt.child === 'editor') out = await childEditor(size, dtype, promptTokens, newTokens, Number(opt.keystrokes), Number(opt.regression), methodOf(opt['editor-method']!), threads);
    else if (opt.child === 'repair') out = await childRepair(size, dtype, Number(opt.regression), repairMethod(opt.method!), opt.reopen!, threads);
    else if (opt.child === 'decode') out = await decodeComparison(size, dtype, promptTokens, 8);
    else out = await childGenerate(opt.child as Runner, size, dtype, promptTokens, newTokens, threads);
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  const reps = Number(opt.reps);
  const common = ['--prompt-tokens', String(promptTokens), '--new-tokens', String(newTokens), '--regression', opt.regression!, '--keystrokes', opt.keystrokes!, '--editor-method', opt['editor-method']!,
    ...(opt.threads ? ['--threads', opt.threads] : [])];
  const lines: string[] = [
    '# bench:scale: random-weight stand-ins of real code models (cost only: random weights say nothing about repair quality)',
    '',
    `Tokenizer: the demo model's byte-level BPE (4096 ids, inside the 151,936-token vocabulary), not Qwen's. Prompt ${promptTokens} tokens, ` +
      `${newTokens} new tokens greedy, batch 1; median (min–max) of ${reps} repetitions, each runner in its own process, order alternating; ` +
      `${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(1)} at start.`,
    '',
  ];
  const json: Record<string, unknown> = {};
  for (const size of opt.sizes!.split(',')) {
    const dtypes = opt.dtypes!.split(',');
    const missing = dtypes.filter((d) => !existsSync(path.join(folderOf(size), 'onnx', FILES[d])));
    if (missing.length) {
      process.stderr.write(`building the ${size} stand-in (${missing.join(', ')}) under ${scaleDir()}\n`);
      execFileSync('/usr/bin/python3', [path.join(ROOT, 'tools', 'scale', 'build.py'), '--size', size, '--dtypes', missing.join(','), '--out', scaleDir()], { stdio: 'inherit' });
    }
    for (const dtype of dtypes) {
      process.stderr.write(`${size} ${dtype}: open\n`);
      const args = [...common, '--size', size, '--dtype', dtype];
      const open = runChild<OpenResult>(['--child', 'open', ...args]);
      const runs: Record<Runner, (GenResult | { error: string })[]> = { plain: [], engine: [], transformers: [] };
      const order: Runner[] = ['plain', 'engine', 'transformers'];
      for (let r = 0; r < reps; r++) {
        for (const runner of r % 2 ? [...order].reverse() : order) {
          process.stderr.write(`${size} ${dtype}: ${runner} ${r + 1}/${reps}\n`);
          runs[runner].push(runChild<GenResult>(['--child', runner, ...args]));
        }
      }
      // Decoding steps of the engine and of the plain graph interleaved in one process (the separate processes above
      // run minutes apart, under whatever load the machine has then).
      process.stderr.write(`${size} ${dtype}: decode steps, interleaved\n`);
      const dec = runChild<{ plain: number[]; instrumented: number[]; forward: number[] }>(['--child', 'decode', ...args]);
      const rep = opt['skip-repair'] ? { error: 'skipped (--skip-repair)' } : (process.stderr.write(`${size} ${dtype}: trace + repair\n`), runChild<RepairBench>(['--child', 'repair', ...args, '--method', repairMethod(opt.method!), ...(opt.reopen ? ['--reopen'] : [])]));
      const ok = (xs: (GenResult | { error: string })[]) => xs.filter((x): x is GenResult => !('error' in x) || !x.error);
      const col = (runner: Runner, f: (g: GenResult) => number) => ok(runs[runner]).map(f);
      const ratio = (f: (g: GenResult) => number, other: Runner, higherBetter: boolean) => {
        const e = ok(runs.engine);
        const o = ok(runs[other]);
        const n = Math.min(e.length, o.length);
        return Array.from({ length: n }, (_, i) => (higherBetter ? f(e[i]) / f(o[i]) : f(o[i]) / f(e[i])));
      };
      const errors = (Object.keys(runs) as Runner[]).flatMap((k) => runs[k].filter((x) => 'error' in x && x.error).slice(0, 1).map((x) => `${k}: ${(x as { error: string }).error}`));
      const e0 = ok(runs.engine)[0];
      const same = (other: Runner) => {
        const o = ok(runs[other])[0];
        return e0 && o ? `${e0.ids.filter((id, i) => id === o.ids[i]).length}/${e0.ids.length}` : 'n/a';
      };
      lines.push(`## ${size} ${dtype}`, '');
      if ('error' in open) lines.push(`open: ${open.error}`, '');
      else {
        lines.push(`cold open (instrument + cache) ${fmt(open.coldMs / 1000, 1)} s, warm open ${fmt(open.warmMs / 1000, 1)} s; ` +
          `cache ${fmt(open.cacheBytes / 1024, 0)} KiB for ${fmt(open.weightsBytes / 2 ** 30, 2)} GiB of weights (referenced in place, not copied)`, '');
      }
      lines.push(
        '| | plain onnxruntime | engine | transformers.js | engine vs plain | engine vs transformers.js |',
        '|---|---|---|---|---|---|',
        `| open s | ${spread(col('plain', (g) => g.openMs / 1000))} | ${spread(col('engine', (g) => g.openMs / 1000))} | ${spread(col('transformers', (g) => g.openMs / 1000))} | | |`,
        `| peak RSS MB | ${spread(col('plain', (g) => g.maxRssMb), 0)} | ${spread(col('engine', (g) => g.maxRssMb), 0)} | ${spread(col('transformers', (g) => g.maxRssMb), 0)} | ${spread(ratio((g) => g.maxRssMb, 'plain', true), 2)}× (target ≤ 1.3) | ${spread(ratio((g) => g.maxRssMb, 'transformers', true), 2)}× |`,
        `| time to first token s | ${spread(col('plain', (g) => g.ttftMs / 1000))} | ${spread(col('engine', (g) => g.ttftMs / 1000))} | ${spread(col('transformers', (g) => g.ttftMs / 1000))} | ${spread(ratio((g) => g.ttftMs, 'plain', false), 2)}× | ${spread(ratio((g) => g.ttftMs, 'transformers', false), 2)}× |`,
        `| tokens/s after the first | ${spread(col('plain', (g) => g.tokensPerS), 2)} | ${spread(col('engine', (g) => g.tokensPerS), 2)} | ${spread(col('transformers', (g) => g.tokensPerS), 2)} | ${spread(ratio((g) => g.tokensPerS, 'plain', true), 2)}× | ${spread(ratio((g) => g.tokensPerS, 'transformers', true), 2)}× |`,
        '',
        `speed ratios are engine-relative (> 1: the engine is faster); same greedy ids as the engine: plain ${same('plain')}, transformers.js ${same('transformers')}`,
      );
      if ('error' in dec) lines.push('', `decode steps: ${dec.error}`);
      else {
        const ratios = dec.plain.map((p, i) => p / dec.forward[i]);
        lines.push('', `one decoding step after ${promptTokens} cached positions, ${dec.plain.length} steps interleaved in one process: plain graph ${spread(dec.plain, 0)} ms, ` +
          `engine forward() ${spread(dec.forward, 0)} ms (its graph alone ${spread(dec.instrumented, 0)} ms): engine vs plain **${spread(ratios, 2)}×** tokens/s`);
      }
      if (errors.length) lines.push('', ...errors.map((e) => `- ${e}`));
      if ('error' in rep) lines.push('', `trace/repair: ${rep.error}`);
      else lines.push('', ...repairLines(rep));
      const ed = opt['skip-editor'] ? { error: 'skipped (--skip-editor)' } : (process.stderr.write(`${size} ${dtype}: editor (engine process)\n`), runChild<EditorBench>(['--child', 'editor', ...args]));
      if ('error' in ed && ed.error) lines.push('', `editor (engine process): ${ed.error}`);
      else {
        const e = ed as EditorBench;
        const pct = (xs: number[], q: number) => { const s2 = [...xs].sort((a2, b2) => a2 - b2); return s2[Math.min(s2.length - 1, Math.floor(q * s2.length))]; };
        lines.push('', `editor, engine in its own process, ${e.method} repair: longest host event-loop stall during a repair ${fmt(e.repairStallMs, 1)} ms (p99 ${fmt(e.repairStallP99Ms, 1)} ms) ` +
          `(largest 10 ms-ticker gap ${fmt(e.repairTickGapMs, 1)} ms, in the repair's phase "${e.gapPhase}"; the same monitor with the engine idle: ${fmt(e.idleStallMs, 1)} ms; target ≤ 50 ms; repair ${fmt(e.repairMs / 1000, 1)} s; ` +
          `the machine's memory / I/O pressure stalls during it ${fmt(e.pressureMs.memory, 0)} / ${fmt(e.pressureMs.io, 0)} ms); ` +
          `cancel: repair settles on the host in ${fmt(e.cancelRepair.hostMs, 1)} ms and stops in the worker after ${fmt(e.cancelRepair.workerMs, 0)} ms at worst ` +
          `(${Object.entries(e.cancelPhases).map(([k, v]) => `${k} ${fmt(v.workerMs, 0)} ms`).join(', ')}), ` +
          `a ${promptTokens}-token generation ${fmt(e.cancelGeneration.hostMs, 1)} ms / ${fmt(e.cancelGeneration.workerMs, 0)} ms (target ≤ 1000 ms; ` +
          `${e.restarts.cancel} of these cancels ended the engine process, which then loaded the model again: the next call waited ${fmt(e.reloadMs / 1000, 1)} s for it)`,
        `keystroke → completion (${newTokens} tokens) after a ${promptTokens}-token prefix, ${e.keystrokes} keystrokes: with prefix reuse p50 ${fmt(median(e.keystroke.reuse) / 1000, 2)} s, ` +
          `p95 ${fmt(pct(e.keystroke.reuse, 0.95) / 1000, 2)} s; without p50 ${fmt(median(e.keystroke.fresh) / 1000, 2)} s, p95 ${fmt(pct(e.keystroke.fresh, 0.95) / 1000, 2)} s`);
      }
      lines.push('');
      json[`${size}-${dtype}`] = { open, runs, decode: dec, repair: rep, editor: ed };
      process.stderr.write(lines.slice(-12).join('\n') + '\n');
    }
  }
  process.stdout.write(opt.json ? `${JSON.stringify(json)}\n` : `${lines.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/scale: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
