// Side effects of baselines that change weights outside the engine (tools/baseline/sgd.py: SGD on every down_proj,
// the MINT re-implementation), measured exactly as the engine measures its own patches (repair/measures.ts): each
// case's down_proj change ([layers, m, d] float32, row j = neuron j's value-vector change) is fed to the
// instrumented graph as value-vector edits of every changed neuron.
//   node bench/run.mjs measure-deltas --results R.json --regression F [--guard F] [--unseen-guard F] [--held-out F] [--cases F]
// Reads the baseline's JSON (one object, `results[].deltaFile`), writes it back to stdout with per-case measures.
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/engine/model/load';
import type { LayerEdits } from '../src/engine/model/session';
import { type GuardLine, measureSideEffects } from '../src/engine/repair/measures';
import { generalization, greedyLines } from '../src/engine/repair/verify';
import { options } from './common';

const opt = options({
  results: { type: 'string' }, regression: { type: 'string' }, guard: { type: 'string' }, 'unseen-guard': { type: 'string' },
  'held-out': { type: 'string' }, cases: { type: 'string' },
});
const jsonl = <T>(file?: string): T[] => (file ? readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T) : []);

async function main(): Promise<void> {
  const out = JSON.parse(readFileSync(opt.results!, 'utf8')) as { results: Record<string, unknown>[] };
  const model = await loadModel(opt.model!);
  const { layers, neurons: m, width: d } = model.info;
  const prompts = jsonl<{ prompt: string }>(opt.regression).map((p) => p.prompt);
  const heldOut = opt['held-out'] ? jsonl<{ prompt: string }>(opt['held-out']).map((p) => p.prompt) : prompts;
  const guard = jsonl<GuardLine>(opt.guard);
  const unseen = jsonl<GuardLine>(opt['unseen-guard']);
  const cases = new Map(jsonl<{ id: string; variants?: { prompt: string; desired: string }[] }>(opt.cases).map((c) => [c.id, c]));
  const before = await greedyLines(model, prompts);
  for (const r of out.results) {
    if (typeof r.deltaFile !== 'string') continue;
    const buf = readFileSync(r.deltaFile);
    const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    if (all.length !== layers * m * d) throw new Error(`${r.deltaFile}: ${all.length} numbers, expected ${layers}×${m}×${d}`);
    const edits: LayerEdits = new Map();
    for (let L = 0; L < layers; L++) {
      const indices: number[] = [];
      const rows: Float32Array[] = [];
      for (let j = 0; j < m; j++) {
        const row = all.subarray((L * m + j) * d, (L * m + j + 1) * d);
        if (row.some((x) => x !== 0)) {
          indices.push(j);
          rows.push(row);
        }
      }
      if (indices.length) {
        const deltas = new Float32Array(indices.length * d);
        rows.forEach((row, k) => deltas.set(row, k * d));
        edits.set(L, { indices, deltas });
      }
    }
    const fx = await measureSideEffects(model, { prompts, before, guard, heldOut }, undefined, edits);
    const u = unseen.length ? await measureSideEffects(model, { prompts: [], guard: unseen }, undefined, edits) : undefined;
    const variants = cases.get(String(r.id))?.variants ?? [];
    Object.assign(r, {
      tokenLocality: fx.tokenLocality, kept: fx.kept, keptUnseen: u?.kept ?? null, lossChange: fx.lossChange, meanKl: fx.meanKl,
      nextTokenSpecificity: fx.nextToken, specificity: fx.linesUnchanged,
      // The variants decoded by the engine with the same edits (the twin's own figure is kept as twinGeneralization).
      twinGeneralization: r.generalization ?? null,
      generalization: variants.length ? await generalization(model, variants, edits) : null,
    });
    process.stderr.write(`measure-deltas: ${String(r.id)} tokens ${fx.tokenLocality?.toFixed(4)} kept ${fx.kept?.kept}/${fx.kept?.of} loss ${fx.lossChange?.toExponential(2)}\n`);
  }
  await model.release();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}
main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
