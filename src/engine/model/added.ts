// Added (keyed) neurons in the instrumented graph: Transformer-Patcher (Huang et al., ICLR 2023) adds FFN neurons
// whose keys fire only on a mistake's context; neuronpatch feeds them as graph inputs so that they apply and
// revert live. For each layer L with x̂ the FFN input (the normalised residual the FFN's first projection reads,
// [batch, seq, d]):
//   blocks.L.mlp.in       = x̂                                             (an output, for keys and thresholds)
//   a                     = ReLU(x̂ · K_L − τ_L)                           [batch, seq, n]   K_L: [d, n], τ_L: [n]
//   FFN output           += a · V_L                                       V_L: [1 or batch, n, d]
// All layers' keys, thresholds and values arrive packed in three inputs (n per layer, padded): a padding neuron has
// a zero key and threshold 1, so its activation is ReLU(−1) = 0 and it adds exactly nothing.
import { onnx } from 'onnx-proto';
import type { FfnSite } from './graph';

/** The packed inputs of the added neurons. */
export const addedInputs = {
  /** [d, layers · n]: layer after layer, each neuron's key as a column. */
  key: 'neuronpatch.added_key',
  /** [layers · n]. */
  threshold: 'neuronpatch.added_threshold',
  /** [1 or batch, layers · n, d]. */
  value: 'neuronpatch.added_value',
};

/** One added neuron: `a(x̂) = ReLU(key · x̂ − threshold)` writes `a · value` into the residual stream after layer's FFN. */
export interface AddedNeuron {
  layer: number;
  /** [d], read against the FFN input x̂ of `layer`. */
  key: ArrayLike<number>;
  threshold: number;
  /** [d], added to the FFN's output times the activation. */
  value: ArrayLike<number>;
}

/** Name of layer L's FFN input output (x̂, [batch, seq, d]). */
export const mlpIn = (layer: number): string => `blocks.${layer}.mlp.in`;

interface Index {
  producer: Map<string, onnx.INodeProto>;
  weights: Set<string>;
}

function indexOf(src: onnx.IGraphProto): Index {
  const producer = new Map<string, onnx.INodeProto>();
  for (const n of src.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  const weights = new Set((src.initializer ?? []).map((t) => t.name ?? ''));
  for (const n of src.node ?? []) if (n.opType === 'Constant') for (const o of n.output ?? []) weights.add(o);
  return { producer, weights };
}

/** A weight: an initializer or constant, possibly through Transpose/Cast/DequantizeLinear of one. */
function isWeight(ix: Index, name: string): boolean {
  for (let hops = 0; hops < 3; hops++) {
    if (ix.weights.has(name)) return true;
    const p = ix.producer.get(name);
    if (!p || !['Transpose', 'Cast', 'DequantizeLinear'].includes(p.opType ?? '')) return false;
    name = p.input?.[0] ?? '';
  }
  return false;
}

/**
 * The FFN input of a site: the data input of the first projection upstream of its activation (through the
 * activation function, the gate product and bias adds), i.e. what `gate_proj`/`up_proj` or `c_fc` read.
 * Undefined where no such projection is found (the layer then takes no added neurons).
 */
export function findFfnInput(src: onnx.IGraphProto, site: FfnSite): string | undefined {
  const ix = indexOf(src);
  const seen = new Set<string>();
  const queue = [site.activation];
  for (let steps = 0; queue.length && steps < 64; steps++) {
    const name = queue.shift()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const p = ix.producer.get(name);
    if (!p) continue;
    const inputs = p.input ?? [];
    if ((p.opType === 'MatMul' || p.opType === 'Gemm') && inputs.length >= 2 && isWeight(ix, inputs[1]) && !isWeight(ix, inputs[0])) return inputs[0];
    if (p.opType === 'MatMul' || p.opType === 'Gemm') continue;
    // Quantized projections: com.microsoft MatMulNBits and DynamicQuantizeMatMul read the float activation A
    // itself (their B is the packed or int8 weight); MatMulInteger and MatMulIntegerToFloat read A through a
    // DynamicQuantizeLinear, whose input is the float x̂.
    if ((p.opType === 'MatMulNBits' || p.opType === 'DynamicQuantizeMatMul') && inputs.length >= 2 && isWeight(ix, inputs[1]) && !isWeight(ix, inputs[0])) return inputs[0];
    if ((p.opType === 'MatMulInteger' || p.opType === 'MatMulIntegerToFloat') && inputs.length >= 2 && isWeight(ix, inputs[1])) {
      const q = ix.producer.get(inputs[0]);
      if (q?.opType === 'DynamicQuantizeLinear' && q.input?.[0] && !isWeight(ix, q.input[0])) return q.input[0];
    }
    // Other quantized or packed inputs (static QuantizeLinear, QLinearMatMul, Conv…): no added neurons on such a
    // layer, rather than a walk past it into the layer before.
    if (/MatMul|Quantize|Conv/.test(p.opType ?? '')) return undefined;
    for (const i of inputs) if (i && !isWeight(ix, i)) queue.push(i);
  }
  return undefined;
}

/** The per-layer names the packed inputs are split into. */
export const addedPerLayer = {
  key: (layer: number): string => `blocks.${layer}.mlp.added_key`,
  threshold: (layer: number): string => `blocks.${layer}.mlp.added_threshold`,
  value: (layer: number): string => `blocks.${layer}.mlp.added_value`,
};

/** Value infos of the three packed inputs for a model of residual width d and float type `floatEnum`. */
export function addedInputInfos(floatEnum: number, d: number): onnx.IValueInfoProto[] {
  const info = (name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto => ({
    name, type: { tensorType: { elemType, shape: { dim: dims.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })) } } },
  });
  return [
    info(addedInputs.key, floatEnum, [d, 'added_slots']),
    info(addedInputs.threshold, floatEnum, ['added_slots']),
    info(addedInputs.value, floatEnum, ['added_batch', 'added_slots', d]),
  ];
}

