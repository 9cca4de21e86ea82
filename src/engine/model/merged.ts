// Merged decoders (Optimum's decoder_model_merged.onnx): one If on the boolean input `use_cache_branch` whose two
// subgraphs are the decoder with a KV cache and without one, over initializers shared in the outer graph. The
// engine always runs with a cache (empty on the first step, which the with-past branch takes as it is), so the
// with-past branch is lifted into a plain graph: recognition, instrumentation and the cached instrumented graph
// read that. The weights stay the outer graph's initializers under their names, so reading value vectors and
// baking a patch into the merged file (both branches share them) need nothing special.
import { onnx } from 'onnx-proto';
import { NeuronpatchError } from '../types';

/** The input Optimum's merged decoders branch on. */
export const USE_CACHE_BRANCH = 'use_cache_branch';

export interface Unmerged {
  model: onnx.IModelProto;
  /** Set when the model was a merged decoder: which branch was lifted. */
  lifted?: 'then_branch' | 'else_branch';
}

const usesPast = (g: onnx.IGraphProto, pasts: Set<string>): boolean =>
  (g.node ?? []).some((n) => (n.input ?? []).some((i) => pasts.has(i)));

/**
 * A merged decoder's with-past branch as a plain graph with the outer graph's inputs (less `use_cache_branch`),
 * outputs and initializers; any other model unchanged. The branch that reads the past inputs is the with-past one
 * (Optimum's then_branch).
 * @throws NeuronpatchError where the If's branches cannot be told apart or its outputs do not match the graph's.
 */
export function liftMerged(model: onnx.IModelProto): Unmerged {
  const g = model.graph;
  const branchInput = (g?.input ?? []).find((i) => i.name === USE_CACHE_BRANCH);
  if (!g || !branchInput) return { model };
  const ifs = (g.node ?? []).filter((n) => n.opType === 'If' && n.input?.[0] === USE_CACHE_BRANCH);
  if (ifs.length !== 1) {
    throw new NeuronpatchError(
      `The graph takes ${USE_CACHE_BRANCH} but has ${ifs.length} If nodes on it; a merged decoder has one.`,
      'Export the decoder with past (decoder_with_past_model.onnx) instead of the merged one.',
    );
  }
  const node = ifs[0];
  const branch = (name: string) => node.attribute?.find((a) => a.name === name)?.g ?? undefined;
  const pasts = new Set((g.input ?? []).map((i) => i.name ?? '').filter((n) => /past/.test(n)));
  const candidates = (['then_branch', 'else_branch'] as const).filter((b) => branch(b) && usesPast(branch(b)!, pasts));
  const which = candidates.includes('then_branch') ? 'then_branch' : candidates[0];
  if (!which) {
    throw new NeuronpatchError(
      'The merged decoder\'s If has no branch that reads the past inputs.',
      'Export the decoder with past (decoder_with_past_model.onnx) instead of the merged one.',
    );
  }
  const sub = branch(which)!;
  const outer = node.output ?? [];
  const inner = (sub.output ?? []).map((o) => o.name ?? '');
  if (inner.length !== outer.length) {
    throw new NeuronpatchError(`The merged decoder's ${which} has ${inner.length} outputs; the If has ${outer.length}.`);
  }
  // The branch's outputs take the If's names; nothing else in the branch is renamed (its other tensors are its own).
  const rename = new Map(inner.map((n, i) => [n, outer[i]]));
  const lift = (n: onnx.INodeProto): onnx.INodeProto => ({
    ...n,
    input: (n.input ?? []).map((i) => rename.get(i) ?? i),
    output: (n.output ?? []).map((o) => rename.get(o) ?? o),
  });
  const before = (g.node ?? []).slice(0, (g.node ?? []).indexOf(node));
  const afterIf = (g.node ?? []).slice((g.node ?? []).indexOf(node) + 1);
  const graph: onnx.IGraphProto = {
    ...g,
    node: [...before, ...(sub.node ?? []).map(lift), ...afterIf],
    input: (g.input ?? []).filter((i) => i.name !== USE_CACHE_BRANCH),
    initializer: [...(g.initializer ?? []), ...(sub.initializer ?? [])],
    valueInfo: [...(g.valueInfo ?? []), ...(sub.valueInfo ?? []).filter((v) => !rename.has(v.name ?? ''))],
  };
  return { model: { ...model, graph }, lifted: which };
}
