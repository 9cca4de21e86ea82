// Where a decoding step's time goes at a real size: one KV-cached step of the engine's instrumented graph against
// the same step of the original graph, both fed the same ids, mask, positions and cache, interleaved, with
// onnxruntime's own profiler on (time per operator type), and the engine's whole forward() (JavaScript around the
// run included) beside them. Random-weight stand-ins (tools/scale/build.py): cost only.
//   npm run build && node bench/run.mjs scale-decode -- [--size 0.5b] [--dtype fp32] [--past 256] [--steps 12]
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { defaultCacheDir, loadModel } from '../src/engine/model/load';
import { ort } from '../src/engine/onnx/runtime';
import { fmt, median, options, sessionOptions } from './common';

/** Milliseconds per operator type in an onnxruntime profile (node events only). */
function byOpType(file: string): Map<string, number> {
  const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  const out = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    out.set(op, (out.get(op) ?? 0) + e.dur / 1000);
  }
  return out;
}

/** Per-step times (ms) of the interleaved steps, and the report's lines. */
export interface DecodeComparison {
  plain: number[];
  instrumented: number[];
  forward: number[];
  lines: string[];
}

/** One KV-cached decoding step after `past` positions, `steps` times, interleaved: see the file's comment. */
export async function decodeComparison(size: string, dtype: string, past: number, steps: number): Promise<DecodeComparison> {
  const folder = path.join(defaultCacheDir(), 'scale', dtype === 'fp32' ? `qwen2.5-coder-${size}` : path.join('views', `${size}-${dtype}`));
  const model = await loadModel(folder);
  // The engine's own run, wrapped to keep the feeds of its last call.
  const inner = (model.session as unknown as { session: ort.InferenceSession }).session;
  let captured: { feeds: Record<string, ort.Tensor>; fetches: string[] } | undefined;
  const run = inner.run.bind(inner);
  (inner as unknown as { run: unknown }).run = (feeds: Record<string, ort.Tensor>, fetches: string[]) => {
    captured = { feeds, fetches };
    return run(feeds, fetches);
  };
  const ids = Array.from({ length: past }, (_, i) => 100 + (i % 3000));
  const first = await model.session.forward({ ids: [ids], cache: true, lastOnly: true });
  const step = { ids: [[7]], mask: [new Array<number>(past + 1).fill(1)], past: first.cache, cache: true, lastOnly: true };
  await model.session.forward(step);
  const engineFeeds = captured!.feeds;
  const engineFetches = captured!.fetches;

  const profiled = (o: ort.InferenceSession.SessionOptions, prefix: string) => ({ ...o, enableProfiling: true, profileFilePrefix: prefix });
  const onnxDir = path.join(folder, 'onnx');
  const instrumented = await ort.InferenceSession.create(readFileSync(path.join(model.cacheDir, 'model.instrumented.onnx')), {
    ...profiled(sessionOptions(), path.join('/tmp', 'np-decode-engine')), extra: { session: { model_external_initializers_file_folder_path: onnxDir } },
  });
  // The view's onnx/model.onnx is the dtype's file (bench/scale.ts links it there).
  const plain = await ort.InferenceSession.create(path.join(onnxDir, 'model.onnx'), profiled(sessionOptions(), path.join('/tmp', 'np-decode-plain')));
  const plainFeeds = Object.fromEntries(plain.inputNames.map((n) => [n, engineFeeds[n]]));
  const plainFetches = plain.outputNames;
  const missing = plain.inputNames.filter((n) => !engineFeeds[n]);
  if (missing.length) throw new Error(`plain inputs not fed by the engine: ${missing.join(', ')}`);

  const times = { plain: [] as number[], instrumented: [] as number[], forward: [] as number[] };
  for (let s = 0; s < steps; s++) {
    let t = performance.now();
    await plain.run(plainFeeds, plainFetches);
    times.plain.push(performance.now() - t);
    t = performance.now();
    await instrumented.run(engineFeeds, engineFetches);
    times.instrumented.push(performance.now() - t);
    t = performance.now();
    await model.session.forward(step);
    times.forward.push(performance.now() - t);
  }
  const files = { plain: plain.endProfiling(), instrumented: instrumented.endProfiling() } as unknown as Record<string, string | undefined>;
  const lines = [
    `# one decoding step at ${size} ${dtype}, ${past} cached positions, ${steps} steps interleaved (median, min–max ms)`, '',
    `plain graph ${fmt(median(times.plain), 0)} (${fmt(Math.min(...times.plain), 0)}–${fmt(Math.max(...times.plain), 0)}); ` +
      `instrumented graph, same feeds as the engine ${fmt(median(times.instrumented), 0)} (${fmt(Math.min(...times.instrumented), 0)}–${fmt(Math.max(...times.instrumented), 0)}); ` +
      `engine forward() ${fmt(median(times.forward), 0)} (${fmt(Math.min(...times.forward), 0)}–${fmt(Math.max(...times.forward), 0)})`,
    `fetches: plain ${plainFetches.length}, engine ${engineFetches.length} (${engineFetches.filter((f) => !f.startsWith('present')).join(', ')})`,
  ];
  const found = (prefix: string) => {
    const dir = '/tmp';
    const f = readdirSync(dir).filter((x) => x.startsWith(prefix)).map((x) => path.join(dir, x));
    return f.sort().pop();
  };
  const pf = files.plain ?? found('np-decode-plain');
  const ef = files.instrumented ?? found('np-decode-engine');
  if (pf && ef) {
    const a = byOpType(pf);
    const b = byOpType(ef);
    const ops = [...new Set([...a.keys(), ...b.keys()])].sort((x, y) => (b.get(y) ?? 0) + (a.get(y) ?? 0) - (b.get(x) ?? 0) - (a.get(x) ?? 0));
    lines.push('', '| operator | plain ms (all steps) | instrumented ms |', '|---|---|---|', ...ops.slice(0, 20).map((o) => `| ${o} | ${fmt(a.get(o) ?? 0, 0)} | ${fmt(b.get(o) ?? 0, 0)} |`));
    rmSync(pf, { force: true });
    rmSync(ef, { force: true });
  }
  await model.release();
  await plain.release();
  await instrumented.release();
  return { ...times, lines };
}

async function main(): Promise<void> {
  const opt = options({ size: { type: 'string', default: '0.5b' }, dtype: { type: 'string', default: 'fp32' }, past: { type: 'string', default: '256' }, steps: { type: 'string', default: '12' } });
  const r = await decodeComparison(opt.size!, opt.dtype!, Number(opt.past), Number(opt.steps));
  process.stdout.write(`${r.lines.join('\n')}\n`);
}

// Run as its own bench only (bench:scale bundles this file for decodeComparison).
if (/scale-decode\.c?js$/.test(process.argv[1] ?? '')) main().catch((e: unknown) => {
  process.stderr.write(`bench/scale-decode: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
