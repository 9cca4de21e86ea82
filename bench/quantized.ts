// What 4-bit quantization does to a repair, and how to export one. The same first N dev cases are repaired
// (minimal method, the first R regression prompts for side effects) on the fp32 demo model and on its q4 file
// (tools/formats/convert.py: MatMulNBits, block 32), side by side: fixed or not, neurons, line specificity. Each q4
// patch is then exported both ways — a float side branch beside the quantized projection, and re-quantized blocks
// — and each exported file, in a plain onnxruntime session, is compared with the engine's patched forward on the
// case's prompt + desired text (max |Δlogit|) and decoded greedily (does it still give the repaired completion?).
//   npm run bench:quantized -- [--limit 12] [--regression-limit 48] [--format q4] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { exportPatched } from '../src/engine/export/export';
import { generate } from '../src/engine/generate';
import { loadModel, type LoadedModel } from '../src/engine/model/load';
import { ort } from '../src/engine/onnx/runtime';
import { patchSet } from '../src/engine/patches/patchset';
import { repair } from '../src/engine/repair/index';
import { NeuronpatchError, type RepairCase, type RepairResult } from '../src/engine/types';
import { fmt, median, options, ROOT } from './common';

function readJsonl<T>(file: string): T[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
}

/** Logits [1, seq, V] of a file in a plain session (float32 or float16 outputs). */
async function plainLogits(file: string, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(file);
  const int64 = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
  const feeds: Record<string, ort.Tensor> = {};
  for (const m of s.inputMetadata) {
    if (!m.isTensor) continue;
    if (m.name === 'input_ids') feeds[m.name] = int64(ids);
    else if (m.name === 'attention_mask') feeds[m.name] = int64(ids.map(() => 1));
    else if (m.name === 'position_ids') feeds[m.name] = int64(ids.map((_, i) => i));
    else feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), m.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? 1 : 0)));
  }
  const out = await s.run(feeds, ['logits']);
  await s.release();
  return out.logits.data as Float32Array;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function main(): Promise<void> {
  const opt = options({ limit: { type: 'string', default: '12' }, 'regression-limit': { type: 'string', default: '48' }, format: { type: 'string', default: 'q4' } });
  const cases = readJsonl<RepairCase>(path.join(ROOT, 'bench', 'cases', 'dev.jsonl')).slice(0, Number(opt.limit));
  const regression = readJsonl<{ prompt: string }>(path.join(ROOT, 'bench', 'cases', 'regression.jsonl')).slice(0, Number(opt['regression-limit'])).map((r) => r.prompt);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'np-bench-quant-'));
  const qdir = path.join(tmp, opt.format);
  execFileSync('/usr/bin/python3', [path.join(ROOT, 'tools', 'formats', 'convert.py'), path.join(ROOT, 'models', 'demo'), qdir, '--format', opt.format], { stdio: 'inherit' });
  const cache = path.join(tmp, 'cache');
  const models: Record<string, LoadedModel> = {
    fp32: await loadModel(path.join(ROOT, 'models', 'demo'), { cacheDir: cache }),
    [opt.format]: await loadModel(qdir, { cacheDir: cache }),
  };
  type Row = { id: string; alreadyRight?: string[]; fp32?: RepairResult; quant?: RepairResult; sideBranch?: { diff: number; fixed: boolean }; requantize?: { diff: number; fixed: boolean; weightError: number } };
  const rows: Row[] = [];
  for (const [i, c] of cases.entries()) {
    const row: Row = { id: c.id ?? String(i) };
    for (const [name, m] of Object.entries(models)) {
      let r: RepairResult | undefined;
      try {
        r = await repair(m, c, { method: 'minimal', regression, analyse: false });
      } catch (e) {
        // A case the model already completes (the quantization error can fix one as well as break one).
        if (!(e instanceof NeuronpatchError) || !/already completes/.test(e.message)) throw e;
        (row.alreadyRight ??= []).push(name);
      }
      if (name === 'fp32') row.fp32 = r;
      else row.quant = r;
    }
    const r = row.quant;
    if (r?.success) {
      const m = models[opt.format];
      const ids = m.tokenizer.encode(c.prompt + c.desired);
      const patched = (await m.session.forward({ ids: [ids], edits: patchSet([r.patch], m.info.width) })).logits;
      for (const method of ['side-branch', 'requantize'] as const) {
        const out = path.join(tmp, `export-${i}-${method}`);
        const res = await exportPatched({ sourceFolder: qdir, onnxPath: m.onnxPath, graph: m.graph, patches: [r.patch], outDir: out, quantized: method });
        const file = path.join(out, 'model.onnx');
        const diff = maxAbsDiff(await plainLogits(file, ids), patched);
        const exported = await loadModel(out, { cacheDir: cache });
        const [after] = await generate(exported, [c.prompt], { maxNewTokens: 48 });
        await exported.release();
        const fixed = after.completion === r.after;
        if (method === 'side-branch') row.sideBranch = { diff, fixed };
        else row.requantize = { diff, fixed, weightError: res.quantized?.maxWeightError ?? NaN };
      }
    }
    rows.push(row);
    const state = (x?: RepairResult) => (!x ? 'already right' : x.success ? `fixed (${x.neurons.length} neurons)` : 'not fixed');
    process.stderr.write(`bench/quantized: case ${i + 1}/${cases.length}: fp32 ${state(row.fp32)}, ${opt.format} ${state(row.quant)}\n`);
  }
  for (const m of Object.values(models)) await m.release();
  const summary = (pick: (r: Row) => RepairResult | undefined) => {
    const rs = rows.map(pick).filter((r): r is RepairResult => !!r);
    const ok = rs.filter((r) => r.success);
    return {
      fixed: ok.length, of: rs.length,
      neurons: median(ok.map((r) => r.neurons.length)),
      specificity: median(ok.map((r) => r.specificity ?? NaN).filter(Number.isFinite)),
      fellBack: ok.filter((r) => r.method === 'joint').length,
    };
  };
  const both = rows.filter((r) => r.fp32?.success && r.quant?.success);
  const exports = rows.filter((r) => r.sideBranch);
  const result = {
    cases: rows.length, regression: regression.length, format: opt.format,
    alreadyRight: { fp32: rows.filter((r) => r.alreadyRight?.includes('fp32')).length, quant: rows.filter((r) => r.alreadyRight?.includes(opt.format)).length },
    fp32: summary((r) => r.fp32), quant: summary((r) => r.quant),
    sameNeurons: both.filter((r) => r.fp32!.neurons.map((n) => `${n.layer}:${n.neuron}`).sort().join() === r.quant!.neurons.map((n) => `${n.layer}:${n.neuron}`).sort().join()).length,
    bothFixed: both.length,
    export: {
      sideBranch: { medianDiff: median(exports.map((r) => r.sideBranch!.diff)), maxDiff: Math.max(...exports.map((r) => r.sideBranch!.diff)), reproduces: exports.filter((r) => r.sideBranch!.fixed).length },
      requantize: { medianDiff: median(exports.map((r) => r.requantize!.diff)), maxDiff: Math.max(...exports.map((r) => r.requantize!.diff)), reproduces: exports.filter((r) => r.requantize!.fixed).length, medianWeightError: median(exports.map((r) => r.requantize!.weightError)) },
      of: exports.length,
    },
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const s = (x: ReturnType<typeof summary>) => `${x.fixed}/${x.of} | ${fmt(x.neurons ?? NaN, 1)} | ${x.specificity === null || Number.isNaN(x.specificity) ? '—' : `${fmt(100 * x.specificity, 1)} %`} | ${x.fellBack}`;
  process.stdout.write([
    `minimal repair of the first ${rows.length} dev cases, side effects on ${regression.length} regression prompts`,
    '',
    '| model | fixed | median neurons | median line specificity | fell back to joint |',
    '|---|---|---|---|---|',
    `| fp32 | ${s(result.fp32)} |`,
    `| ${opt.format} | ${s(result.quant)} |`,
    '',
    `already right before any repair: fp32 ${result.alreadyRight.fp32}, ${opt.format} ${result.alreadyRight.quant}; fixed on both: ${result.bothFixed}; the same neurons on both: ${result.sameNeurons}`,
    '',
    `export of the ${result.export.of} ${opt.format} patches, against the engine's patched logits on prompt + desired:`,
    '',
    '| export | median max |Δlogit| | worst | exported file gives the repaired completion | median max weight error |',
    '|---|---|---|---|---|',
    `| float side branch | ${result.export.sideBranch.medianDiff?.toExponential(2)} | ${result.export.sideBranch.maxDiff.toExponential(2)} | ${result.export.sideBranch.reproduces}/${result.export.of} | 0 (weights untouched) |`,
    `| re-quantized blocks | ${result.export.requantize.medianDiff?.toExponential(2)} | ${result.export.requantize.maxDiff.toExponential(2)} | ${result.export.requantize.reproduces}/${result.export.of} | ${result.export.requantize.medianWeightError?.toExponential(2)} |`,
    '',
  ].join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
