// Reference statistics: the second moments E_ref[z zᵀ] of every layer's neurons on reference code. Their diagonal
// says which neurons are quiet elsewhere; the whole matrix says which combinations of neurons are, so a change
// carried by two correlated neurons can cancel on other code while it adds up where the repair needs it.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { preparePrompt } from '../generate';
import type { LoadedModel } from '../model/load';
import { padRows } from '../model/session';
import { Gram } from './steer';

const BATCH = 8;
const FORMAT = 2;

export interface ReferenceStats {
  /** E[z_j²] per layer (the diagonal of `second`). */
  meanSquare: Float32Array[];
  /** E[z zᵀ] per layer, m × m row-major. */
  second: Float32Array[];
  positions: number;
}

function fromBuffer(buf: Float32Array, layers: number, m: number): ReferenceStats {
  const positions = buf[0];
  const second = Array.from({ length: layers }, (_, L) => buf.subarray(1 + L * m * m, 1 + (L + 1) * m * m));
  const meanSquare = second.map((c) => Float32Array.from({ length: m }, (_, j) => c[j * m + j]));
  return { meanSquare, second, positions };
}

/** Second moments over every real token of the reference prompts; cached per model and prompt set. */
export async function referenceStats(model: LoadedModel, prompts: string[]): Promise<ReferenceStats> {
  const { layers, neurons: m } = model.info;
  const key = createHash('sha256').update(JSON.stringify([FORMAT, prompts])).digest('hex').slice(0, 16);
  const file = path.join(model.cacheDir, `reference-${key}.f32`);
  const size = 1 + layers * m * m;
  if (existsSync(file)) {
    const bytes = readFileSync(file);
    if (bytes.length === size * 4) return fromBuffer(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)), layers, m);
  }
  const sums = Array.from({ length: layers }, () => new Float64Array(m * m));
  let count = 0;
  const all = [...Array(layers).keys()];
  const gram = await Gram.create();
  try {
    for (let i = 0; i < prompts.length; i += BATCH) {
      const rows = prompts.slice(i, i + BATCH).map((p) => preparePrompt(model, p, 1, false).ids);
      const { ids, mask, width, start } = padRows(model.graph, rows);
      const res = await model.session.forward({ ids, mask, activations: all });
      const real = rows.reduce((s, r) => s + r.length, 0);
      count += real;
      for (const L of all) {
        const z = res.activations.get(L)!;
        const picked = new Float32Array(real * m);
        let at = 0;
        rows.forEach((r, b) => {
          const from = (b * width + start[b]) * m;
          picked.set(z.subarray(from, from + r.length * m), at);
          at += r.length * m;
        });
        const g = await gram.of(picked, real, m);
        const acc = sums[L];
        for (let k = 0; k < acc.length; k++) acc[k] += g[k];
      }
    }
  } finally {
    await gram.release();
  }
  const buf = new Float32Array(size);
  buf[0] = count;
  sums.forEach((acc, L) => {
    for (let k = 0; k < acc.length; k++) buf[1 + L * m * m + k] = acc[k] / Math.max(1, count);
  });
  await writeFileAtomic(file, Buffer.from(buf.buffer));
  return fromBuffer(buf, layers, m);
}
