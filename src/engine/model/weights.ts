// The weights repair needs, read from the source model's initializers (raw, typed or external data; fp16 → fp32;
// quantized weights dequantized per the op specs, see onnx/quant.ts) on demand and never all at once: a real model's value vectors and unembedding are gigabytes in float32, which
// onnxruntime already holds. One layer's value vectors at a time (a small LRU), single value vectors and
// unembedding rows by themselves, and the whole unembedding only as a scan of row blocks.
import * as fs from 'node:fs';
import type { onnx } from 'onnx-proto';
import { f16ToF32 } from '../onnx/float16';
import { onnx as proto } from '../onnx/proto';
import { dequantizeLinear, dequantizeNBits, nbitsSizes, nbitsZeroPoints } from '../onnx/quant';
import { externalRef, readTensor, readTensorBytes, tensorDims, tensorStorage } from '../onnx/tensor';
import { NeuronpatchError } from '../types';
import { extent, type ModelGraph, type WeightRef } from './graph';

/** Layers of value vectors kept decoded (each [m, d] float32: 17 MB for Qwen2.5-Coder-0.5B). */
const LAYERS_KEPT = 3;
/** Single rows (value vectors, unembedding rows) kept decoded. */
const ROWS_KEPT = 4096;
/** Rows per block when the whole unembedding is scanned. */
export const SCAN_BLOCK = 8192;

/** Reads byte ranges of one initializer's stored values, wherever they live. */
interface Source {
  /** Bytes [offset, offset + length) of the tensor's data. */
  bytes(offset: number, length: number): Uint8Array;
  elementSize: 1 | 2 | 4;
}

const BYTE_TYPES = new Set<number>([proto.TensorProto.DataType.UINT8, proto.TensorProto.DataType.INT8]);

function sourceOf(t: onnx.ITensorProto, baseDir: string): Source {
  const dt = t.dataType ?? 0;
  const elementSize = dt === proto.TensorProto.DataType.FLOAT16 ? 2 : dt === proto.TensorProto.DataType.FLOAT ? 4 : BYTE_TYPES.has(dt) ? 1 : 0;
  if (!elementSize) {
    throw new NeuronpatchError(
      `Initializer ${t.name} has element type ${proto.TensorProto.DataType[dt ?? 0] ?? dt}; only float32 and float16 weights can be read.`,
      'A quantized projection needs a format the engine recognises (see the README).',
    );
  }
  const storage = tensorStorage(t);
  if (storage === 'external') {
    const ref = externalRef(t, baseDir)!;
    let fd: number | undefined;
    return {
      elementSize,
      bytes(offset, length) {
        if (offset + length > ref.length) throw new NeuronpatchError(`Read past the end of initializer ${t.name}.`);
        fd ??= fs.openSync(ref.file, 'r');
        const out = new Uint8Array(length);
        let done = 0;
        while (done < length) {
          const n = fs.readSync(fd, out, done, Math.min(length - done, 1 << 30), ref.offset + offset + done);
          if (n === 0) throw new NeuronpatchError(`Unexpected end of ${ref.file} reading initializer ${t.name}.`, 'Copy or download the external weights file again.');
          done += n;
        }
        return out;
      },
    };
  }
  if (storage === 'raw') {
    const raw = t.rawData!;
    return { elementSize, bytes: (offset, length) => raw.subarray(offset, offset + length) };
  }
  // Typed fields (small models only: protobuf caps a file at 2 GiB): decode once.
  if (elementSize === 1) {
    const all = readTensorBytes(t, baseDir);
    return { elementSize, bytes: (offset, length) => all.subarray(offset, offset + length) };
  }
  const all = readTensor(t, baseDir);
  const bytes = new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
  return { elementSize: 4, bytes: (offset, length) => bytes.subarray(offset, offset + length) };
}

function decode(bytes: Uint8Array, size: 1 | 2 | 4): Float32Array {
  if (size === 1) return Float32Array.from(bytes);
  const aligned = new Uint8Array(bytes.length);
  aligned.set(bytes);
  return size === 4 ? new Float32Array(aligned.buffer) : f16ToF32(new Uint16Array(aligned.buffer));
}

