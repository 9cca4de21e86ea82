// Graph surgery: exposes every layer's FFN activation and the final residual, and adds the intervention inputs.
//
// For each layer L, with z the input of the FFN output projection W_out:
//   blocks.L.mlp.post = z ⊙ blocks.L.mlp.scale                [batch, seq, m]   (scale: [batch, 1, m], 1 = neutral)
//   W_out's input     ← blocks.L.mlp.post
//   FFN output       += Gather(post, patch_index) · patch_delta  (index: [K]; delta: [1 or batch, K, d])
// so that ablations are per example and a patch adds Σ_j z_j Δv_j without touching any weight.
// On a quantized projection z is its float input (for 8-bit dynamic quantization, the input of the
// DynamicQuantizeLinear, which then quantizes the scaled activation) and the FFN output is its float output (after
// the scale Muls). Every inserted node takes the element type of the tensor it touches (fp16 activations behind
// fp32 graph inputs get Casts of the packed inputs).
// The interventions of all layers arrive packed in three inputs, split per layer inside the graph: every run
// feeds them, and onnxruntime's cost per fed tensor exceeds that of a Split (each layer gets the same K, padded
// with zero edits). They are plain required inputs (an initializer would make ORT silently ignore the feed).
// The lm_head computes the logits of the positions fed to `neuronpatch.logit_positions` only (where it is a
// MatMul of [batch, seq, d] hidden states): decoding needs the last one, and the full sequence's logits of a long
// prompt cost more than the rest of the forward. The last position's logits and what their log-sum-exp needs are
// outputs of their own, for decoding.
import { onnx } from 'onnx-proto';
import { hooks, NeuronpatchError } from '../types';
import { addedInputInfos, addedInputs, addedNeuronNodes, addedPerLayer, ffnInputOutput, findFfnInput, mlpIn } from './added';
import { extent, type ModelGraph } from './graph';

/** The packed intervention inputs: layer L's slice is its own scale, patch indices and deltas. */
export const interventionInputs = {
  /** [batch, 1, Σ m_L]: layer after layer. */
  scale: 'neuronpatch.scale',
  /** [layers · K]: K neuron indices per layer. */
  patchIndex: 'neuronpatch.patch_index',
  /** [1 or batch, layers · K, d]. */
  patchDelta: 'neuronpatch.patch_delta',
};

const perLayer = {
  scale: (layer: number): string => `blocks.${layer}.mlp.scale`,
  patchIndex: (layer: number): string => `blocks.${layer}.mlp.patch_index`,
  patchDelta: (layer: number): string => `blocks.${layer}.mlp.patch_delta`,
};

const T = onnx.TensorProto.DataType;
const A = onnx.AttributeProto.AttributeType;
export const LAST_LOGITS = 'logits.last';
/**
 * [batch, 2], float32: each row of LAST_LOGITS' max and its log-softmax there, so that log Σ exp = max − that
 * (taken in float64, it keeps the precision a float32 log Σ exp of large logits would lose): a token's
 * probability without a pass over the vocabulary in JS.
 */
export const LAST_NORMALIZER = 'logits.last.normalizer';
const LAST_INDEX = 'neuronpatch.last_index';
/** [P] sequence positions (negative: from the end) whose logits the lm_head computes. */
export const LOGIT_POSITIONS = 'neuronpatch.logit_positions';
const LOGIT_HIDDEN = 'neuronpatch.logit_hidden';

