// Each dtype of the same model, side by side: load time, peak memory and greedy tokens per second of the engine
// (instrumented session, `generate --no-heal`), a plain onnxruntime-node session with the KV cache, and
// transformers.js' text-generation pipeline, all on the same file. The folder is the multi-dtype layout
// (onnx/model.onnx, model_fp16.onnx, model_int8.onnx, model_uint8.onnx, model_q4.onnx, model_q4f16.onnx) that
// tools/formats/convert.py writes from models/demo, unless --folder names another. Every (dtype, runner) runs in
// a child process of its own (peak RSS is per process: getrusage maxrss), repetitions interleaved, medians shown;
// the greedy text of the three runners is compared per dtype. `auto` is what --dtype auto picks here.
//   npm run bench:dtypes -- [--folder DIR] [--prompts 4] [--new-tokens 32] [--reps 1] [--threads N] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generate } from '../src/engine/generate';
import { dtypeFiles, pickDtypeFile } from '../src/engine/model/dtype';
import { loadModel } from '../src/engine/model/load';
import { f16ToF32 } from '../src/engine/onnx/float16';
import { ort } from '../src/engine/onnx/runtime';
import { CodeTokenizer } from '../src/engine/tokenizer';
import { fmt, median, options, ROOT, sessionOptions } from './common';

type Runner = 'engine' | 'plain' | 'transformers';
interface ChildResult { loadMs: number; tokensPerSecond: number; peakMB: number; texts: string[] }

const PROMPTS = [
  'import os\nimport sys\n\n\ndef main(argv):\n    ',
  'class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ',
  'def read_lines(path):\n    with open(path) as f:\n        ',
  'for i in range(len(values)):\n    if values[i] is None:\n        ',
];

/** A plain greedy loop on the file: feeds built from the session's input metadata (fp32 or fp16 pasts). */
async function plainRun(file: string, tok: CodeTokenizer, prompts: string[], newTokens: number, threads?: number): Promise<{ loadMs: number; run: () => Promise<{ tokens: number; texts: string[] }> }> {
  const t0 = performance.now();
  const s = await ort.InferenceSession.create(file, sessionOptions(threads));
  const loadMs = performance.now() - t0;
  const int64 = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
  const f16 = (t: ort.Tensor) => t.type === 'float16';
  const run = async () => {
    let tokens = 0;
    const texts: string[] = [];
    for (const prompt of prompts) {
      const ids = tok.encode(prompt);
      const out: number[] = [];
      let step = ids;
      let past: Record<string, ort.Tensor> = {};
      let length = 0;
      for (let i = 0; i < newTokens; i++) {
        const feeds: Record<string, ort.Tensor> = {};
        for (const m of s.inputMetadata) {
          if (!m.isTensor) continue;
          if (m.name === 'input_ids') feeds[m.name] = int64(step);
          else if (m.name === 'attention_mask') feeds[m.name] = int64(new Array<number>(length + step.length).fill(1));
          else if (m.name === 'position_ids') feeds[m.name] = int64(step.map((_, j) => length + j));
          else feeds[m.name] = past[m.name] ?? (m.type === 'float16'
            ? new ort.Tensor('float16', new Uint16Array(0), m.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? 1 : 0)))
            : new ort.Tensor('float32', new Float32Array(0), m.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? 1 : 0))));
        }
        const res = await s.run(feeds);
        const lg = res.logits;
        const V = lg.dims[2];
        const base = (step.length - 1) * V;
        let best = 0;
        if (f16(lg)) {
          const data = f16ToF32(lg.data as Uint16Array);
          for (let v = 1; v < V; v++) if (data[base + v] > data[base + best]) best = v;
        } else {
          const data = lg.data as Float32Array;
          for (let v = 1; v < V; v++) if (data[base + v] > data[base + best]) best = v;
        }
        out.push(best);
        past = {};
        for (const n of s.outputNames) if (n.startsWith('present')) past[n.replace('present', 'past_key_values')] = res[n];
        length += step.length;
        step = [best];
      }
      tokens += out.length;
      texts.push(tok.decode(out));
    }
    return { tokens, texts };
  };
  return { loadMs, run };
}