/** A Map used as a least-recently-used cache of at most `max` entries. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): V {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
  return value;
}

export class Weights {
  private readonly tensors = new Map<string, onnx.ITensorProto>();
  private readonly sources = new Map<string, Source>();
  private readonly layers = new Map<number, Float32Array>();
  private readonly rows = new Map<string, Float32Array>();
  private readonly vectors = new Map<string, Float32Array>();

  constructor(
    model: onnx.IModelProto,
    private readonly graph: ModelGraph,
    private readonly baseDir: string,
  ) {
    const refs = [graph.unembedding, ...graph.sites.map((s) => s.weight)];
    const wanted = new Set([graph.finalNorm.gain.name, ...refs.map((r) => r.name)]);
    for (const { quant: q } of refs) {
      if (q?.kind === 'nbits') [q.scales, q.zeroPoints].forEach((n) => n && wanted.add(n));
      if (q?.kind === 'linear') [q.scale, q.zeroPoint].forEach((n) => n && wanted.add(n));
    }
    if (graph.finalNorm.bias) wanted.add(graph.finalNorm.bias.name);
    if (graph.embedding) wanted.add(graph.embedding.name);
    for (const t of model.graph?.initializer ?? []) if (wanted.has(t.name ?? '')) this.tensors.set(t.name ?? '', t);
    // Scales and zero points may also come from Constant nodes.
    for (const n of model.graph?.node ?? []) {
      const out = n.output?.[0] ?? '';
      const value = n.opType === 'Constant' ? n.attribute?.find((a) => a.name === 'value')?.t : undefined;
      if (value && wanted.has(out) && !this.tensors.has(out)) this.tensors.set(out, { ...value, name: out });
    }
  }

  private tensor(name: string): onnx.ITensorProto {
    const t = this.tensors.get(name);
    if (!t) throw new NeuronpatchError(`Initializer ${name} is missing from the model.`);
    return t;
  }

  private source(name: string): Source {
    let s = this.sources.get(name);
    if (!s) this.sources.set(name, (s = sourceOf(this.tensor(name), this.baseDir)));
    return s;
  }

  /** Elements [from, from + count) of a float (fp32/fp16) tensor, as float32. */
  private floats(name: string, from: number, count: number): Float32Array {
    const src = this.source(name);
    return decode(src.bytes(from * src.elementSize, count * src.elementSize), src.elementSize);
  }

  /** Float values of a whole stored scale or zero point (fp32, fp16, int8 or uint8). */
  private numbers(name: string): Float32Array {
    const t = this.tensor(name);
    if (t.dataType === proto.TensorProto.DataType.INT8) return Float32Array.from(new Int8Array(readTensorBytes(t, this.baseDir).buffer));
    if (t.dataType === proto.TensorProto.DataType.UINT8) return Float32Array.from(readTensorBytes(t, this.baseDir));
    return readTensor(t, this.baseDir);
  }

  /** A quantized matrix whole, dequantized, in its stored (logical) layout. */
  private dequantized(ref: WeightRef): Float32Array {
    const t = this.tensor(ref.name);
    const q = ref.quant!;
    if (q.kind === 'nbits') {
      const codes = readTensorBytes(t, this.baseDir);
      const zpTensor = q.zeroPoints ? this.tensor(q.zeroPoints) : undefined;
      const zp = !zpTensor ? undefined
        : zpTensor.dataType === proto.TensorProto.DataType.UINT8 ? { packed: readTensorBytes(zpTensor, this.baseDir) } : { floats: this.numbers(q.zeroPoints!) };
      return dequantizeNBits(q, codes, this.numbers(q.scales), nbitsZeroPoints(q, zp));
    }
    const [K, N] = ref.dims;
    const zero = q.zeroPoint ? this.numbers(q.zeroPoint) : Float32Array.of(0);
    return dequantizeLinear(K, N, readTensorBytes(t, this.baseDir), t.dataType === proto.TensorProto.DataType.INT8, this.numbers(q.scale), zero);
  }

  /**
   * Logical rows [from, to) of a quantized weight: MatMulNBits rows (its [N, K] rows: the lm_head's tokens) are
   * dequantized by themselves from their byte ranges; anything else is dequantized whole (one layer at most).
   */
  private quantRows(ref: WeightRef, from: number, to: number): Float32Array {
    const q = ref.quant!;
    const n = to - from;
    if (q.kind === 'nbits' && ref.layout === 'rows') {
      const { blocks, blob, zpRow } = nbitsSizes(q);
      const sub = { ...q, N: n };
      const codes = this.source(ref.name).bytes(from * blocks * blob, n * blocks * blob);
      const scales = this.floats(q.scales, from * blocks, n * blocks);
      let zp: { packed?: Uint8Array; floats?: Float32Array } | undefined;
      if (q.zeroPoints) {
        const zt = this.tensor(q.zeroPoints);
        zp = zt.dataType === proto.TensorProto.DataType.UINT8
          ? { packed: this.source(q.zeroPoints).bytes(from * zpRow, n * zpRow) }
          : { floats: this.floats(q.zeroPoints, from * blocks, n * blocks) };
      }
      return dequantizeNBits(sub, codes, scales, nbitsZeroPoints(sub, zp));
    }
    const raw = this.dequantized(ref);
    const [count, width] = extent(ref);
    if (ref.layout === 'rows') return raw.slice(from * width, to * width);
    const out = new Float32Array(n * width);
    for (let i = 0; i < width; i++) for (let t = from; t < to; t++) out[(t - from) * width + i] = raw[i * count + t];
    return out;
  }

  /**
   * Logical rows [from, to) of a weight as row-major [to − from, width] float32, whatever its stored layout:
   * one read for 'rows', one read per stored row (strided) for 'cols'.
   */
  rowsOf(ref: WeightRef, from: number, to: number): Float32Array {
    const [count, width] = extent(ref);
    if (!(from >= 0 && to <= count && from <= to)) throw new NeuronpatchError(`Rows ${from}–${to} of ${ref.name}: it has ${count}.`);
    if (ref.quant) return this.quantRows(ref, from, to);
    const dims = tensorDims(this.tensor(ref.name));
    if (dims.join(',') !== ref.dims.join(',')) throw new NeuronpatchError(`Initializer ${ref.name} has dims [${dims}], the graph expected [${ref.dims}].`);
    const src = this.source(ref.name);
    const s = src.elementSize;
    const n = to - from;
    if (ref.layout === 'rows') return decode(src.bytes(from * width * s, n * width * s), s);
    // Stored [width, count]: logical row t is stored column t.
    const out = new Float32Array(n * width);
    for (let i = 0; i < width; i++) {
      const col = decode(src.bytes((i * count + from) * s, n * s), s);
      for (let t = 0; t < n; t++) out[t * width + i] = col[t];
    }
    return out;
  }

  private vector(ref: WeightRef): Float32Array {
    const hit = this.vectors.get(ref.name);
    if (hit) return hit;
    const n = ref.dims.reduce((a, b) => a * b, 1);
    return remember(this.vectors, ref.name, this.floats(ref.name, 0, n), 8);
  }

  private site(layer: number) {
    const site = this.graph.sites[layer];
    if (!site) throw new NeuronpatchError(`No layer ${layer}: the model has ${this.graph.sites.length} layers.`);
    return site;
  }

  /** W_out of a layer as [m, d]: row j is neuron j's value vector v_j. The last few layers read stay decoded. */
  valueVectors(layer: number): Float32Array {
    const hit = this.layers.get(layer);
    if (hit) return remember(this.layers, layer, hit, LAYERS_KEPT);
    const ref = this.site(layer).weight;
    return remember(this.layers, layer, this.rowsOf(ref, 0, extent(ref)[0]), LAYERS_KEPT);
  }

  /** v_j of one neuron, [d]: read by itself unless its layer is decoded already (or must be: quantized columns). */
  valueVector(layer: number, neuron: number, width: number): Float32Array {
    const whole = this.layers.get(layer);
    if (whole) return whole.subarray(neuron * width, (neuron + 1) * width);
    const ref = this.site(layer).weight;
    if (ref.quant && !(ref.quant.kind === 'nbits' && ref.layout === 'rows')) return this.valueVectors(layer).subarray(neuron * width, (neuron + 1) * width);
    const key = `v${layer}.${neuron}`;
    const hit = this.rows.get(key);
    if (hit) return remember(this.rows, key, hit, ROWS_KEPT);
    return remember(this.rows, key, this.rowsOf(ref, neuron, neuron + 1), ROWS_KEPT);
  }

  /** W_U[t], [d]: token t's unembedding row. */
  unembeddingRow(token: number): Float32Array {
    const key = `u${token}`;
    const hit = this.rows.get(key);
    if (hit) return remember(this.rows, key, hit, ROWS_KEPT);
    return remember(this.rows, key, this.rowsOf(this.graph.unembedding, token, token + 1), ROWS_KEPT);
  }

  /** W_U as [V, d] in blocks of at most `block` rows, in order, each read when asked for; nothing is kept. */
  *unembeddingBlocks(block = SCAN_BLOCK): Generator<{ from: number; rows: Float32Array }> {
    const [V] = extent(this.graph.unembedding);
    for (let from = 0; from < V; from += block) yield { from, rows: this.rowsOf(this.graph.unembedding, from, Math.min(V, from + block)) };
  }

  finalGain(): Float32Array {
    return this.vector(this.graph.finalNorm.gain);
  }

  finalBias(): Float32Array | undefined {
    return this.graph.finalNorm.bias ? this.vector(this.graph.finalNorm.bias) : undefined;
  }
}