function valueInfo(name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function node(opType: string, inputs: string[], outputs: string[], name: string, attribute: onnx.IAttributeProto[] = []): onnx.INodeProto {
  return { opType, input: inputs, output: outputs, name, attribute };
}

function int64s(name: string, values: number[]): onnx.ITensorProto {
  return { name, dataType: T.INT64, dims: [values.length], int64Data: values };
}

/** Ops whose list arguments became inputs at some opset version take them as initializers from there on. */
class OpsetHelper {
  readonly initializers: onnx.ITensorProto[] = [];

  constructor(private readonly version: number) {}

  /** Split `input` along `axis` into `outputs`, of `sizes` each (or equal parts). */
  split(input: string, axis: number, outputs: string[], sizes?: number[]): onnx.INodeProto {
    const name = `neuronpatch/split/${input}`;
    const attribute: onnx.IAttributeProto[] = [{ name: 'axis', type: A.INT, i: axis }];
    const inputs = [input];
    if (sizes && this.version >= 13) inputs.push(this.constant(`${name}/sizes`, sizes));
    else if (sizes) attribute.push({ name: 'split', type: A.INTS, ints: sizes });
    else if (this.version >= 18) attribute.push({ name: 'num_outputs', type: A.INT, i: outputs.length });
    return node('Split', inputs, outputs, name, attribute);
  }

  /** ReduceMax over the last axis, kept. */
  reduceMaxLast(input: string, output: string, name: string): onnx.INodeProto {
    const attribute: onnx.IAttributeProto[] = [{ name: 'keepdims', type: A.INT, i: 1 }];
    const inputs = [input];
    if (this.version >= 18) inputs.push(this.constant(`${name}/axes`, [-1]));
    else attribute.push({ name: 'axes', type: A.INTS, ints: [-1] });
    return node('ReduceMax', inputs, [output], name, attribute);
  }

  private constant(name: string, values: number[]): string {
    this.initializers.push(int64s(name, values));
    return name;
  }
}

/**
 * LAST_NORMALIZER from [batch, V] logits: [max, max(LogSoftmax)] per row, with onnxruntime's vectorised LogSoftmax
 * (float32; fp16 logits are cast up first so that the sum keeps float32 precision).
 */
function normalizerNodes(ops: OpsetHelper, logits: string, output: string, fp16: boolean): onnx.INodeProto[] {
  const nodes: onnx.INodeProto[] = [];
  const p = 'neuronpatch/logits/normalizer';
  let x = logits;
  if (fp16) {
    nodes.push(node('Cast', [logits], [`${p}/float`], `${p}/cast`, [{ name: 'to', type: A.INT, i: T.FLOAT }]));
    x = `${p}/float`;
  }
  nodes.push(
    node('LogSoftmax', [x], [`${p}/logsoftmax`], `${p}/logsoftmax`, [{ name: 'axis', type: A.INT, i: -1 }]),
    ops.reduceMaxLast(x, `${p}/max`, `${p}/max`),
    ops.reduceMaxLast(`${p}/logsoftmax`, `${p}/top`, `${p}/top`),
    node('Concat', [`${p}/max`, `${p}/top`], [output], `${p}/concat`, [{ name: 'axis', type: A.INT, i: -1 }]),
  );
  return nodes;
}

/**
 * The lm_head MatMul, where the logits output is [batch, seq, V] and reached from it through bias adds and casts
 * only, so that its input is [batch, seq, d] and gathering positions there gathers logits.
 */
function findLmHead(src: onnx.IGraphProto, graph: ModelGraph): onnx.INodeProto | undefined {
  const declared = (src.output ?? []).find((o) => o.name === graph.logits)?.type?.tensorType?.shape?.dim;
  if (declared?.length !== 3) return undefined;
  const producers = new Map<string, onnx.INodeProto>();
  for (const n of src.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const constants = new Set((src.initializer ?? []).map((t) => t.name));
  for (const n of src.node ?? []) if (n.opType === 'Constant') for (const o of n.output ?? []) constants.add(o);
  let name = graph.logits;
  for (let hops = 0; hops < 4; hops++) {
    const p = producers.get(name);
    // MatMulNBits computes each row on its own as MatMul does; a DynamicQuantizeLinear before the lm_head
    // quantizes with one scale for the whole tensor, so gathering positions there would change the logits.
    if (p?.opType === 'MatMul' || p?.opType === 'MatMulNBits') return p;
    if (p?.opType !== 'Add' && p?.opType !== 'Cast') return undefined;
    const computed = (p.input ?? []).filter((i) => i && !constants.has(i));
    if (computed.length !== 1) return undefined;
    name = computed[0];
  }
  return undefined;
}

/** The value info with dimension `axis` renamed (a different size under the same name would mislead ORT's planner). */
function withDimParam(info: onnx.IValueInfoProto, axis: number, dimParam: string): onnx.IValueInfoProto {
  const t = info.type!.tensorType!;
  const dim = t.shape!.dim!.map((x, i) => (i === axis ? { dimParam } : x));
  return { ...info, type: { ...info.type, tensorType: { ...t, shape: { dim } } } };
}

/** The model's version of the default ONNX domain. */
function defaultOpset(model: onnx.IModelProto): number {
  const entry = model.opsetImport?.find((o) => !o.domain || o.domain === 'ai.onnx');
  if (!entry) throw new NeuronpatchError('The model imports no version of the default ONNX operator set.');
  return Number(entry.version);
}

/** Returns a new ModelProto (the input is not modified) and the graph description with the residual named. */
export function instrument(model: onnx.IModelProto, graph: ModelGraph): { model: onnx.IModelProto; graph: ModelGraph } {
  const src = model.graph!;
  const floatEnum = graph.floatType === 'float16' ? T.FLOAT16 : T.FLOAT;
  const [V, d] = extent(graph.unembedding);
  const before = new Map<string, onnx.INodeProto[]>();  // nodes to insert before a node (by output[0])
  const after = new Map<string, onnx.INodeProto[]>();
  const outputs: onnx.IValueInfoProto[] = [];
  const renamed = new Map<string, string>();  // projection output → patched output, for its consumers
  const ops = new OpsetHelper(defaultOpset(model));
  const sites = [...graph.sites].sort((a, b) => a.layer - b.layer);
  const widths = sites.map((site) => extent(site.weight)[0]);
  const inputs = [
    valueInfo(interventionInputs.scale, floatEnum, ['batch_size', 1, widths.reduce((a, b) => a + b, 0)]),
    valueInfo(interventionInputs.patchIndex, T.INT64, ['patch_slots']),
    valueInfo(interventionInputs.patchDelta, floatEnum, ['patch_batch', 'patch_slots', d]),
  ];
  const unpack = [
    ops.split(interventionInputs.scale, 2, sites.map((s) => perLayer.scale(s.layer)), widths),
    ops.split(interventionInputs.patchIndex, 0, sites.map((s) => perLayer.patchIndex(s.layer))),
    ops.split(interventionInputs.patchDelta, 1, sites.map((s) => perLayer.patchDelta(s.layer))),
  ];
  // Added (keyed) neurons: their own inputs and nodes (added.ts), on every layer whose FFN input is found.
  inputs.push(...addedInputInfos(floatEnum, d));
  unpack.push(
    ops.split(addedInputs.key, 1, sites.map((s) => addedPerLayer.key(s.layer))),
    ops.split(addedInputs.threshold, 0, sites.map((s) => addedPerLayer.threshold(s.layer))),
    ops.split(addedInputs.value, 1, sites.map((s) => addedPerLayer.value(s.layer))),
  );
  const keyedLayers: number[] = [];

  // The packed inputs have the pasts' type; each layer's slices are cast to the type of the activation they meet
  // (fp16 activations behind fp32 graph inputs in a keep-io-types export).
  const cast = (input: string, from: number, to: number, name: string): { nodes: onnx.INodeProto[]; tensor: string } =>
    to === from
      ? { nodes: [], tensor: input }
      : { nodes: [node('Cast', [input], [`${input}/cast`], name, [{ name: 'to', type: A.INT, i: to }])], tensor: `${input}/cast` };
  const dynamicEntry = new Map<string, number>();  // activation → layer, where a DynamicQuantizeLinear reads it
  sites.forEach((site, i) => {
    const L = site.layer;
    const post = hooks.mlpPost(L);
    const key = site.output;
    const zType = site.activationType ?? floatEnum;
    const outType = site.outputType ?? zType;
    outputs.push(valueInfo(post, zType, ['batch_size', 'sequence_length', widths[i]]));
    const scale = cast(perLayer.scale(L), floatEnum, zType, `neuronpatch/blocks.${L}/mlp/scale_cast`);
    const delta = cast(perLayer.patchDelta(L), floatEnum, zType, `neuronpatch/blocks.${L}/mlp/delta_cast`);
    const scaleNodes = [...scale.nodes, node('Mul', [site.activation, scale.tensor], [post], `neuronpatch/blocks.${L}/mlp/scale`)];
    if (site.entry) dynamicEntry.set(site.activation, L);
    before.set(site.entry ? `entry:${site.activation}` : key, scaleNodes);
    const picked = `blocks.${L}.mlp.patch_z`;
    const term = `blocks.${L}.mlp.patch_term`;
    // Added neurons where the FFN input is found and the layer computes in the graph's input type (no casts).
    const ffnIn = zType === floatEnum && outType === floatEnum ? findFfnInput(src, site) : undefined;
    const patched = ffnIn ? `blocks.${L}.mlp.edited` : `blocks.${L}.mlp.out`;
    const termOut = cast(term, zType, outType, `neuronpatch/blocks.${L}/mlp/term_cast`);
    after.set(key, [
      ...delta.nodes,
      node('Gather', [post, perLayer.patchIndex(L)], [picked], `neuronpatch/blocks.${L}/mlp/patch_gather`,
        [{ name: 'axis', type: A.INT, i: -1 }]),
      node('MatMul', [picked, delta.tensor], [term], `neuronpatch/blocks.${L}/mlp/patch_matmul`),
      ...termOut.nodes,
      node('Add', [site.output, termOut.tensor], [patched], `neuronpatch/blocks.${L}/mlp/patch_add`),
      ...(ffnIn ? [
        ffnInputOutput(L, ffnIn),
        ...addedNeuronNodes(L, ffnIn, patched, `blocks.${L}.mlp.out`,
          { key: addedPerLayer.key(L), threshold: addedPerLayer.threshold(L), value: addedPerLayer.value(L) }),
      ] : []),
    ]);
    if (ffnIn) {
      keyedLayers.push(L);
      outputs.push({ name: mlpIn(L), type: { tensorType: { elemType: floatEnum } } });
    }
    renamed.set(site.output, `blocks.${L}.mlp.out`);
  });

  const finalNorm = { ...graph.finalNorm };
  const nodes: onnx.INodeProto[] = [...unpack];
  const graphOutputs = new Set((src.output ?? []).map((o) => o.name));
  const castTo = (n: onnx.INodeProto | undefined) => (n?.opType === 'Cast' ? Number(n.attribute?.find((a) => a.name === 'to')?.i ?? -1) : -1);
  const producers = new Map<string, onnx.INodeProto>();
  for (const n of src.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const siteByOutput = new Map(graph.sites.map((s) => [s.output, s]));
  const lmHead = findLmHead(src, graph);
  if (lmHead) inputs.push(valueInfo(LOGIT_POSITIONS, T.INT64, ['logit_positions']));
  let residualSeen = false;
  for (const original of src.node ?? []) {
    // A Cast to the type its input already has (a Cast of a Cast to the same type) is dropped and its users read
    // the first Cast: onnxruntime's optimizer rejects graphs where such a chain feeds two branches.
    const to = castTo(original);
    const input0 = original.input?.[0] ?? '';
    if (to >= 0 && castTo(producers.get(input0)) === to && !graphOutputs.has(original.output?.[0])) {
      renamed.set(original.output![0], renamed.get(input0) ?? input0);
      continue;
    }
    const n: onnx.INodeProto = { ...original, input: [...(original.input ?? [])], output: [...(original.output ?? [])] };
    const out0 = n.output![0] ?? '';
    const site = siteByOutput.get(out0);
    const entryLayer = original.opType === 'DynamicQuantizeLinear' ? dynamicEntry.get(input0) : undefined;
    if (entryLayer !== undefined) {
      // 8-bit dynamic quantization: the scaled activation is what gets quantized.
      nodes.push(...(before.get(`entry:${input0}`) ?? []));
      n.input![0] = hooks.mlpPost(entryLayer);
    } else if (site && !site.entry) {
      if (n.input![0] !== site.activation) throw new NeuronpatchError(`Layer ${site.layer}: unexpected input order at ${site.node}.`);
      n.input![0] = hooks.mlpPost(site.layer);
    } else {
      n.input = n.input!.map((i) => renamed.get(i) ?? i);
    }
    if (original === lmHead) {
      nodes.push(node('Gather', [n.input![0], LOGIT_POSITIONS], [LOGIT_HIDDEN], 'neuronpatch/logits/positions', [{ name: 'axis', type: A.INT, i: 1 }]));
      n.input![0] = LOGIT_HIDDEN;
    }
    if (finalNorm.fusedWith && out0 === finalNorm.fusedWith) {
      while (n.output!.length < 4) n.output!.push('');
      if (!n.output![3]) n.output![3] = hooks.finalResid;
      finalNorm.residual = n.output![3];
    }
    // The added neurons' nodes read the FFN input, which a dropped Cast may have renamed.
    const follow = (after.get(out0) ?? []).map((a) => (a.name?.includes('/mlp/added') || a.name?.endsWith('/mlp/in')
      ? { ...a, input: (a.input ?? []).map((i) => (i.startsWith('blocks.') ? i : renamed.get(i) ?? i)) } : a));
    nodes.push(...(before.get(out0) ?? []), n, ...follow);
    if (!residualSeen && finalNorm.residual && n.output!.includes(finalNorm.residual)) residualSeen = true;
  }
  if (!finalNorm.residual) throw new NeuronpatchError('Could not name the final residual stream of the fused final norm.');
  const inputNames = new Set((src.input ?? []).map((i) => i.name));
  if (!residualSeen && !inputNames.has(finalNorm.residual)) {
    throw new NeuronpatchError(`The final residual tensor ${finalNorm.residual} is not produced by any node.`);
  }
  if (finalNorm.residual !== hooks.finalResid) {
    nodes.push(node('Identity', [finalNorm.residual], [hooks.finalResid], 'neuronpatch/final/resid'));
  }
  outputs.push(valueInfo(hooks.finalResid, graph.residualType ?? floatEnum, ['batch_size', 'sequence_length', d]));
  // The last position's logits on their own: decoding needs no more, and a long prompt's full logits are large.
  nodes.push(node('Gather', [graph.logits, LAST_INDEX], [LAST_LOGITS], 'neuronpatch/logits/last', [{ name: 'axis', type: A.INT, i: 1 }]));
  const logitsType = graph.logitsType ?? floatEnum;
  outputs.push(valueInfo(LAST_LOGITS, logitsType, ['batch_size', V]));
  nodes.push(...normalizerNodes(ops, LAST_LOGITS, LAST_NORMALIZER, logitsType === T.FLOAT16));
  outputs.push(valueInfo(LAST_NORMALIZER, T.FLOAT, ['batch_size', 2]));
  const lastIndex: onnx.ITensorProto = { name: LAST_INDEX, dataType: T.INT64, dims: [], int64Data: [-1] };

  const srcOutputs = (src.output ?? []).map((o) => (lmHead && o.name === graph.logits ? withDimParam(o, 1, 'logit_positions') : o));
  const out: onnx.IModelProto = {
    ...model,
    graph: {
      ...src, node: nodes, input: [...(src.input ?? []), ...inputs], output: [...srcOutputs, ...outputs],
      initializer: [...(src.initializer ?? []), lastIndex, ...ops.initializers],
    },
  };
  return { model: out, graph: { ...graph, finalNorm, logitPositions: lmHead ? LOGIT_POSITIONS : undefined, keyedLayers } };
}