async function child(runner: Runner, folder: string, dtype: string, prompts: string[], newTokens: number, threads?: number): Promise<ChildResult> {
  const file = path.join(folder, pickDtypeFile(folder, dtype as 'fp32')!.file);
  const vocab = (JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
  const tok = CodeTokenizer.fromFiles(path.join(folder, 'tokenizer.json'), path.join(folder, 'tokenizer_config.json'), vocab);
  let loadMs: number;
  let run: () => Promise<{ tokens: number; texts: string[] }>;
  if (runner === 'engine') {
    const cache = mkdtempSync(path.join(os.tmpdir(), 'np-bench-cache-'));
    const t0 = performance.now();
    const m = await loadModel(folder, { dtype, threads, cacheDir: cache });
    loadMs = performance.now() - t0;  // includes instrumenting the graph (a first load; later loads read the cache)
    run = async () => {
      let tokens = 0;
      const texts: string[] = [];
      for (const p of prompts) {
        const [c] = await generate(m, [p], { maxNewTokens: newTokens, multiline: true, heal: false });
        tokens += c.tokens.length;
        texts.push(tok.decode(c.tokens.map((t) => t.id)));
      }
      return { tokens, texts };
    };
  } else if (runner === 'plain') {
    ({ loadMs, run } = await plainRun(file, tok, prompts, newTokens, threads));
  } else {
    const tjs = await import('@huggingface/transformers');
    tjs.env.allowRemoteModels = false;
    tjs.env.localModelPath = `${path.dirname(folder)}${path.sep}`;
    const t0 = performance.now();
    const pipe = await tjs.pipeline('text-generation', path.basename(folder), {
      subfolder: 'onnx', dtype: dtype as 'fp32', local_files_only: true, device: 'cpu', session_options: sessionOptions(threads),
      use_external_data_format: existsSync(`${file}_data`) || existsSync(`${file}.data`),
    } as never);
    loadMs = performance.now() - t0;
    run = async () => {
      const texts: string[] = [];
      let tokens = 0;
      for (const p of prompts) {
        const out = (await pipe(p, { max_new_tokens: newTokens, min_new_tokens: newTokens, do_sample: false, return_full_text: false })) as { generated_text: string }[];
        texts.push(out[0].generated_text);
        tokens += newTokens;
      }
      return { tokens, texts };
    };
  }
  const warm = await run();
  const t1 = performance.now();
  const timed = await run();
  const seconds = (performance.now() - t1) / 1000;
  return { loadMs, tokensPerSecond: timed.tokens / seconds, peakMB: process.resourceUsage().maxRSS / 1024, texts: warm.texts };
}

/** The multi-dtype folder: convert.py's layout from models/demo, with the fp32 file as onnx/model.onnx. */
function buildFolder(): string {
  const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'np-bench-dtypes-')), 'demo-dtypes');
  execFileSync('/usr/bin/python3', [path.join(ROOT, 'tools', 'formats', 'convert.py'), path.join(ROOT, 'models', 'demo'), dir, '--format', 'dtypes'], { stdio: 'inherit' });
  mkdirSync(path.join(dir, 'onnx'), { recursive: true });
  copyFileSync(path.join(ROOT, 'models', 'demo', 'model.onnx'), path.join(dir, 'onnx', 'model.onnx'));
  return dir;
}

