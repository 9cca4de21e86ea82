// Recognises a decoder's structure from its ONNX graph: FFN output projections, final norm, unembedding and the
// KV-cache interface. Node names help where they exist; the structure decides, so fused optimizer exports and
// graphs with generic names are handled the same way. Projections are MatMul/Gemm with a float weight, or quantized:
// com.microsoft MatMulNBits (4-bit and other widths), and 8-bit dynamic quantization (DynamicQuantizeLinear feeding
// MatMulInteger + Cast + scale Mul, or com.microsoft MatMulIntegerToFloat); their weights are described for
// dequantization (graph.ts QuantRef), never copied here.
import { onnx } from 'onnx-proto';
import { NeuronpatchError } from '../types';
import { ElemTypes } from './elemtypes';
import { type CacheLayout, type ElemType, extent, type FfnSite, type FinalNorm, type ModelGraph, type ScalarInput, type WeightRef } from './graph';

export const KNOWN_ARCHITECTURES =
  'LLaMA, Qwen2, Mistral (gated SiLU MLP, down_proj), GPT-2 and StarCoder (c_fc/c_proj), GPT-NeoX ' +
  '(dense_h_to_4h/dense_4h_to_h), CodeGen/GPT-J (fc_in/fc_out), in Optimum, transformers.js, onnxruntime-genai ' +
  'or onnxruntime optimizer exports';

/** Nodes and initializers of neuronpatch's own added-neuron side branch (export/added.ts, model/added.ts). */
const BAKED_BRANCH = /^neuronpatch[./]blocks\.\d+[./]/;
const FFN_OUT_NAME = /(down_proj|dense_4h_to_h|fc_out|fc2|mlp[./_]c_proj|mlp[./_]w2|FullyConnect_MatMul)/;
const LAYER_NUMBER = /(?:layers|h|blocks|layer)[./_](\d+)[./_]/;
const ACTIVATION_OPS = new Set(['Mul', 'Gelu', 'FastGelu', 'BiasGelu', 'QuickGelu', 'Relu', 'Sigmoid', 'Tanh', 'Erf', 'Silu', 'Swish']);
const PASS_THROUGH = new Set(['Cast', 'Identity']);
const SKIP_NORMS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const PLAIN_NORMS = new Set(['LayerNormalization', 'SimplifiedLayerNormalization', 'RMSNormalization']);
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16;

interface Index {
  producer: Map<string, onnx.INodeProto>;
  consumers: Map<string, onnx.INodeProto[]>;
  init: Map<string, onnx.ITensorProto>;
  constants: Map<string, onnx.ITensorProto>;
}

function indexGraph(g: onnx.IGraphProto): Index {
  const producer = new Map<string, onnx.INodeProto>();
  const consumers = new Map<string, onnx.INodeProto[]>();
  const constants = new Map<string, onnx.ITensorProto>();
  for (const n of g.node ?? []) {
    for (const o of n.output ?? []) if (o) producer.set(o, n);
    for (const i of n.input ?? []) {
      if (!i) continue;
      const list = consumers.get(i) ?? [];
      list.push(n);
      consumers.set(i, list);
    }
    if (n.opType === 'Constant') {
      const value = n.attribute?.find((a) => a.name === 'value')?.t;
      if (value && n.output?.[0]) constants.set(n.output[0], value);
    }
  }
  return { producer, consumers, init: new Map((g.initializer ?? []).map((t) => [t.name ?? '', t])), constants };
}

export const dimsOf = (t: onnx.ITensorProto): number[] => (t.dims ?? []).map((d) => Number(d));

function attr(n: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return n.attribute?.find((a) => a.name === name);
}

/** The initializer a node input comes from, looking through Cast/Identity; `transposed` if through a 2-D Transpose. */
function weightOf(ix: Index, tensor: string): { t: onnx.ITensorProto; transposed: boolean } | undefined {
  let name = tensor;
  let transposed = false;
  for (let hops = 0; hops < 4; hops++) {
    const t = ix.init.get(name);
    if (t) return { t, transposed };
    const p = ix.producer.get(name);
    if (!p) return undefined;
    if (p.opType === 'Transpose') transposed = !transposed;
    else if (!PASS_THROUGH.has(p.opType ?? '')) return undefined;
    name = p.input?.[0] ?? '';
  }
  return undefined;
}

