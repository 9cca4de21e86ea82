// The one way a neuron is named, in the CLI, the panel, the Patches view and exported reports: `L3.N280` for neuron
// 280 of layer 3's FFN (0-based, as the trace and the patch file count them), and `L4.K0` for the first neuron
// keyed patches added to layer 4 (K for key: numbered 0, 1, … within the layer over the stack of patches applied,
// in patch order: the engine's own numbering, and the order of the side branch an export bakes; so a second keyed
// patch on layer 4 names its neurons on from the first one's, in `repair`, `trace` and PATCHES.md alike). Pure: the
// webview imports it too.

/** A neuron as the engine reports it: added (keyed) ones are numbered from the layer's FFN width on. */
export interface NamedNeuron {
  layer: number;
  neuron: number;
  added?: unknown;
}

/**
 * `L<layer>.N<neuron>`, or `L<layer>.K<k>` for an added neuron, whose engine number is `neuronsPerLayer + k`
 * (`neuronsPerLayer`: ModelInfo.neurons, the FFN width).
 */
export function neuronName(n: NamedNeuron, neuronsPerLayer: number): string {
  return n.added ? addedName(n.layer, n.neuron >= neuronsPerLayer ? n.neuron - neuronsPerLayer : n.neuron) : `L${n.layer}.N${n.neuron}`;
}

/** `L<layer>.K<k>`: the k-th added (keyed) neuron of a layer. */
export function addedName(layer: number, k: number): string {
  return `L${layer}.K${k}`;
}

/**
 * The neurons of one patch by name: its edited neurons (`L3.N280`), then its added ones numbered on from the added
 * neurons of the same layer in `earlier`, the enabled patches applied before it (in patch order, as the engine
 * stacks them and as an export bakes them): with no earlier keyed patch they are `L4.K0`, `L4.K1`; on top of one
 * that added two neurons to layer 4, `L4.K2`, `L4.K3`, the names `repair` printed when it made them.
 */
export function patchNeuronNames(
  p: { edits: readonly { layer: number; neuron: number }[]; added?: readonly { layer: number }[] },
  earlier: readonly { enabled?: boolean; added?: readonly { layer: number }[] }[] = [],
): string[] {
  const count = new Map<number, number>();
  for (const e of earlier) if (e.enabled !== false) for (const a of e.added ?? []) count.set(a.layer, (count.get(a.layer) ?? 0) + 1);
  const added = (p.added ?? []).map((a) => {
    const k = count.get(a.layer) ?? 0;
    count.set(a.layer, k + 1);
    return addedName(a.layer, k);
  });
  return [...p.edits.map((e) => `L${e.layer}.N${e.neuron}`), ...added];
}
