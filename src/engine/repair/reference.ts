// Reference statistics: the mean square activation E_ref[z_j²] of every neuron on reference code. A neuron that is
// rarely active elsewhere can carry a change without disturbing other completions; these numbers say which.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { preparePrompt } from '../generate';
import type { LoadedModel } from '../model/load';

const BATCH = 8;

/** Per layer, E[z_j²] over every real token of the reference prompts; cached per model and prompt set. */
export async function referenceStats(model: LoadedModel, prompts: string[]): Promise<Float32Array[]> {
  const { layers, neurons: m } = model.info;
  const key = createHash('sha256').update(JSON.stringify(prompts)).digest('hex').slice(0, 16);
  const file = path.join(model.cacheDir, `reference-${key}.f32`);
  if (existsSync(file)) {
    const buf = readFileSync(file);
    if (buf.length === layers * m * 4) {
      const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
      return Array.from({ length: layers }, (_, L) => all.subarray(L * m, (L + 1) * m));
    }
  }
  const sums = new Float64Array(layers * m);
  let count = 0;
  const all = [...Array(layers).keys()];
  for (let i = 0; i < prompts.length; i += BATCH) {
    const rows = prompts.slice(i, i + BATCH).map((p) => preparePrompt(model, p, 1, false).ids);
    const width = Math.max(...rows.map((r) => r.length));
    const ids = rows.map((r) => [...new Array<number>(width - r.length).fill(r[0]), ...r]);
    const mask = rows.map((r) => [...new Array<number>(width - r.length).fill(0), ...r.map(() => 1)]);
    const res = await model.session.forward({ ids, mask, activations: all });
    for (let b = 0; b < rows.length; b++) {
      for (let t = width - rows[b].length; t < width; t++) {
        count++;
        for (let L = 0; L < layers; L++) {
          const z = res.activations.get(L)!;
          const off = (b * width + t) * m;
          for (let j = 0; j < m; j++) sums[L * m + j] += z[off + j] * z[off + j];
        }
      }
    }
  }
  const stats = Float32Array.from(sums, (s) => s / Math.max(1, count));
  await writeFileAtomic(file, Buffer.from(stats.buffer));
  return Array.from({ length: layers }, (_, L) => stats.subarray(L * m, (L + 1) * m));
}
