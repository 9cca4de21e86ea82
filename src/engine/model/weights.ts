// The weights repair needs, read from the source model's initializers (raw, typed or external data; fp16 → fp32;
// quantized weights dequantized per the op specs, see onnx/quant.ts) on first use, one matrix at a time, and kept
// in the engine's layout: value vectors as rows, the unembedding as [V, d] rows.
import { onnx } from 'onnx-proto';
import { dequantizeLinear, dequantizeNBits, nbitsZeroPoints } from '../onnx/quant';
import { readTensor, readTensorBytes } from '../onnx/tensor';
import { NeuronpatchError } from '../types';
import type { ModelGraph, WeightRef } from './graph';

export class Weights {
  private readonly tensors = new Map<string, onnx.ITensorProto>();
  private readonly cache = new Map<string, Float32Array>();

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

  /** Float values of a stored scale or zero point (fp32, fp16, int8 or uint8). */
  private numbers(name: string): Float32Array {
    const t = this.tensor(name);
    if (t.dataType === onnx.TensorProto.DataType.INT8) return Float32Array.from(new Int8Array(readTensorBytes(t, this.baseDir).buffer));
    if (t.dataType === onnx.TensorProto.DataType.UINT8) return Float32Array.from(readTensorBytes(t, this.baseDir));
    return readTensor(t, this.baseDir);
  }

  /** The stored matrix of `ref` as float32 in its stored (logical) layout, dequantized where it is quantized. */
  private stored(ref: WeightRef): Float32Array {
    const t = this.tensor(ref.name);
    const q = ref.quant;
    if (!q) return readTensor(t, this.baseDir);
    if (q.kind === 'nbits') {
      const codes = readTensorBytes(t, this.baseDir);
      const zpTensor = q.zeroPoints ? this.tensor(q.zeroPoints) : undefined;
      const zp = !zpTensor ? undefined
        : zpTensor.dataType === onnx.TensorProto.DataType.UINT8 ? { packed: readTensorBytes(zpTensor, this.baseDir) } : { floats: this.numbers(q.zeroPoints!) };
      return dequantizeNBits(q, codes, this.numbers(q.scales), nbitsZeroPoints(q, zp));
    }
    const [K, N] = ref.dims;
    const zero = q.zeroPoint ? this.numbers(q.zeroPoint) : Float32Array.of(0);
    return dequantizeLinear(K, N, readTensorBytes(t, this.baseDir), t.dataType === onnx.TensorProto.DataType.INT8, this.numbers(q.scale), zero);
  }

  /** Row-major [rows, cols] in the engine's layout: transposes a 'cols' tensor. */
  private matrix(ref: WeightRef, key: string): Float32Array {
    const hit = this.cache.get(key);
    if (hit) return hit;
    const raw = this.stored(ref);
    let out = raw;
    if (ref.dims.length === 2 && ref.layout === 'cols') {
      const [r, c] = ref.dims;
      out = new Float32Array(r * c);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = raw[i * c + j];
    }
    this.cache.set(key, out);
    return out;
  }

  /** W_out of a layer as [m, d]: row j is neuron j's value vector v_j. */
  valueVectors(layer: number): Float32Array {
    const site = this.graph.sites[layer];
    if (!site) throw new NeuronpatchError(`No layer ${layer}: the model has ${this.graph.sites.length} layers.`);
    return this.matrix(site.weight, `W_out.${layer}`);
  }

  valueVector(layer: number, neuron: number, width: number): Float32Array {
    return this.valueVectors(layer).subarray(neuron * width, (neuron + 1) * width);
  }

  /** W_U as [V, d]: row t is token t's unembedding. */
  unembedding(): Float32Array {
    return this.matrix(this.graph.unembedding, 'W_U');
  }

  finalGain(): Float32Array {
    return this.matrix(this.graph.finalNorm.gain, 'gain');
  }

  finalBias(): Float32Array | undefined {
    return this.graph.finalNorm.bias ? this.matrix(this.graph.finalNorm.bias, 'bias') : undefined;
  }
}