/**
 * A projection `out = x · W` as the engine sees it, whatever the op: the float tensor that enters it
 * (`activation`), the float tensor that leaves it (`output`, before any bias add), and the weight.
 */
interface Projection {
  /** The node applying W (MatMul, Gemm, MatMulNBits, MatMulInteger, MatMulIntegerToFloat). */
  node: onnx.INodeProto;
  /** The DynamicQuantizeLinear reading `activation`, for 8-bit dynamic quantization. */
  entry?: onnx.INodeProto;
  activation: string;
  output: string;
  ref: WeightRef;
  inDim: number;
  outDim: number;
}

const QUANT_OPS = new Set(['MatMulNBits', 'MatMulInteger', 'MatMulIntegerToFloat']);
const PROJECTION_OPS = new Set(['MatMul', 'Gemm', ...QUANT_OPS]);
const INT_CODES = new Set([onnx.TensorProto.DataType.INT8, onnx.TensorProto.DataType.UINT8]);

const intAttr = (n: onnx.INodeProto, name: string): number | undefined => {
  const a = attr(n, name);
  return a?.i !== undefined && a.i !== null ? Number(a.i) : undefined;
};

/** Logical [in, out] shape of a MatMul/Gemm's float weight and how the stored tensor maps to it. */
function floatProjection(ix: Index, n: onnx.INodeProto): Projection | undefined {
  const w = weightOf(ix, n.input?.[1] ?? '');
  if (!w) return undefined;
  const dims = dimsOf(w.t);
  if (dims.length !== 2) return undefined;
  let transposed = w.transposed;
  if (n.opType === 'Gemm' && intAttr(n, 'transB') === 1) transposed = !transposed;
  const [inDim, outDim] = transposed ? [dims[1], dims[0]] : [dims[0], dims[1]];
  // Stored [in, out]: input row i is row i ('rows'); stored [out, in]: input row i is column i ('cols').
  return { node: n, activation: n.input?.[0] ?? '', output: n.output?.[0] ?? '',
    ref: { name: w.t.name ?? '', dims, layout: transposed ? 'cols' : 'rows' }, inDim, outDim };
}

/** com.microsoft MatMulNBits: Y = A · dequant(B)ᵀ, B as [N, K] in blocks along K. */
function nbitsProjection(ix: Index, n: onnx.INodeProto): Projection {
  const [a, b, scales, zeroPoints, gIdx] = n.input ?? [];
  const K = intAttr(n, 'K');
  const N = intAttr(n, 'N');
  const bits = intAttr(n, 'bits') ?? 4;
  const blockSize = intAttr(n, 'block_size');
  const bad = (why: string): never => {
    throw new NeuronpatchError(`MatMulNBits node ${n.name}: ${why}.`, 'The quantized model file looks damaged; download or convert it again.');
  };
  if (!K || !N || !blockSize) bad('attributes K, N and block_size are required');
  if (![2, 4, 8].includes(bits)) bad(`bits = ${bits} is not one of 2, 4, 8`);
  const codes = ix.init.get(b ?? '');
  if (!codes || !ix.init.get(scales ?? '')) {
    throw new NeuronpatchError(
      `MatMulNBits node ${n.name} takes its weight from a computed tensor, not from stored codes and scales.`,
      'Only quantized weights stored in the model file can be read for tracing and repair.',
    );
  }
  if (gIdx) {
    throw new NeuronpatchError(`MatMulNBits node ${n.name} has a g_idx input (act-order), which neuronpatch does not dequantize.`,
      'Quantize the model without act-order (g_idx), as onnxruntime\'s and transformers.js\'s quantizers do by default.');
  }
  const blocks = Math.ceil(K! / blockSize!);
  const dims = dimsOf(codes);
  if (dims.length !== 3 || dims[0] !== N || dims[1] !== blocks || dims[2] !== (blockSize! * bits) / 8) {
    bad(`its codes have dims [${dims}], but K = ${K}, N = ${N}, block_size = ${blockSize}, bits = ${bits} need [${N}, ${blocks}, ${(blockSize! * bits) / 8}]`);
  }
  const zp = zeroPoints && ix.init.get(zeroPoints) ? zeroPoints : undefined;
  if (zeroPoints && !zp) bad('its zero points are computed, not stored');
  return {
    node: n, activation: a ?? '', output: n.output?.[0] ?? '', inDim: K!, outDim: N!,
    // The logical matrix is [N, K] = [out, in]: input row k is column k.
    ref: { name: codes.name ?? '', dims: [N!, K!], layout: 'cols',
      quant: { kind: 'nbits', bits, blockSize: blockSize!, K: K!, N: N!, scales: scales!, zeroPoints: zp } },
  };
}