async function main(): Promise<void> {
  if (process.env.NP_BENCH_CHILD) {
    const a = JSON.parse(process.env.NP_BENCH_CHILD) as { runner: Runner; folder: string; dtype: string; prompts: string[]; newTokens: number; threads?: number };
    process.stdout.write(`${JSON.stringify(await child(a.runner, a.folder, a.dtype, a.prompts, a.newTokens, a.threads))}\n`);
    return;
  }
  const opt = options({ folder: { type: 'string' }, prompts: { type: 'string', default: '4' }, 'new-tokens': { type: 'string', default: '32' }, reps: { type: 'string', default: '1' } });
  const folder = path.resolve(opt.folder ?? buildFolder());
  const dtypes = dtypeFiles(folder).map((f) => f.dtype);
  const auto = pickDtypeFile(folder, 'auto')!;
  const prompts = PROMPTS.slice(0, Number(opt.prompts));
  const newTokens = Number(opt['new-tokens']);
  const threads = opt.threads ? Number(opt.threads) : undefined;
  const runners: Runner[] = ['engine', 'plain', 'transformers'];
  const results = new Map<string, ChildResult[]>();
  for (let r = 0; r < Number(opt.reps); r++) {
    for (const dtype of dtypes) {
      for (const runner of r % 2 ? [...runners].reverse() : runners) {
        const env = { ...process.env, NP_BENCH_CHILD: JSON.stringify({ runner, folder, dtype, prompts, newTokens, threads }) };
        const p = spawnSync(process.execPath, ['--enable-source-maps', process.argv[1]], { env, encoding: 'utf8', maxBuffer: 1 << 26 });
        const key = `${dtype}/${runner}`;
        if (p.status !== 0) {
          process.stderr.write(`${key} failed: ${p.stderr.slice(-1500)}\n`);
          continue;
        }
        const line = p.stdout.trim().split('\n').pop()!;
        results.set(key, [...(results.get(key) ?? []), JSON.parse(line) as ChildResult]);
      }
    }
  }
  const med = (key: string, f: (c: ChildResult) => number) => median((results.get(key) ?? []).map(f));
  const rows = dtypes.map((dtype) => {
    const [e, p, t] = runners.map((r) => `${dtype}/${r}`);
    const texts = (k: string) => results.get(k)?.[0]?.texts ?? [];
    const same = (a: string[], b: string[]) => a.filter((x, i) => x === b[i]).length;
    return {
      dtype, file: dtypeFiles(folder).find((f) => f.dtype === dtype)!.file,
      loadMs: { engine: med(e, (c) => c.loadMs), plain: med(p, (c) => c.loadMs), transformers: med(t, (c) => c.loadMs) },
      peakMB: { engine: med(e, (c) => c.peakMB), plain: med(p, (c) => c.peakMB), transformers: med(t, (c) => c.peakMB) },
      tokensPerSecond: { engine: med(e, (c) => c.tokensPerSecond), plain: med(p, (c) => c.tokensPerSecond), transformers: med(t, (c) => c.tokensPerSecond) },
      sameText: { plain: same(texts(e), texts(p)), transformers: same(texts(e), texts(t)), of: prompts.length },
      sameAsFp32: same(texts(e), texts(`fp32/engine`)),
    };
  });
  if (opt.json) {
    process.stdout.write(`${JSON.stringify({ folder, auto: auto.dtype, prompts: prompts.length, newTokens, rows })}\n`);
    return;
  }
  const lines = [
    `dtypes of ${path.basename(folder)}: ${prompts.length} prompts × ${newTokens} greedy tokens, batch 1, threads ${threads ?? 'default'}; medians of ${opt.reps} run(s), each in its own process`,
    `(engine load includes instrumenting the graph into an empty cache; --dtype auto picks ${auto.dtype} here)`,
    '',
    '| dtype | file | load ms engine / plain / transformers.js | peak MB engine / plain / transformers.js | tokens/s engine / plain / transformers.js | engine ÷ plain | same text as plain / transformers.js / fp32 |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.dtype} | ${r.file} | ${fmt(r.loadMs.engine, 0)} / ${fmt(r.loadMs.plain, 0)} / ${fmt(r.loadMs.transformers, 0)} | ` +
      `${fmt(r.peakMB.engine, 0)} / ${fmt(r.peakMB.plain, 0)} / ${fmt(r.peakMB.transformers, 0)} | ` +
      `${fmt(r.tokensPerSecond.engine, 0)} / ${fmt(r.tokensPerSecond.plain, 0)} / ${fmt(r.tokensPerSecond.transformers, 0)} | ${fmt(r.tokensPerSecond.engine / r.tokensPerSecond.plain)}× | ` +
      `${r.sameText.plain}/${r.sameText.of} / ${r.sameText.transformers}/${r.sameText.of} / ${r.sameAsFp32}/${r.sameText.of} |`),
    '',
  ];
  process.stdout.write(lines.join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
