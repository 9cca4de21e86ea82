// Trace a bad completion: failing positions by teacher forcing, then at the first one direct attribution of every
// neuron, layer occlusion (all layers in one batch) and a causal check of the top candidates (one batch).
import { generate } from '../generate';
import { repeatRows } from '../prefix';
import { logSumExp, row, topK } from '../linalg';
import type { LoadedModel } from '../model/load';
import { type AddedNeuron, addedActivation } from '../model/added';
import type { Ablation, LayerEdits } from '../model/session';
import type { LayerOcclusion, NeuronReport, RepairCase, TraceResult } from '../types';
import { contrast, logitLenses, valueProjections } from './attribution';
import { describePosition, type Forced, type PositionState, repairTarget, teacherForce } from './teacher';

export interface TraceOptions {
  /** Neurons reported (and checked by ablation). */
  top?: number;
  edits?: LayerEdits;
  signal?: AbortSignal;
  /**
   * What the caller computed already under the same edits (a repair generates and teacher-forces the case
   * before tracing it): the greedy completion, and the teacher-forced state with every layer's activations and
   * the residual. Each is computed here where absent.
   */
  known?: { completion?: string; forced?: Forced };
}

export interface NeuronScore {
  layer: number;
  neuron: number;
  activation: number;
  attribution: number;
  /** An added (keyed) neuron of the active patches: numbered from the layer's FFN width on. */
  added?: AddedNeuron;
}

/**
 * The active patches' added neurons at input position `pos`, scored like the others: activation a(x̂) and direct
 * attribution a (v · c); numbered m, m+1, … within their layer, in patch order.
 */
export async function addedAttributions(model: LoadedModel, ids: number[], pos: number, c: Float64Array, edits?: LayerEdits): Promise<NeuronScore[]> {
  const added = edits?.added ?? [];
  if (!added.length) return [];
  const d = model.info.width;
  const layers = [...new Set(added.map((a) => a.layer))];
  const res = await model.session.forward({ ids: [ids], edits, ffnInputs: layers, lastOnly: true });
  const count = new Map<number, number>();
  return added.map((a) => {
    const k = count.get(a.layer) ?? 0;
    count.set(a.layer, k + 1);
    const act = addedActivation(a, res.ffnInputs.get(a.layer)!, pos * d);
    let vc = 0;
    for (let i = 0; i < d; i++) vc += a.value[i] * c[i];
    return { layer: a.layer, neuron: model.info.neurons + k, activation: act, attribution: act * vc, added: a };
  });
}

/** Direct attribution z_j (v_j · c) of every neuron at input position `pos`. */
export function attributions(model: LoadedModel, f: Forced, pos: number, c: Float64Array): NeuronScore[] {
  const { layers, neurons: m } = model.info;
  const out: NeuronScore[] = [];
  for (let L = 0; L < layers; L++) {
    const z = f.activations.get(L)!;
    const proj = valueProjections(model, L, c);
    for (let j = 0; j < m; j++) {
      const a = z[pos * m + j];
      out.push({ layer: L, neuron: j, activation: a, attribution: a * proj[j] });
    }
  }
  return out;
}

/** Log-probability of y at the last position of each row, and the gap y − a. */
function readout(logits: Float32Array, rows: number, seq: number, V: number, y: number, a: number): { logp: number[]; gap: number[] } {
  const logp: number[] = [];
  const gap: number[] = [];
  for (let b = 0; b < rows; b++) {
    const off = (b * seq + seq - 1) * V;
    logp.push(logits[off + y] - logSumExp(logits, off, V));
    gap.push(logits[off + y] - logits[off + a]);
  }
  return { logp, gap };
}

/** Rows per forward when one prompt is run many times with different ablations: bounds activations' memory. */
const ABLATION_BATCH = 16;

/**
 * The last position's readout of `ids` under each set of ablations (one row each, `example` numbered from 0).
 * The ablations act at the last position: the prompt before it runs once, unablated (with `edits`), and its KV
 * cache is shared by every row, so that each row costs one token instead of the whole prompt (at a real model's
 * size the whole prompt per row made tracing cost dozens of generations). An ablated neuron's effect on the
 * prediction through its own position and the layers above it is measured; its effect through attention from
 * earlier positions is not (a last layer's neurons have none). Rows run in batches of ABLATION_BATCH.
 */
async function lastReadouts(model: LoadedModel, ids: number[], y: number, a: number, ablations: Ablation[][], edits?: LayerEdits, signal?: AbortSignal): Promise<{ logp: number[]; gap: number[] }> {
  const out = { logp: [] as number[], gap: [] as number[] };
  const prefix = ids.length > 1 ? (await model.session.forward({ ids: [ids.slice(0, -1)], edits, cache: true, lastOnly: true })).cache : undefined;
  const stacked = model.graph.cache.kind === 'stacked';
  for (let i = 0; i < ablations.length; i += ABLATION_BATCH) {
    if (signal?.aborted) throw new Error('cancelled');
    const chunk = ablations.slice(i, i + ABLATION_BATCH);
    const res = await model.session.forward({
      ids: chunk.map(() => ids.slice(-1)), past: prefix && repeatRows(prefix, chunk.length, stacked), edits, lastOnly: true,
      ablations: chunk.flatMap((set, r) => set.map((x) => ({ ...x, example: r }))),
    });
    const r = readout(res.logits, chunk.length, 1, model.info.vocab, y, a);
    out.logp.push(...r.logp);
    out.gap.push(...r.gap);
  }
  return out;
}