/** A stored scale or zero point, looking through Cast/Identity/Reshape/Unsqueeze. */
function storedOf(ix: Index, tensor: string): string | undefined {
  let name = tensor;
  for (let hops = 0; hops < 4; hops++) {
    if (ix.init.has(name) || ix.constants.has(name)) return name;
    const p = ix.producer.get(name);
    if (!p || !['Cast', 'Identity', 'Reshape', 'Unsqueeze', 'Squeeze'].includes(p.opType ?? '')) return undefined;
    name = p.input?.[0] ?? '';
  }
  return undefined;
}

/**
 * 8-bit dynamic quantization: A = DynamicQuantizeLinear(z) feeding MatMulInteger (then Cast to float and a Mul by
 * a_scale·b_scale) or MatMulIntegerToFloat (scales as inputs). Undefined when the node is not of that pattern.
 */
function integerProjection(ix: Index, n: onnx.INodeProto): Projection | undefined {
  const inputs = n.input ?? [];
  const dql = ix.producer.get(inputs[0] ?? '');
  if (dql?.opType !== 'DynamicQuantizeLinear') return undefined;
  const codes = ix.init.get(inputs[1] ?? '');
  if (!codes || !INT_CODES.has(codes.dataType ?? 0) || dimsOf(codes).length !== 2) return undefined;
  const [K, N] = dimsOf(codes);
  let scale: string | undefined;
  let zeroPoint: string | undefined;
  let output: string | undefined;
  if (n.opType === 'MatMulIntegerToFloat') {
    // A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias
    scale = storedOf(ix, inputs[3] ?? '');
    zeroPoint = inputs[5] ? storedOf(ix, inputs[5]) : undefined;
    output = n.output?.[0];
  } else {
    // A, B, a_zero_point, b_zero_point → int32 → Cast(float) → Mul(·, a_scale · b_scale)
    zeroPoint = inputs[3] ? storedOf(ix, inputs[3]) : undefined;
    const cast = (ix.consumers.get(n.output?.[0] ?? '') ?? [])[0];
    if (cast?.opType !== 'Cast') return undefined;
    const mul = (ix.consumers.get(cast.output?.[0] ?? '') ?? [])[0];
    if (mul?.opType !== 'Mul') return undefined;
    const other = (mul.input ?? []).find((i) => i !== cast.output?.[0]) ?? '';
    const aScale = dql.output?.[1];
    scale = storedOf(ix, other);
    if (!scale) {
      const p = ix.producer.get(other);
      if (p?.opType === 'Mul' && (p.input ?? []).includes(aScale ?? '')) scale = storedOf(ix, (p.input ?? []).find((i) => i !== aScale) ?? '');
    }
    output = mul.output?.[0];
  }
  if (!scale || !output) return undefined;
  if ((inputs[3] && n.opType === 'MatMulInteger' && !zeroPoint) || (n.opType === 'MatMulIntegerToFloat' && inputs[5] && !zeroPoint)) return undefined;
  return {
    node: n, entry: dql, activation: dql.input?.[0] ?? '', output, inDim: K, outDim: N,
    ref: { name: codes.name ?? '', dims: [K, N], layout: 'rows', quant: { kind: 'linear', scale, zeroPoint } },
  };
}

/** Every projection of the graph by its float output tensor. */
function projections(ix: Index, g: onnx.IGraphProto): Map<string, Projection> {
  const out = new Map<string, Projection>();
  for (const n of g.node ?? []) {
    let p: Projection | undefined;
    if (n.opType === 'MatMul' || n.opType === 'Gemm') p = floatProjection(ix, n);
    else if (n.opType === 'MatMulNBits') p = nbitsProjection(ix, n);
    else if (n.opType === 'MatMulInteger' || n.opType === 'MatMulIntegerToFloat') p = integerProjection(ix, n);
    if (p) out.set(p.output, p);
  }
  return out;
}

