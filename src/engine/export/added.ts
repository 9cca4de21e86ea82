// Baking added (keyed) neurons into an exported model: a small side branch in each layer that has some,
//   out' = out + ReLU(x̂ · K − τ) · V       (added.ts's nodes, with K [d, n], τ [n], V [n, d] as initializers)
// reading the FFN input x̂ and writing after the FFN output projection, whose consumers read out' instead.
// K, τ and V are stored in the type of the layer's output weight (fp32, or fp16 rounded to nearest even).
import { addedNeuronNodes, findFfnInput } from '../model/added';
import type { FfnSite } from '../model/graph';
import { f32ToF16 } from '../onnx/float16';
import { onnx } from '../onnx/proto';
import { NeuronpatchError, type Patch } from '../types';
import { addedOf } from '../patches/patchset';

function tensor(name: string, dims: number[], values: Float32Array, fp16: boolean): onnx.ITensorProto {
  const T = onnx.TensorProto.DataType;
  const bytes = fp16 ? new Uint8Array(f32ToF16(values).buffer) : new Uint8Array(values.buffer.slice(0));
  return { name, dataType: fp16 ? T.FLOAT16 : T.FLOAT, dims, rawData: bytes };
}

/**
 * Adds the enabled patches' added neurons to `model` (changed in place). Returns how many neurons were baked;
 * throws a NeuronpatchError where a layer's FFN input cannot be found.
 */
export function bakeAddedNeurons(model: onnx.IModelProto, sites: FfnSite[], patches: Patch[], width: number): number {
  const added = addedOf(patches);
  if (!added.length) return 0;
  const g = model.graph!;
  const byLayer = new Map<number, typeof added>();
  for (const a of added) byLayer.set(a.layer, [...(byLayer.get(a.layer) ?? []), a]);
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  for (const [layer, list] of byLayer) {
    const site = sites.find((s) => s.layer === layer);
    if (!site) throw new NeuronpatchError(`The patches add neurons to layer ${layer}, which the model does not have.`, 'These patches were made for another model.');
    const ffnIn = findFfnInput(g, site);
    if (!ffnIn) throw new NeuronpatchError(`Layer ${layer}'s FFN input could not be found: its added neurons cannot be baked in.`, 'Apply the patch at run time instead.');
    const fp16 = inits.get(site.weight.name)?.dataType === onnx.TensorProto.DataType.FLOAT16;
    const n = list.length;
    const key = new Float32Array(width * n);
    const threshold = new Float32Array(n);
    const value = new Float32Array(n * width);
    list.forEach((a, i) => {
      if (a.key.length !== width || a.value.length !== width) throw new NeuronpatchError(`An added neuron of layer ${layer} has a key or value of the wrong width (the model's is ${width}).`, 'These patches were made for another model.');
      for (let c = 0; c < width; c++) {
        key[c * n + i] = a.key[c];
        value[i * width + c] = a.value[c];
      }
      threshold[i] = a.threshold;
    });
    const names = { key: `neuronpatch.blocks.${layer}.added_key`, threshold: `neuronpatch.blocks.${layer}.added_threshold`, value: `neuronpatch.blocks.${layer}.added_value` };
    g.initializer = [...(g.initializer ?? []),
      tensor(names.key, [width, n], key, fp16), tensor(names.threshold, [n], threshold, fp16), tensor(names.value, [n, width], value, fp16)];
    const out = `${site.output}/neuronpatch_added`;
    const branch = addedNeuronNodes(layer, ffnIn, site.output, out, names, 'baked');
    const nodes = g.node ?? [];
    for (const node of nodes) node.input = (node.input ?? []).map((i) => (i === site.output ? out : i));
    for (const o of g.output ?? []) if (o.name === site.output) o.name = out;
    const at = nodes.findIndex((node) => (node.output ?? []).includes(site.output));
    nodes.splice(at + 1, 0, ...branch);
    g.node = nodes;
  }
  return added.length;
}