/**
 * Nodes that add layer L's neurons to `ffnOut` (the FFN output, [.., d]) reading `ffnIn`, producing `out`;
 * `key`, `threshold` and `value` name the layer's [d, n], [n] and [rows, n, d] tensors. Used by the instrumented
 * graph (inputs, `kind` 'added') and by export (initializers, `kind` 'baked': node and tensor names apart).
 */
export function addedNeuronNodes(
  layer: number, ffnIn: string, ffnOut: string, out: string, w: { key: string; threshold: string; value: string }, kind: 'added' | 'baked' = 'added',
): onnx.INodeProto[] {
  // Export bakes its branch as 'baked', so an exported model can be instrumented again without two nodes of one name.
  const p = `neuronpatch/blocks.${layer}/mlp/${kind}`;
  const node = (opType: string, input: string[], output: string[], name: string, attribute: onnx.IAttributeProto[] = []): onnx.INodeProto => ({ opType, input, output, name, attribute });
  return [
    node('MatMul', [ffnIn, w.key], [`${p}/response`], `${p}/response`),
    node('Sub', [`${p}/response`, w.threshold], [`${p}/shifted`], `${p}/shifted`),
    node('Relu', [`${p}/shifted`], [`${p}/activation`], `${p}/activation`),
    node('MatMul', [`${p}/activation`, w.value], [`${p}/term`], `${p}/term`),
    node('Add', [ffnOut, `${p}/term`], [out], `${p}/add`),
  ];
}

/** Identity exposing x̂ as `blocks.L.mlp.in`. */
export function ffnInputOutput(layer: number, ffnIn: string): onnx.INodeProto {
  return { opType: 'Identity', input: [ffnIn], output: [mlpIn(layer)], name: `neuronpatch/blocks.${layer}/mlp/in`, attribute: [] };
}

/**
 * The packed feeds for one set of added neurons per example (undefined: none): per layer the union of the
 * examples' neurons (by identity), padded to the same n ≥ 1 in every layer with neutral neurons (zero key,
 * threshold 1, zero value); each example's row of values holds its own neurons' values, zeros elsewhere.
 * Returns key [d, layers · n], threshold [layers · n], value [rows, layers · n, d].
 */
export function packAdded(sets: (readonly AddedNeuron[] | undefined)[], layers: number, d: number): { key: Float32Array; threshold: Float32Array; value: Float32Array; slots: number; rows: number } {
  const perLayer: AddedNeuron[][] = Array.from({ length: layers }, () => []);
  const slot = new Map<AddedNeuron, number>();
  for (const s of sets) {
    for (const a of s ?? []) {
      if (slot.has(a)) continue;
      slot.set(a, perLayer[a.layer].length);
      perLayer[a.layer].push(a);
    }
  }
  const n = Math.max(1, ...perLayer.map((l) => l.length));
  const slots = layers * n;
  const rows = Math.max(1, sets.length);
  const key = new Float32Array(d * slots);
  const threshold = new Float32Array(slots).fill(1);
  const value = new Float32Array(rows * slots * d);
  perLayer.forEach((list, L) => list.forEach((a, i) => {
    const col = L * n + i;
    for (let c = 0; c < d; c++) key[c * slots + col] = a.key[c];
    threshold[col] = a.threshold;
  }));
  sets.forEach((s, r) => {
    for (const a of s ?? []) {
      const at = (r * slots + a.layer * n + slot.get(a)!) * d;
      for (let c = 0; c < d; c++) value[at + c] = a.value[c];
    }
  });
  return { key, threshold, value, slots, rows };
}

/** The activation ReLU(key · x − threshold) of an added neuron at one FFN input x ([d]). */
export function addedActivation(a: AddedNeuron, x: ArrayLike<number>, offset = 0): number {
  let s = -a.threshold;
  for (let c = 0; c < a.key.length; c++) s += a.key[c] * x[offset + c];
  return s > 0 ? s : 0;
}