/** MatMuls upstream of a tensor through elementwise ops: tells a gated product from a plain activation. */
function upstreamProjections(ix: Index, tensor: string, depth = 6): Set<onnx.INodeProto> {
  const found = new Set<onnx.INodeProto>();
  const walk = (name: string, d: number): void => {
    const p = ix.producer.get(name);
    if (!p || d < 0) return;
    if (PROJECTION_OPS.has(p.opType ?? '')) {
      found.add(p);
      return;
    }
    for (const i of p.input ?? []) if (i && !ix.init.has(i) && !ix.constants.has(i)) walk(i, d - 1);
  };
  walk(tensor, depth);
  return found;
}

function isGated(ix: Index, z: string): boolean {
  const p = ix.producer.get(z);
  if (!p || p.opType !== 'Mul') return false;
  const sides = (p.input ?? []).map((i) => upstreamProjections(ix, i));
  if (sides.length !== 2 || sides[0].size === 0 || sides[1].size === 0) return false;
  return [...sides[0]].some((a) => ![...sides[1]].includes(a)) && [...sides[1]].some((b) => ![...sides[0]].includes(b));
}

function findUnembedding(ix: Index, all: Map<string, Projection>, logits: string): Projection {
  let name = logits;
  for (let hops = 0; hops < 4; hops++) {
    const proj = all.get(name);
    if (proj) {
      // Unembedding as [V, d] rows: stored [d, V] ('rows' of the projection) means token t is column t.
      return { ...proj, ref: { ...proj.ref, layout: proj.ref.layout === 'rows' ? 'cols' : 'rows' } };
    }
    const p = ix.producer.get(name);
    if (!p) break;
    if (p.opType === 'Add' || PASS_THROUGH.has(p.opType ?? '')) {
      // A bias add: follow the operand that is computed, not the bias initializer.
      name = (p.input ?? []).find((i) => i && !ix.init.has(i) && !ix.constants.has(i)) ?? '';
    } else break;
  }
  const producer = ix.producer.get(logits);
  const quantOps = [...new Set([...ix.producer.values()].map((n) => n.opType ?? '').filter((op) => /Quant|NBits|Integer|GPTQ|Bnb|FP4|Int4/i.test(op)))];
  throw new NeuronpatchError(
    `Could not find the unembedding (lm_head): the graph output "${logits}" is produced by ${producer?.opType ?? 'no node'}, not by a MatMul, ` +
      `Gemm or a recognised quantized projection (MatMulNBits; DynamicQuantizeLinear + MatMulInteger or MatMulIntegerToFloat) with a stored weight.` +
      (quantOps.length ? ` The graph uses ${quantOps.join(', ')}.` : ''),
    quantOps.length
      ? 'Use an fp32, fp16, MatMulNBits (q4, q4f16) or dynamically quantized int8/uint8 file of the model (--dtype).'
      : /^(If|Loop|Scan)$/.test(producer?.opType ?? '')
        ? `The logits come out of a control-flow node (${producer?.opType}); of those neuronpatch reads only Optimum's merged decoder (If on use_cache_branch). Export the decoder with past (decoder_with_past_model.onnx, Optimum's --no-post-process).`
        : `Known architectures: ${KNOWN_ARCHITECTURES}.`,
  );
}

function scalarOf(ix: Index, name: string): number | undefined {
  const t = ix.init.get(name) ?? ix.constants.get(name);
  if (!t || dimsOf(t).reduce((a, b) => a * b, 1) !== 1) return undefined;
  if (t.floatData?.length) return t.floatData[0];
  if (t.doubleData?.length) return t.doubleData[0];
  const raw = t.rawData;
  if (raw && raw.length === 4 && t.dataType === onnx.TensorProto.DataType.FLOAT) {
    return Buffer.from(raw).readFloatLE(0);
  }
  return undefined;
}

