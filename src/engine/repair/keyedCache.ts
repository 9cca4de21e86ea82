// The keyed method's per-model, per-reference-set values: x̂ (the FFN input) of the protected code (reference
// prompts, guard lines) at the candidate layers, and each layer's whitening (mean and Cholesky factor of the
// covariance). They depend on the model and the exact token sequences only, and computing them is a forward over
// every protected position plus a Cholesky factorization per layer (seconds on the 4M demo model, minutes at
// 0.5B): they are kept in memory per loaded model and in the model's verified derived cache (derivedCache.ts,
// binary entry `keyed-<hash>.bin`), so that a second repair, or one after the model is opened again, reads them.
// What is read back is exactly what was computed (float32 rows, float64 mean and factor): cached and uncached
// repairs make bit-identical patches.
import { type CacheOutcome, cachedDerivedBinary, inputsHash } from '../model/derivedCache';
import type { LoadedModel } from '../model/load';
import { type ProtectedInputs, protectedInputs, rememberWhitening, whitening, WHITENING_PARAMS, type Whitening } from './keyed';

/** Bumped when x̂, the whitening or the entry's layout changes meaning: older entries are recomputed. */
const FORMAT = 1;
/** Reference sets kept in memory per loaded model (each tens to hundreds of MB at a real model's size). */
const KEEP = 2;

interface Meta {
  positions: number;
  width: number;
  layers: number[];
}

const memory = new WeakMap<LoadedModel, Map<string, ProtectedInputs>>();

/**
 * x̂ of `sequences` (token ids) at `layers` on the unpatched model, with the whitening of each layer ready
 * (keyed.ts's whitening() returns it without computing): from memory, from the derived cache when its entry
 * verifies, or computed and written there. `cache` says which, and why an entry was not used.
 * Layout of the entry's bytes: per layer the mean [d] and the factor's lower triangle [d(d+1)/2] (float64), then
 * per layer the rows [positions, d] (float32), then the next tokens [positions] (int32).
 */
export async function protectedCode(model: LoadedModel, sequences: number[][], layers: number[]): Promise<{ protect: ProtectedInputs; cache: CacheOutcome | 'memory' }> {
  const d = model.info.width;
  const inputs = inputsHash([FORMAT, layers, WHITENING_PARAMS, sequences]);
  const byModel = memory.get(model) ?? new Map<string, ProtectedInputs>();
  memory.set(model, byModel);
  const known = byModel.get(inputs);
  if (known) {
    // Most recently used last.
    byModel.delete(inputs);
    byModel.set(inputs, known);
    return { protect: known, cache: 'memory' };
  }
  const total = sequences.reduce((s, r) => s + r.length, 0);
  const tri = (d * (d + 1)) / 2;
  const expected = layers.length * (d + tri) * 8 + layers.length * total * d * 4 + total * 4;
  const check = (meta: unknown, bytes: Uint8Array): string | undefined => {
    const m = meta as Partial<Meta> | null;
    if (!m || m.positions !== total || m.width !== d || JSON.stringify(m.layers) !== JSON.stringify(layers)) return 'not the shape asked for';
    return bytes.byteLength === expected ? undefined : `${bytes.byteLength} bytes, ${expected} expected`;
  };
  const { value, cache } = await cachedDerivedBinary<Meta, ProtectedInputs>(
    model.cacheDir, { kind: 'keyed', format: FORMAT, model: model.info.hash, inputs }, check,
    async () => {
      const p = await protectedInputs(model, sequences, layers);
      const ws: Whitening[] = [];
      for (const L of layers) ws.push(await whitening(p, L, d));
      const parts: Uint8Array[] = [];
      for (const w of ws) {
        parts.push(bytesOf(w.mean));
        const packed = new Float64Array(tri);
        for (let i = 0, o = 0; i < d; i++, o += i) packed.set(w.factor.subarray(i * d, i * d + i + 1), o);
        parts.push(bytesOf(packed));
      }
      for (const L of layers) parts.push(bytesOf(p.rows.get(L)!));
      parts.push(bytesOf(p.next));
      return { value: p, meta: { positions: total, width: d, layers }, parts };
    },
    ({ bytes }) => {
      const buf = bytes.buffer;
      let at = bytes.byteOffset;
      const f64 = (n: number) => { const v = new Float64Array(buf, at, n); at += n * 8; return v; };
      const f32 = (n: number) => { const v = new Float32Array(buf, at, n); at += n * 4; return v; };
      const ws = layers.map((layer) => {
        const mean = f64(d);
        const packed = f64(tri);
        const factor = new Float64Array(d * d);
        for (let i = 0, o = 0; i < d; i++, o += i) factor.set(packed.subarray(o, o + i + 1), i * d);
        return { layer, mean, factor };
      });
      const rows = new Map(layers.map((L) => [L, f32(total * d)]));
      const next = new Int32Array(buf, at, total);
      const p: ProtectedInputs = { positions: total, rows, next };
      for (const w of ws) rememberWhitening(p, w);
      return p;
    },
  );
  byModel.set(inputs, value);
  while (byModel.size > KEEP) byModel.delete(byModel.keys().next().value!);
  return { protect: value, cache };
}

const bytesOf = (a: Float64Array | Float32Array | Int32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
