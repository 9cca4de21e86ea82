// Graph surgery: exposes every layer's FFN activation and the final residual, and adds the intervention inputs.
//
// For each layer L, with z the input of the FFN output projection W_out:
//   blocks.L.mlp.post = z ⊙ blocks.L.mlp.scale                [batch, seq, m]   (scale: [batch, 1, m], 1 = neutral)
//   W_out's input     ← blocks.L.mlp.post
//   FFN output       += Gather(post, patch_index) · patch_delta  (index: [K]; delta: [1 or batch, K, d])
// so that ablations are per example and a patch adds Σ_j z_j Δv_j without touching any weight.
// Intervention inputs are plain required inputs (an initializer would make ORT silently ignore the feed).
import { onnx } from 'onnx-proto';
import { hooks, NeuronpatchError } from '../types';
import type { ModelGraph } from './graph';

export const interventionNames = {
  scale: (layer: number): string => `blocks.${layer}.mlp.scale`,
  patchIndex: (layer: number): string => `blocks.${layer}.mlp.patch_index`,
  patchDelta: (layer: number): string => `blocks.${layer}.mlp.patch_delta`,
};

const T = onnx.TensorProto.DataType;
export const LAST_LOGITS = 'logits.last';
const LAST_INDEX = 'neuronpatch.last_index';

function valueInfo(name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function node(opType: string, inputs: string[], outputs: string[], name: string, attribute: onnx.IAttributeProto[] = []): onnx.INodeProto {
  return { opType, input: inputs, output: outputs, name, attribute };
}

/** Returns a new ModelProto (the input is not modified) and the graph description with the residual named. */
export function instrument(model: onnx.IModelProto, graph: ModelGraph): { model: onnx.IModelProto; graph: ModelGraph } {
  const src = model.graph!;
  const floatEnum = graph.floatType === 'float16' ? T.FLOAT16 : T.FLOAT;
  const d = graph.unembedding.layout === 'rows' ? graph.unembedding.dims[1] : graph.unembedding.dims[0];
  const before = new Map<string, onnx.INodeProto[]>();  // nodes to insert before a node (by output[0])
  const after = new Map<string, onnx.INodeProto[]>();
  const inputs: onnx.IValueInfoProto[] = [];
  const outputs: onnx.IValueInfoProto[] = [];
  const renamed = new Map<string, string>();  // projection output → patched output, for its consumers

  for (const site of graph.sites) {
    const L = site.layer;
    const m = site.weight.layout === 'rows' ? site.weight.dims[0] : site.weight.dims[1];
    const post = hooks.mlpPost(L);
    const key = site.output;
    inputs.push(valueInfo(interventionNames.scale(L), floatEnum, ['batch_size', 1, m]));
    // Each layer's patch has its own symbolic sizes: ORT's memory planner equates dims that share a name.
    inputs.push(valueInfo(interventionNames.patchIndex(L), T.INT64, [`patch_neurons_${L}`]));
    inputs.push(valueInfo(interventionNames.patchDelta(L), floatEnum, [`patch_batch_${L}`, `patch_neurons_${L}`, d]));
    outputs.push(valueInfo(post, floatEnum, ['batch_size', 'sequence_length', m]));
    before.set(key, [node('Mul', [site.activation, interventionNames.scale(L)], [post], `neuronpatch/blocks.${L}/mlp/scale`)]);
    const picked = `blocks.${L}.mlp.patch_z`;
    const term = `blocks.${L}.mlp.patch_term`;
    const patched = `blocks.${L}.mlp.out`;
    after.set(key, [
      node('Gather', [post, interventionNames.patchIndex(L)], [picked], `neuronpatch/blocks.${L}/mlp/patch_gather`,
        [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 }]),
      node('MatMul', [picked, interventionNames.patchDelta(L)], [term], `neuronpatch/blocks.${L}/mlp/patch_matmul`),
      node('Add', [site.output, term], [patched], `neuronpatch/blocks.${L}/mlp/patch_add`),
    ]);
    renamed.set(site.output, patched);
  }

  const finalNorm = { ...graph.finalNorm };
  const nodes: onnx.INodeProto[] = [];
  const graphOutputs = new Set((src.output ?? []).map((o) => o.name));
  const castTo = (n: onnx.INodeProto | undefined) => (n?.opType === 'Cast' ? Number(n.attribute?.find((a) => a.name === 'to')?.i ?? -1) : -1);
  const producers = new Map<string, onnx.INodeProto>();
  for (const n of src.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const siteByOutput = new Map(graph.sites.map((s) => [s.output, s]));
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
    if (site) {
      if (n.input![0] !== site.activation) throw new NeuronpatchError(`Layer ${site.layer}: unexpected input order at ${site.node}.`);
      n.input![0] = hooks.mlpPost(site.layer);
    } else {
      n.input = n.input!.map((i) => renamed.get(i) ?? i);
    }
    if (finalNorm.fusedWith && out0 === finalNorm.fusedWith) {
      while (n.output!.length < 4) n.output!.push('');
      if (!n.output![3]) n.output![3] = hooks.finalResid;
      finalNorm.residual = n.output![3];
    }
    nodes.push(...(before.get(out0) ?? []), n, ...(after.get(out0) ?? []));
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
  outputs.push(valueInfo(hooks.finalResid, floatEnum, ['batch_size', 'sequence_length', d]));
  // The last position's logits on their own: decoding needs no more, and a long prompt's full logits are large.
  const V = graph.unembedding.layout === 'rows' ? graph.unembedding.dims[0] : graph.unembedding.dims[1];
  nodes.push(node('Gather', [graph.logits, LAST_INDEX], [LAST_LOGITS], 'neuronpatch/logits/last',
    [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 }]));
  outputs.push(valueInfo(LAST_LOGITS, floatEnum, ['batch_size', V]));
  const lastIndex: onnx.ITensorProto = { name: LAST_INDEX, dataType: T.INT64, dims: [], int64Data: [-1] };

  const out: onnx.IModelProto = {
    ...model,
    graph: {
      ...src, node: nodes, input: [...(src.input ?? []), ...inputs], output: [...(src.output ?? []), ...outputs],
      initializer: [...(src.initializer ?? []), lastIndex],
    },
  };
  return { model: out, graph: { ...graph, finalNorm } };
}