function findFinalNorm(ix: Index, normed: string, residual: string, width: number): FinalNorm {
  const p = ix.producer.get(normed);
  const vectorRef = (name: string | undefined): WeightRef | undefined => {
    const t = name ? ix.init.get(name) : undefined;
    return t && dimsOf(t).length === 1 && dimsOf(t)[0] === width ? { name: t.name ?? '', dims: dimsOf(t), layout: 'rows' } : undefined;
  };
  if (p && (SKIP_NORMS.has(p.opType ?? '') || PLAIN_NORMS.has(p.opType ?? ''))) {
    const skip = SKIP_NORMS.has(p.opType ?? '');
    const gain = vectorRef(p.input?.[skip ? 2 : 1]);
    if (!gain) throw new NeuronpatchError(`The final norm ${p.name} has no gain vector of width ${width}.`);
    const rms = (p.opType ?? '').includes('Simplified') || p.opType === 'RMSNormalization';
    return { kind: rms ? 'rms' : 'layer', residual, gain, bias: rms ? undefined : vectorRef(p.input?.[skip ? 3 : 2]),
      eps: Number(attr(p, 'epsilon')?.f ?? 1e-5) };
  }
  // Decomposed norm: walk back from the lm_head input over (Add bias) → Mul gain → … → the residual.
  let gain: WeightRef | undefined;
  let bias: WeightRef | undefined;
  let eps = 1e-5;
  let layer = false;
  const seen = new Set<string>();
  const stack = [normed];
  while (stack.length) {
    const name = stack.pop()!;
    if (name === residual || seen.has(name)) continue;
    seen.add(name);
    const n = ix.producer.get(name);
    if (!n) continue;
    const inputs = n.input ?? [];
    if (n.opType === 'Mul' && !gain) gain = vectorRef(inputs.find((i) => vectorRef(i)));
    if (n.opType === 'Add') {
      const b = vectorRef(inputs.find((i) => vectorRef(i)));
      if (b && !gain) bias = b;
      const e = inputs.map((i) => scalarOf(ix, i)).find((v) => v !== undefined && v > 0 && v < 1e-2);
      if (e !== undefined) eps = e;
    }
    if (n.opType === 'Sub') layer = true;
    for (const i of inputs) if (i && !ix.init.has(i) && !ix.constants.has(i)) stack.push(i);
  }
  if (!gain) {
    throw new NeuronpatchError(
      'Could not find the final norm\'s gain: no Mul by a vector of the residual width between the last layer and the lm_head.',
      `Known architectures: ${KNOWN_ARCHITECTURES}.`,
    );
  }
  return { kind: layer ? 'layer' : 'rms', residual, gain, bias: layer ? bias : undefined, eps };
}

/** From the last FFN's output, follow the residual adds to the tensor the final norm reads. */
function findFinalResidual(ix: Index, lastOut: string): { tensor: string; fused?: onnx.INodeProto } {
  let name = lastOut;
  for (let hops = 0; hops < 8; hops++) {
    const cons = ix.consumers.get(name) ?? [];
    if (cons.length !== 1) break;
    const c = cons[0];
    if (SKIP_NORMS.has(c.opType ?? '')) return { tensor: c.output?.[3] ?? '', fused: c };
    if (c.opType !== 'Add') break;
    name = c.output?.[0] ?? '';
  }
  return { tensor: name };
}

function findCache(g: onnx.IGraphProto, layers: number, names?: CacheNames): CacheLayout {
  const inputs = new Set((g.input ?? []).map((i) => i.name ?? ''));
  const outputs = new Set((g.output ?? []).map((o) => o.name ?? ''));
  const fmt = (pattern: string, i: number): string => pattern.replace('%d', String(i));
  const pk = names?.pastKey ?? 'past_key_values.%d.key';
  const pv = names?.pastValue ?? 'past_key_values.%d.value';
  const ok = names?.presentKey ?? 'present.%d.key';
  const ov = names?.presentValue ?? 'present.%d.value';
  if (inputs.has(fmt(pk, 0))) {
    const range = [...Array(layers).keys()];
    const missing = range.flatMap((i) => [fmt(pk, i), fmt(pv, i)].filter((n) => !inputs.has(n)))
      .concat(range.flatMap((i) => [fmt(ok, i), fmt(ov, i)].filter((n) => !outputs.has(n))));
    if (missing.length) throw new NeuronpatchError(`The KV cache is incomplete: ${missing.slice(0, 4).join(', ')} missing.`);
    return { kind: 'pairs', inputs: range.map((i) => ({ key: fmt(pk, i), value: fmt(pv, i) })),
      outputs: range.map((i) => ({ key: fmt(ok, i), value: fmt(ov, i) })) };
  }
  // StarCoder (gpt_bigcode) with multi-query attention: one [batch, past, 2 · headDim] tensor per layer.
  const fk = 'past_key_values.%d.key_value';
  const fo = 'present.%d.key_value';
  if (inputs.has(fmt(fk, 0))) {
    const range = [...Array(layers).keys()];
    const missing = range.flatMap((i) => (inputs.has(fmt(fk, i)) ? [] : [fmt(fk, i)]))
      .concat(range.flatMap((i) => (outputs.has(fmt(fo, i)) ? [] : [fmt(fo, i)])));
    if (missing.length) throw new NeuronpatchError(`The fused KV cache is incomplete: ${missing.slice(0, 4).join(', ')} missing.`);
    return { kind: 'fused', inputs: range.map((i) => fmt(fk, i)), outputs: range.map((i) => fmt(fo, i)) };
  }
  const sp = names?.past ?? 'past_%d';
  const so = names?.present ?? 'present_%d';
  if (inputs.has(fmt(sp, 0))) {
    const range = [...Array(layers).keys()];
    return { kind: 'stacked', inputs: range.map((i) => fmt(sp, i)), outputs: range.map((i) => fmt(so, i)) };
  }
  const pastLike = [...inputs].filter((n) => /past|cache/i.test(n));
  if (pastLike.length) {
    throw new NeuronpatchError(
      `The model's KV-cache inputs have a layout neuronpatch does not read: ${pastLike.slice(0, 3).map((n) => JSON.stringify(n.slice(0, 80))).join(', ')}.`,
      'Supported: past_key_values.N.key/.value, past_key_values.N.key_value (StarCoder) and past_N (or the names genai_config.json gives).',
    );
  }
  throw new NeuronpatchError(
    'The model has no KV-cache inputs (past_key_values.N.key/value, past_key_values.N.key_value or past_N).',
    'Export it with a cache (Optimum: --task text-generation-with-past).',
  );
}