/** The last position's gap y − a under each of `rows`' edits, on top of the prefix run once with `shared`. */
async function lastReadoutsLeaving(model: LoadedModel, ids: number[], y: number, a: number, shared: LayerEdits, rows: LayerEdits[]): Promise<number[]> {
  const prefix = ids.length > 1 ? (await model.session.forward({ ids: [ids.slice(0, -1)], edits: shared, cache: true, lastOnly: true })).cache : undefined;
  const stacked = model.graph.cache.kind === 'stacked';
  const gaps: number[] = [];
  for (let i = 0; i < rows.length; i += ABLATION_BATCH) {
    const chunk = rows.slice(i, i + ABLATION_BATCH);
    const res = await model.session.forward({ ids: chunk.map(() => ids.slice(-1)), past: prefix && repeatRows(prefix, chunk.length, stacked), edits: chunk, lastOnly: true });
    gaps.push(...readout(res.logits, chunk.length, 1, model.info.vocab, y, a).gap);
  }
  return gaps;
}

export async function layerOcclusion(model: LoadedModel, ids: number[], y: number, a: number, edits?: LayerEdits, signal?: AbortSignal): Promise<LayerOcclusion[]> {
  const L = model.info.layers;
  const r = await lastReadouts(model, ids, y, a, [[], ...Array.from({ length: L }, (_, l) => [{ example: 0, layer: l }])], edits, signal);
  return r.logp.slice(1).map((lp, layer) => ({ layer, effect: lp - r.logp[0] }));
}

/** Change of the gap y − a with each neuron ablated alone, in one batch. */
export async function ablationEffects(model: LoadedModel, ids: number[], y: number, a: number, neurons: { layer: number; neuron: number; added?: AddedNeuron }[], edits?: LayerEdits, signal?: AbortSignal): Promise<number[]> {
  if (!neurons.length) return [];
  // Existing neurons are scaled to 0; an added one is left out of its row's edits.
  const plain = neurons.filter((n) => !n.added);
  const r = await lastReadouts(model, ids, y, a, [[], ...plain.map((n) => [{ example: 0, layer: n.layer, neurons: [n.neuron] }])], edits, signal);
  const base = r.gap[0];
  const plainEffects = r.gap.slice(1).map((g) => g - base);
  const addedList = neurons.filter((n) => n.added);
  let addedEffects: number[] = [];
  if (addedList.length && edits) {
    const rows: LayerEdits[] = addedList.map((n) => Object.assign(new Map(edits), { added: edits.added?.filter((x) => x !== n.added) }));
    // The prefix runs with every added neuron (the shared edits); each row leaves its own out at the last position.
    addedEffects = (await lastReadoutsLeaving(model, ids, y, a, edits, rows)).map((g) => g - base);
  }
  let [i, j] = [0, 0];
  return neurons.map((n) => (n.added ? addedEffects[j++] : plainEffects[i++]));
}

export async function trace(model: LoadedModel, c: RepairCase, opts: TraceOptions = {}): Promise<TraceResult> {
  const started = performance.now();
  const target = repairTarget(model, c.prompt, c.desired, c.lineEnd ?? true);
  const completion = opts.known?.completion !== undefined ? { completion: opts.known.completion } : (await generate(model, [c.prompt], { edits: opts.edits, signal: opts.signal }))[0];
  const all = [...Array(model.info.layers).keys()];
  const given = opts.known?.forced;
  const f = given && given.residual && given.activations.size === all.length ? given : await teacherForce(model, target, opts.edits, all, true);
  const failingStates = f.states.filter((s) => s.failing);
  const failing = failingStates.map((s) => describePosition(model, target, s, f.logits, 0));
  if (!failingStates.length) {
    return { prompt: c.prompt, desired: c.desired, completion: completion.completion, failing, at: null, ms: performance.now() - started, notice: target.prepared.notice };
  }
  const at: PositionState = failingStates[0];
  const pos = target.first + at.index;
  const d = model.info.width;
  const cvec = contrast(model, row(f.residual!, pos, d), at.desired, at.argmax);
  const scores = [...attributions(model, f, pos, cvec), ...(await addedAttributions(model, target.input, pos, cvec, opts.edits))];
  const top = topK(scores.map((s) => Math.abs(s.attribution)), opts.top ?? 10).map((i) => scores[i]);
  const ids = target.input.slice(0, pos + 1);
  if (opts.signal?.aborted) throw new Error('cancelled');
  const layers = await layerOcclusion(model, ids, at.desired, at.argmax, opts.edits, opts.signal);
  const effects = await ablationEffects(model, ids, at.desired, at.argmax, top, opts.edits, opts.signal);
  const lenses = await logitLenses(model, top.map((s) => (s.added ? s.added.value : model.weights.valueVector(s.layer, s.neuron, d))));
  const neurons: NeuronReport[] = top.map(({ added, ...s }, i) => ({ ...s, ablationEffect: effects[i], ...lenses[i], ...(added ? { added: true as const } : {}) }));
  return {
    prompt: c.prompt, desired: c.desired, completion: completion.completion, failing,
    at: { position: failing[0], layers, neurons }, ms: performance.now() - started, notice: target.prepared.notice,
  };
}
