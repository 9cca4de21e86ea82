// The weights repair needs, read from the source model's initializers (raw, typed or external data; fp16 → fp32)
// once and kept in the engine's layout: value vectors as rows, the unembedding as [V, d] rows.
import type { onnx } from 'onnx-proto';
import { readTensor } from '../onnx/tensor';
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
    const wanted = new Set([graph.unembedding.name, graph.finalNorm.gain.name, ...graph.sites.map((s) => s.weight.name)]);
    if (graph.finalNorm.bias) wanted.add(graph.finalNorm.bias.name);
    for (const t of model.graph?.initializer ?? []) if (wanted.has(t.name ?? '')) this.tensors.set(t.name ?? '', t);
  }

  /** Row-major [rows, cols] in the engine's layout: transposes a 'cols' tensor. */
  private matrix(ref: WeightRef, key: string): Float32Array {
    const hit = this.cache.get(key);
    if (hit) return hit;
    const t = this.tensors.get(ref.name);
    if (!t) throw new NeuronpatchError(`Initializer ${ref.name} is missing from the model.`);
    const raw = readTensor(t, this.baseDir);
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