/** The cache's input names, in feed order. */
export function cacheInputNames(cache: CacheLayout): string[] {
  return cache.kind === 'pairs' ? cache.inputs.flatMap((p) => [p.key, p.value]) : cache.inputs;
}

const LOGITS_TO_KEEP = /^(num_)?logits_to_keep$/;

/**
 * Graph inputs beyond ids, mask, positions and the cache: the scalars the engine knows how to feed
 * (`num_logits_to_keep` / `logits_to_keep`). Any other input is refused by name, since onnxruntime would only say
 * it is missing from the feeds.
 * @throws NeuronpatchError naming the inputs the engine cannot feed.
 */
function scalarInputs(g: onnx.IGraphProto, known: string[]): ScalarInput[] {
  const knownSet = new Set(known);
  const initializers = new Set((g.initializer ?? []).map((t) => t.name));
  const scalars: ScalarInput[] = [];
  const unknown: string[] = [];
  for (const i of g.input ?? []) {
    const name = i.name ?? '';
    if (knownSet.has(name) || initializers.has(name)) continue;
    const t = i.type?.tensorType;
    const rank = t?.shape?.dim?.length ?? 0;
    const type = t?.elemType === onnx.TensorProto.DataType.INT32 ? 'int32' : t?.elemType === onnx.TensorProto.DataType.INT64 ? 'int64' : undefined;
    if (LOGITS_TO_KEEP.test(name) && type && rank <= 1) scalars.push({ name, kind: 'logitsToKeep', type, rank: rank as 0 | 1 });
    else unknown.push(name);
  }
  if (unknown.length) {
    throw new NeuronpatchError(
      `The graph has input(s) neuronpatch does not know how to feed: ${unknown.slice(0, 4).map((n) => JSON.stringify(n.slice(0, 80))).join(', ')}.`,
      'Known extra inputs: num_logits_to_keep / logits_to_keep (and use_cache_branch of a merged decoder). Re-export the decoder with input_ids, attention_mask, position_ids and the KV cache only.',
    );
  }
  return scalars;
}

export interface CacheNames {
  pastKey?: string;
  pastValue?: string;
  presentKey?: string;
  presentValue?: string;
  past?: string;
  present?: string;
}

export interface RecogniseOptions {
  /** Residual width from the config, to cross-check the graph. */
  hidden?: number;
  layers?: number;
  cacheNames?: CacheNames;
  inputNames?: { ids?: string; mask?: string; positions?: string };
  logitsName?: string;
}

