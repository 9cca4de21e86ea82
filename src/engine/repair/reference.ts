// Reference statistics: the second moments E_ref[z zᵀ] of every layer's neurons on reference code. Their diagonal
// says which neurons are quiet elsewhere; the whole matrix says which combinations of neurons are, so a change
// carried by two correlated neurons can cancel on other code while it adds up where the repair needs it.
//
// At a real model's size the matrices are large (layers × m² floats: 2.3 GB for Qwen2.5-Coder-0.5B, 9 GB for
// -1.5B), and the solvers only ever read small blocks of them (a shortlist of neurons, the neurons chosen): they
// live in the cache file and blocks are read from it on demand; only the diagonals stay in memory. Computing them
// holds one layer's matrix at a time: the reference activations of each layer are spilled to a scratch file during
// the forwards, then each layer's Gram matrix is taken over them in onnxruntime and written in place.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { preparePrompt } from '../generate';
import type { LoadedModel } from '../model/load';
import { padRows } from '../model/session';
import { Gram } from './steer';
import { NeuronpatchError } from '../types';

/** Bytes of activations one reference forward may return ([rows, seq, m] × layers, float32). */
const FORWARD_BYTES = 256 * 2 ** 20;
const MAX_BATCH = 8;
/** Positions per Gram product when a layer's matrix is taken over its spilled activations. */
const GRAM_ROWS = 2048;
const FORMAT = 2;

export interface ReferenceStats {
  /** E[z_j²] per layer (the diagonal of the second moments), [layers][m]. */
  meanSquare: Float32Array[];
  /** Reference positions (real tokens) the moments are taken over. */
  positions: number;
  /**
   * E[z_i z_j] of layer `layer` for i, j in `neurons`: a [k, k] row-major block (k = neurons.length), read from
   * the cache file. Throws where the file has gone (the cache was cleared during the repair).
   */
  block(layer: number, neurons: readonly number[]): Float64Array;
}

/** The cache file: [positions, then layer after layer m × m row-major], float32. */
class FileStats implements ReferenceStats {
  constructor(
    private readonly file: string,
    readonly meanSquare: Float32Array[],
    readonly positions: number,
    private readonly m: number,
  ) {}

  block(layer: number, neurons: readonly number[]): Float64Array {
    const { m } = this;
    const k = neurons.length;
    const out = new Float64Array(k * k);
    if (!k) return out;
    // Each neuron's row spans the columns from the smallest to the largest asked for: one read per row.
    const lo = Math.min(...neurons);
    const hi = Math.max(...neurons);
    const span = new Float32Array(hi - lo + 1);
    const bytes = new Uint8Array(span.buffer);
    const fd = openSync(this.file, 'r');
    try {
      neurons.forEach((i, a) => {
        const at = 4 * (1 + layer * m * m + i * m + lo);
        readSync(fd, bytes, 0, bytes.length, at);
        neurons.forEach((j, b) => (out[a * k + b] = span[j - lo]));
      });
    } finally {
      closeSync(fd);
    }
    return out;
  }
}

/** The diagonals of a stats file, read row by row (never the whole file). */
function openStats(file: string, layers: number, m: number): FileStats {
  const fd = openSync(file, 'r');
  try {
    const one = new Float32Array(1);
    readSync(fd, new Uint8Array(one.buffer), 0, 4, 0);
    const meanSquare = Array.from({ length: layers }, (_, L) => {
      const diag = new Float32Array(m);
      const cell = new Float32Array(1);
      const b = new Uint8Array(cell.buffer);
      for (let j = 0; j < m; j++) {
        readSync(fd, b, 0, 4, 4 * (1 + L * m * m + j * m + j));
        diag[j] = cell[0];
      }
      return diag;
    });
    return new FileStats(file, meanSquare, one[0], m);
  } finally {
    closeSync(fd);
  }
}

/** Second moments over every real token of the reference prompts; cached per model and prompt set. `signal` is checked between forwards. */
export async function referenceStats(model: LoadedModel, prompts: string[], signal?: AbortSignal): Promise<ReferenceStats> {
  const { layers, neurons: m } = model.info;
  const key = createHash('sha256').update(JSON.stringify([FORMAT, prompts])).digest('hex').slice(0, 16);
  const file = path.join(model.cacheDir, `reference-${key}.f32`);
  const size = 4 * (1 + layers * m * m);
  if (existsSync(file) && statSync(file).size === size) return openStats(file, layers, m);

  // Pass 1: the forwards, in batches whose activations stay within FORWARD_BYTES; each layer's activations at
  // real tokens are appended to one scratch file per layer.
  // Scratch names of this computation alone: another one may run at once for the same file (a cancelled repair
  // still finishing its forward while a new one starts); the last rename wins, with the same contents.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const spill = Array.from({ length: layers }, (_, L) => `${tmp}.layer${L}`);
  const all = [...Array(layers).keys()];
  let count = 0;
  const fds = spill.map((f) => openSync(f, 'w'));
  const gram = await Gram.create();
  try {
    try {
      const encoded = prompts.map((p) => preparePrompt(model, p, 1, false).ids);
      for (let i = 0; i < encoded.length;) {
        if (signal?.aborted) throw new NeuronpatchError('The repair was cancelled.');
        // Rows while [rows, widest, m] × layers stays within the budget (always at least one).
        let n = 1;
        let widest = encoded[i].length;
        while (i + n < encoded.length && n < MAX_BATCH) {
          const w = Math.max(widest, encoded[i + n].length);
          if ((n + 1) * w * m * layers * 4 > FORWARD_BYTES) break;
          widest = w;
          n++;
        }
        const rows = encoded.slice(i, i + n);
        i += n;
        const { ids, mask, width, start } = padRows(model.graph, rows);
        const res = await model.session.forward({ ids, mask, activations: all, lastOnly: true });
        count += rows.reduce((s, r) => s + r.length, 0);
        for (const L of all) {
          const z = res.activations.get(L)!;
          rows.forEach((r, b) => {
            const from = (b * width + start[b]) * m;
            const part = z.subarray(from, from + r.length * m);
            writeSync(fds[L], new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
          });
        }
      }
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
    // Pass 2: each layer's Gram matrix over its activations, GRAM_ROWS positions at a time, written in place.
    const out = openSync(tmp, 'w');
    try {
      writeSync(out, new Uint8Array(Float32Array.of(count).buffer), 0, 4, 0);
      const chunk = new Float32Array(GRAM_ROWS * m);
      const chunkBytes = new Uint8Array(chunk.buffer);
      for (const L of all) {
        const acc = new Float32Array(m * m);
        const fd = openSync(spill[L], 'r');
        try {
          for (let done = 0; done < count;) {
            const rows = Math.min(GRAM_ROWS, count - done);
            readSync(fd, chunkBytes, 0, rows * m * 4, done * m * 4);
            const g = await gram.of(chunk.subarray(0, rows * m), rows, m);
            for (let k = 0; k < acc.length; k++) acc[k] += g[k];
            done += rows;
          }
        } finally {
          closeSync(fd);
        }
        rmSync(spill[L], { force: true });
        const scale = 1 / Math.max(1, count);
        for (let k = 0; k < acc.length; k++) acc[k] *= scale;
        writeSync(out, new Uint8Array(acc.buffer), 0, acc.byteLength, 4 * (1 + L * m * m));
      }
    } finally {
      closeSync(out);
    }
    renameSync(tmp, file);
  } finally {
    await gram.release();
    for (const f of spill) rmSync(f, { force: true });
    rmSync(tmp, { force: true });
  }
  return openStats(file, layers, m);
}
