// Forward latency: the engine's instrumented session (interventions at their neutral values, logits only) against
// a plain onnxruntime-node session on the original model.onnx, same inputs, same session options. Repetitions
// are interleaved (the order alternates every repetition), medians are compared. Target: ≤ 1.05×.
// The two must compute the same logits: the largest |Δ logit| over every shape is printed, and the bench exits 1
// when it exceeds the tolerance (default 1e-4 logits for fp32 weights, 1e-2 for fp16; `--tolerance`).
//   npm run bench:forward -- [--model DIR] [--reps 30] [--threads N] [--tolerance X] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { loadModel } from '../src/engine/model/load';
import { fmt, median, mulberry32, options, PlainModel } from './common';

async function main(): Promise<void> {
  const opt = options({ reps: { type: 'string', default: '30' }, warmup: { type: 'string', default: '3' }, tolerance: { type: 'string' } });
  const threads = opt.threads ? Number(opt.threads) : undefined;
  const reps = Number(opt.reps);
  const engine = await loadModel(opt.model, { threads });
  const plain = await PlainModel.open(opt.model, threads);
  const { vocab, layers } = engine.info;
  // fp32: a fused and an unfused graph round differently by ~1e-6 of the logits; fp16 outputs are rounded to fp16.
  const tolerance = opt.tolerance !== undefined ? Number(opt.tolerance) : engine.info.weightType === 'float16' ? 1e-2 : 1e-4;
  if (!(tolerance >= 0)) throw new Error(`--tolerance must be a number ≥ 0, not ${JSON.stringify(opt.tolerance)}`);
  const random = mulberry32(7);
  const shapes: [number, number][] = [[1, 64], [1, 256], [16, 64], [16, 256]];
  const rows = [];
  for (const [b, t] of shapes) {
    if (t > engine.info.context) continue;
    const ids = Array.from({ length: b }, () => Array.from({ length: t }, () => 1 + Math.floor(random() * (vocab - 1))));
    const runPlain = async () => {
      const out = await plain.session.run(plain.feeds(ids), ['logits']);
      return out.logits.data as Float32Array;
    };
    const runEngine = async () => (await engine.session.forward({ ids })).logits;
    const allLayers = Array.from({ length: layers }, (_, l) => l);
    const runTraced = async () => (await engine.session.forward({ ids, activations: allLayers, residual: true })).logits;

    for (let i = 0; i < Number(opt.warmup); i++) {
      await runPlain();
      await runEngine();
      await runTraced();
    }
    // Same logits: the instrumented graph at neutral interventions reproduces the model.
    const [a, e] = [await runPlain(), await runEngine()];
    if (a.length !== e.length) throw new Error(`${b}×${t}: ${a.length} plain logits vs ${e.length} from the engine`);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i] - e[i]);
      if (!(d <= maxDiff)) maxDiff = d; // NaN propagates
    }

    const times: Record<'plain' | 'engine' | 'traced', number[]> = { plain: [], engine: [], traced: [] };
    const timed = async (key: keyof typeof times, f: () => Promise<unknown>) => {
      const s = performance.now();
      await f();
      times[key].push(performance.now() - s);
    };
    for (let r = 0; r < reps; r++) {
      const order: [keyof typeof times, () => Promise<unknown>][] = [['plain', runPlain], ['engine', runEngine], ['traced', runTraced]];
      if (r % 2) order.reverse();
      for (const [k, f] of order) await timed(k, f);
    }
    const row = {
      batch: b, seq: t, plainMs: median(times.plain), engineMs: median(times.engine), tracedMs: median(times.traced),
      ratio: median(times.engine) / median(times.plain), tracedRatio: median(times.traced) / median(times.plain), maxAbsDiff: maxDiff,
    };
    rows.push(row);
    if (!opt.json) process.stderr.write(`  ${b}×${t}: ${fmt(row.ratio, 3)}×\n`);
  }
  await engine.release();
  await plain.release();
  const maxAbsDiff = rows.reduce((m, r) => (r.maxAbsDiff <= m ? m : r.maxAbsDiff), 0);
  const sameLogits = maxAbsDiff <= tolerance;
  const summary = {
    model: engine.info.name, hash: engine.info.hash, reps, threads: threads ?? 0, rows, worstRatio: Math.max(...rows.map((r) => r.ratio)),
    maxAbsDiff, tolerance, sameLogits,
  };
  if (!sameLogits) process.exitCode = 1;
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  const lines = [
    `forward latency, ${engine.info.name} (${engine.info.architecture}, ${engine.info.layers} layers), median of ${reps} interleaved repetitions, intra-op threads ${threads ?? 'default'}`,
    '',
    '| batch × seq | plain ms | engine ms | engine / plain | engine + all activations ms | / plain | max abs Δ logits |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.batch} × ${r.seq} | ${fmt(r.plainMs)} | ${fmt(r.engineMs)} | **${fmt(r.ratio, 3)}×** | ${fmt(r.tracedMs)} | ${fmt(r.tracedRatio, 3)}× | ${r.maxAbsDiff.toExponential(1)} |`),
    '',
    `worst engine / plain: ${fmt(summary.worstRatio, 3)}× (target ≤ 1.05×)`,
    `max |logit(engine) − logit(plain)| over all shapes: ${maxAbsDiff.toExponential(2)} (tolerance ${tolerance.toExponential(0)}): ${sameLogits ? 'same logits' : 'DIFFERENT LOGITS, exit 1'}`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/forward: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