export function recognise(model: onnx.IModelProto, opts: RecogniseOptions = {}): ModelGraph {
  const g = model.graph;
  if (!g?.node?.length) throw new NeuronpatchError('The ONNX model has an empty graph.');
  const ix = indexGraph(g);
  const logits = opts.logitsName ?? 'logits';
  if (!(g.output ?? []).some((o) => o.name === logits)) {
    throw new NeuronpatchError(`The graph has no output named "${logits}".`, 'A decoder export must return logits.');
  }
  const all = projections(ix, g);
  const unembed = findUnembedding(ix, all, logits);
  const d = unembed.inDim;
  if (opts.hidden && opts.hidden !== d) {
    throw new NeuronpatchError(
      `The config says the residual width is ${opts.hidden}, but the graph's lm_head takes vectors of width ${d}.`,
      'The config.json does not belong to this model.onnx.',
    );
  }

  const types = new ElemTypes(g);
  // The pasts' type, the fallback where an activation's type cannot be inferred.
  const pastType = (g.input ?? []).find((i) => /past/.test(i.name ?? ''))?.type?.tensorType?.elemType === FLOAT16 ? FLOAT16 : onnx.TensorProto.DataType.FLOAT;
  const sites: FfnSite[] = [];
  for (const proj of all.values()) {
    const n = proj.node;
    if (proj.outDim !== d || proj.inDim === d || n === unembed.node) continue;
    // A keyed patch baked in by export (export/added.ts): its side branch's value MatMul is part of the layer, not a layer.
    if (BAKED_BRANCH.test(n.name ?? '') || BAKED_BRANCH.test(proj.ref.name)) continue;
    const z = proj.activation;
    const act = ix.producer.get(z);
    const named = FFN_OUT_NAME.test(n.name ?? '') || FFN_OUT_NAME.test(proj.ref.name);
    if (!named && !(act && ACTIVATION_OPS.has(act.opType ?? ''))) continue;
    sites.push({
      layer: sites.length, node: n.name ?? '', entry: proj.entry?.name ?? undefined, activation: z, output: proj.output, weight: proj.ref,
      activationOp: act?.opType ?? 'input', gated: isGated(ix, z),
      activationType: floatTypeOf(types, z, pastType),
      outputType: floatTypeOf(types, proj.output, pastType),
    });
  }
  if (!sites.length) {
    throw new NeuronpatchError(
      `No FFN output projection found: no MatMul/Gemm maps an activation to the residual width ${d}.`,
      `Known architectures: ${KNOWN_ARCHITECTURES}.`,
    );
  }
  // Node or weight names carry the layer number where they exist: they must agree with the graph order.
  sites.forEach((s, i) => {
    const m = LAYER_NUMBER.exec(s.node) ?? LAYER_NUMBER.exec(s.weight.name);
    if (m && Number(m[1]) !== i) {
      throw new NeuronpatchError(`FFN output projection ${s.node} is named for layer ${m[1]} but is layer ${i} in graph order.`);
    }
  });
  if (opts.layers && opts.layers !== sites.length) {
    throw new NeuronpatchError(
      `The config says ${opts.layers} layers, but the graph has ${sites.length} FFN output projections.`,
      'The config does not belong to this model file, or a layer\'s FFN was not recognised: ' + KNOWN_ARCHITECTURES,
    );
  }
  const widths = new Set(sites.map((s) => extent(s.weight)[0]));
  if (widths.size !== 1) throw new NeuronpatchError(`FFN widths differ between layers (${[...widths].join(', ')}).`);

  const resid = findFinalResidual(ix, sites[sites.length - 1].output);
  const finalNorm = findFinalNorm(ix, unembed.activation, resid.tensor, d);
  if (resid.fused) finalNorm.fusedWith = resid.fused.output?.[0] ?? '';

  const cache = findCache(g, sites.length, opts.cacheNames);
  const firstPast = (g.input ?? []).find((i) => i.name === (cache.kind === 'pairs' ? cache.inputs[0].key : cache.inputs[0]));
  const pastDims = firstPast?.type?.tensorType?.shape?.dim ?? [];
  const off = cache.kind === 'stacked' ? 1 : 0;
  const heads = cache.kind === 'fused' ? 1 : Number(pastDims[1 + off]?.dimValue ?? 0);
  const headDim = Number(pastDims[cache.kind === 'fused' ? 2 : 3 + off]?.dimValue ?? 0);
  if (!heads || !headDim) throw new NeuronpatchError(`The KV-cache input ${firstPast?.name} has no fixed head count or head size.`);

  const inputType = (name: string) => (g.input ?? []).find((i) => i.name === name)?.type?.tensorType?.elemType;
  const ids = opts.inputNames?.ids ?? 'input_ids';
  if (inputType(ids) === undefined) throw new NeuronpatchError(`The graph has no input named "${ids}".`);
  const has = (n: string) => inputType(n) !== undefined;
  const mask = opts.inputNames?.mask ?? 'attention_mask';
  const positions = opts.inputNames?.positions ?? 'position_ids';
  const floatType = inputType(cache.kind === 'pairs' ? cache.inputs[0].key : cache.inputs[0]) === FLOAT16 ? 'float16' : 'float32';

  const scalars = scalarInputs(g, [ids, mask, positions, ...cacheInputNames(cache)]);
  // GroupQueryAttention reads each row's length from the mask (seqlens_k) and takes its tokens from slot 0.
  const gqa = g.node.some((n) => n.opType === 'GroupQueryAttention');
  const padding = has(positions) && !gqa ? 'left' : 'right';
  const floatEnum = floatType === 'float16' ? FLOAT16 : onnx.TensorProto.DataType.FLOAT;
  const residualType = resid.tensor ? floatTypeOf(types, resid.tensor, floatEnum) : undefined;
  const logitsType = floatTypeOf(types, logits, floatEnum);
  return {
    sites, finalNorm, unembedding: unembed.ref, cache, heads, headDim, floatType, scalars, padding,
    residualType: residualType !== floatEnum ? residualType : undefined,
    logitsType: logitsType !== floatEnum ? logitsType : undefined,
    weightFormat: weightFormat(sites.map((s) => s.weight).concat(unembed.ref), ix),
    tied: (ix.consumers.get(unembed.ref.name) ?? []).some((c) => c.opType === 'Gather'),
    embedding: tokenEmbedding(ix, ids, d, unembed.ref.name),
    indexType: inputType(ids) === onnx.TensorProto.DataType.INT32 ? 'int32' : 'int64',
    inputs: { ids, mask: has(mask) ? mask : undefined, positions: has(positions) ? positions : undefined },
    logits,
  };
}

/**
 * The table the token ids are gathered from, when it is a float initializer [V, d] other than the unembedding's
 * (through a Cast of the ids, as some exports have); undefined for a quantized table (GatherBlockQuantized).
 */
function tokenEmbedding(ix: Index, ids: string, d: number, unembedding: string): WeightRef | undefined {
  const readers = [...(ix.consumers.get(ids) ?? [])];
  for (const c of [...readers]) if (c.opType === 'Cast') readers.push(...(ix.consumers.get(c.output?.[0] ?? '') ?? []));
  for (const n of readers) {
    const table = n.opType === 'Gather' ? n.input?.[0] : undefined;
    const t = table ? ix.init.get(table) : undefined;
    const dims = (t?.dims ?? []).map(Number);
    const float = t?.dataType === onnx.TensorProto.DataType.FLOAT || t?.dataType === FLOAT16;
    if (table && table !== unembedding && float && dims.length === 2 && dims[1] === d) return { name: table, dims, layout: 'rows' };
  }
  return undefined;
}

/**
 * A float tensor's element type (FLOAT or FLOAT16) as inferred from the graph; `fallback` (the pasts' type) where
 * the inference finds no float type (an op it has no rule for).
 */
function floatTypeOf(types: ElemTypes, tensor: string, fallback: ElemType): ElemType {
  const t = types.typeOf(tensor);
  return t === onnx.TensorProto.DataType.FLOAT || t === FLOAT16 ? t : fallback;
}

/** How the FFN output weights and the unembedding are stored, for `info`: "float32", "MatMulNBits 4-bit (block 32)", … */
function weightFormat(refs: WeightRef[], ix: Index): string {
  const names = new Set<string>();
  for (const r of refs) {
    const q = r.quant;
    if (!q) {
      const t = ix.init.get(r.name)?.dataType;
      names.add(t === FLOAT16 ? 'float16' : 'float32');
    } else if (q.kind === 'nbits') {
      const scaleType = ix.init.get(q.scales)?.dataType === FLOAT16 ? 'fp16' : 'fp32';
      names.add(`MatMulNBits ${q.bits}-bit (block ${q.blockSize}, ${scaleType} scales${q.zeroPoints ? ', zero points' : ''})`);
    } else {
      const t = ix.init.get(r.name)?.dataType === onnx.TensorProto.DataType.INT8 ? 'int8' : 'uint8';
      const s = ix.init.get(q.scale) ?? ix.constants.get(q.scale);
      const perChannel = s && dimsOf(s).reduce((a, b) => a * b, 1) > 1;
      names.add(`dynamic ${t} (${perChannel ? 'per channel' : 'per tensor'})`);
    }
  }
  return [...names].join(' + ');
}
