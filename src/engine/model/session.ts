// Runs the instrumented graph: a batched forward with ablations and patches, returning logits, the named
// activations and the KV cache. Types (int32/int64 ids, float16/float32 activations) follow the graph.
import * as ort from 'onnxruntime-node';
import { f16ToF32, f32ToF16 } from '../onnx/float16';
import { hooks, NeuronpatchError } from '../types';
import type { ModelGraph } from './graph';
import { interventionNames, LAST_LOGITS } from './instrument';

/** Per-layer patch edits in the form the graph consumes: neuron indices and their value-vector deltas (K×d). */
export type LayerEdits = Map<number, { indices: number[]; deltas: Float32Array }>;

export interface Ablation {
  /** Batch row the ablation applies to. */
  example: number;
  layer: number;
  /** Neurons to scale; omitted: the whole layer. */
  neurons?: number[];
  /** Multiplier of the activation (0 = ablate). */
  scale?: number;
}

export interface KvCache {
  tensors: ort.Tensor[];
  /** Number of positions already in the cache. */
  length: number;
  batch: number;
}

export interface ForwardRequest {
  /** Token ids, [batch][seq]; rows of equal length (left-pad with any id and mask it out). */
  ids: number[][];
  /** [batch][past + seq]; default: all ones. */
  mask?: number[][];
  positions?: number[][];
  past?: KvCache;
  ablations?: Ablation[];
  /** One set of edits for every example, or one per example (length = batch). */
  edits?: LayerEdits | LayerEdits[];
  /** Layers whose activation (`blocks.L.mlp.post`) to return. */
  activations?: number[];
  residual?: boolean;
  cache?: boolean;
  /** Only the last position's logits (decoding). */
  lastOnly?: boolean;
}

export interface ForwardResult {
  batch: number;
  seq: number;
  /** [batch, logitPositions, vocab]. */
  logits: Float32Array;
  /** seq, or 1 with `lastOnly`. */
  logitPositions: number;
  /** `blocks.L.mlp.post`, [batch, seq, m] each. */
  activations: Map<number, Float32Array>;
  /** `final.resid`, [batch, seq, d]. */
  residual?: Float32Array;
  cache?: KvCache;
}

export interface Shape {
  layers: number;
  neurons: number;
  width: number;
  vocab: number;
}

export class InstrumentedSession {
  private readonly floatType: 'float32' | 'float16';

  constructor(
    private readonly session: ort.InferenceSession,
    readonly graph: ModelGraph,
    readonly shape: Shape,
  ) {
    this.floatType = graph.floatType;
  }

  static async create(file: string, graph: ModelGraph, shape: Shape, threads?: number): Promise<InstrumentedSession> {
    const session = await ort.InferenceSession.create(file, {
      graphOptimizationLevel: 'all',
      intraOpNumThreads: threads ?? Number(process.env.NEURONPATCH_THREADS ?? 0),
      executionMode: 'sequential',
    });
    return new InstrumentedSession(session, graph, shape);
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private floats(data: Float32Array, dims: number[]): ort.Tensor {
    return this.floatType === 'float16' ? new ort.Tensor('float16', f32ToF16(data), dims) : new ort.Tensor('float32', data, dims);
  }

  private toF32(t: ort.Tensor): Float32Array {
    if (t.type === 'float16') return f16ToF32(t.data as Uint16Array);
    return t.data as Float32Array;
  }

  private indexTensor(rows: number[][]): ort.Tensor {
    const b = rows.length;
    const n = rows[0]?.length ?? 0;
    if (this.graph.indexType === 'int32') {
      const a = new Int32Array(b * n);
      rows.forEach((r, i) => a.set(r, i * n));
      return new ort.Tensor('int32', a, [b, n]);
    }
    const a = new BigInt64Array(b * n);
    rows.forEach((r, i) => r.forEach((v, j) => (a[i * n + j] = BigInt(v))));
    return new ort.Tensor('int64', a, [b, n]);
  }

  // Decoding feeds the same interventions at every step: the tensors are kept while the edits object lives.
  private readonly neutral = new Map<number, Record<string, ort.Tensor>>();
  private readonly byEdits = new WeakMap<object, Map<number, Record<string, ort.Tensor>>>();

  private interventionFeeds(b: number, scales: Map<number, Float32Array>, edits: LayerEdits | LayerEdits[] | undefined): Record<string, ort.Tensor> {
    const cacheable = scales.size === 0;
    const memo = !cacheable ? undefined : edits ? this.byEdits.get(edits) ?? new Map<number, Record<string, ort.Tensor>>() : this.neutral;
    const hit = memo?.get(b);
    if (hit) return hit;
    const { shape } = this;
    const feeds: Record<string, ort.Tensor> = {};
    for (let L = 0; L < shape.layers; L++) {
      feeds[interventionNames.scale(L)] = this.floats(scales.get(L) ?? ones(b * shape.neurons), [b, 1, shape.neurons]);
      const [index, delta, rows] = Array.isArray(edits)
        ? gatherEdits(edits.map((e) => e.get(L)), shape.width)
        : gatherEdits([edits?.get(L)], shape.width);
      feeds[interventionNames.patchIndex(L)] = new ort.Tensor('int64', BigInt64Array.from(index, BigInt), [index.length]);
      feeds[interventionNames.patchDelta(L)] = this.floats(delta, [rows, index.length, shape.width]);
    }
    if (memo) {
      memo.set(b, feeds);
      if (edits) this.byEdits.set(edits, memo);
    }
    return feeds;
  }

  emptyCache(batch: number): KvCache {
    const { heads, headDim, cache } = this.graph;
    const empty = () => this.floats(new Float32Array(0), cache.kind === 'stacked' ? [2, batch, heads, 0, headDim] : [batch, heads, 0, headDim]);
    const count = cache.kind === 'pairs' ? cache.inputs.length * 2 : cache.inputs.length;
    return { tensors: Array.from({ length: count }, empty), length: 0, batch };
  }

  async forward(req: ForwardRequest): Promise<ForwardResult> {
    const b = req.ids.length;
    const t = req.ids[0]?.length ?? 0;
    if (!b || !t || req.ids.some((r) => r.length !== t)) throw new NeuronpatchError('forward: ids must be a non-empty rectangle.');
    for (const row of req.ids) {
      for (const id of row) {
        if (!Number.isInteger(id) || id < 0 || id >= this.shape.vocab) {
          throw new NeuronpatchError(
            `Token id ${id} is outside the model's vocabulary of ${this.shape.vocab} tokens.`,
            'The tokenizer does not match this model: use the tokenizer.json exported with it.',
          );
        }
      }
    }
    const past = req.past ?? this.emptyCache(b);
    if (past.batch !== b) throw new NeuronpatchError(`forward: cache batch ${past.batch} ≠ ids batch ${b}.`);
    const total = past.length + t;
    const mask = req.mask ?? Array.from({ length: b }, () => new Array<number>(total).fill(1));
    const positions = req.positions ?? mask.map((row) => positionsFromMask(row).slice(past.length));

    const { graph, shape } = this;
    const feeds: Record<string, ort.Tensor> = { [graph.inputs.ids]: this.indexTensor(req.ids) };
    if (graph.inputs.mask) feeds[graph.inputs.mask] = this.indexTensor(mask);
    if (graph.inputs.positions) feeds[graph.inputs.positions] = this.indexTensor(positions);
    const cacheInputs = graph.cache.kind === 'pairs' ? graph.cache.inputs.flatMap((p) => [p.key, p.value]) : graph.cache.inputs;
    cacheInputs.forEach((name, i) => (feeds[name] = past.tensors[i]));

    const scales = new Map<number, Float32Array>();
    for (const a of req.ablations ?? []) {
      if (a.layer < 0 || a.layer >= shape.layers || a.example < 0 || a.example >= b) {
        throw new NeuronpatchError(`Ablation out of range: layer ${a.layer}, example ${a.example}.`);
      }
      let s = scales.get(a.layer);
      if (!s) scales.set(a.layer, (s = new Float32Array(b * shape.neurons).fill(1)));
      const row = a.example * shape.neurons;
      for (const j of a.neurons ?? range(shape.neurons)) {
        if (!Number.isInteger(j) || j < 0 || j >= shape.neurons) throw new NeuronpatchError(`Ablation of neuron ${j} in layer ${a.layer}: layers have ${shape.neurons} neurons.`);
        s[row + j] = a.scale ?? 0;
      }
    }
    const perExample = Array.isArray(req.edits) ? req.edits : undefined;
    if (perExample && perExample.length !== b) throw new NeuronpatchError(`forward: ${perExample.length} edit sets for ${b} examples.`);
    for (const set of perExample ?? (req.edits ? [req.edits as LayerEdits] : [])) checkEdits(set, shape);
    Object.assign(feeds, this.interventionFeeds(b, scales, perExample ?? (req.edits as LayerEdits | undefined)));

    const cacheOutputs = graph.cache.kind === 'pairs' ? graph.cache.outputs.flatMap((p) => [p.key, p.value]) : graph.cache.outputs;
    const logitsName = req.lastOnly ? LAST_LOGITS : graph.logits;
    const fetches = [logitsName, ...(req.activations ?? []).map((L) => hooks.mlpPost(L))];
    if (req.residual) fetches.push(hooks.finalResid);
    if (req.cache) fetches.push(...cacheOutputs);
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds, fetches);
    } catch (e) {
      throw new NeuronpatchError(`onnxruntime failed to run the model: ${(e as Error).message}`);
    }
    const activations = new Map<number, Float32Array>();
    for (const L of req.activations ?? []) activations.set(L, this.toF32(out[hooks.mlpPost(L)]));
    return {
      batch: b, seq: t,
      logits: this.toF32(out[logitsName]),
      logitPositions: req.lastOnly ? 1 : t,
      activations,
      residual: req.residual ? this.toF32(out[hooks.finalResid]) : undefined,
      cache: req.cache ? { tensors: cacheOutputs.map((n) => out[n]), length: total, batch: b } : undefined,
    };
  }
}

/** Edits must name layers and neurons the model has, with one delta of the residual width per neuron. */
function checkEdits(edits: LayerEdits, shape: Shape): void {
  for (const [layer, e] of edits) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= shape.layers) throw new NeuronpatchError(`An edit names layer ${layer}; the model has ${shape.layers} layers.`);
    for (const j of e.indices) {
      if (!Number.isInteger(j) || j < 0 || j >= shape.neurons) throw new NeuronpatchError(`An edit names neuron ${j} of layer ${layer}; layers have ${shape.neurons} neurons.`);
    }
    if (e.deltas.length !== e.indices.length * shape.width) {
      throw new NeuronpatchError(`Layer ${layer}'s edit deltas hold ${e.deltas.length} numbers; ${e.indices.length} neuron(s) × width ${shape.width} expected.`);
    }
  }
}

/** Rows of token ids left-padded to one width, with the mask that hides the padding (pad id: `pad`, or the row's first). */
export function leftPad(rows: number[][], pad?: number): { ids: number[][]; mask: number[][]; width: number } {
  const width = Math.max(...rows.map((r) => r.length));
  return {
    width,
    ids: rows.map((r) => [...new Array<number>(width - r.length).fill(pad ?? r[0]), ...r]),
    mask: rows.map((r) => [...new Array<number>(width - r.length).fill(0), ...r.map(() => 1)]),
  };
}

/** Positions for left-padded rows: count of real tokens before each slot (0 on padding). */
export function positionsFromMask(mask: number[]): number[] {
  let seen = 0;
  return mask.map((m) => (m ? seen++ : 0));
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function ones(n: number): Float32Array {
  return new Float32Array(n).fill(1);
}

/**
 * Union of the neurons edited in this layer across examples, and a [rows, K, d] delta block where each row holds
 * its own example's deltas (zeros elsewhere). With nothing edited, a single zero edit of neuron 0 keeps the
 * graph's shapes non-empty.
 */
function gatherEdits(sets: ({ indices: number[]; deltas: Float32Array } | undefined)[], d: number): [number[], Float32Array, number] {
  const union: number[] = [];
  const slot = new Map<number, number>();
  for (const s of sets) for (const j of s?.indices ?? []) if (!slot.has(j)) slot.set(j, union.push(j) - 1);
  if (!union.length) return [[0], new Float32Array(sets.length * d), sets.length];
  const k = union.length;
  const delta = new Float32Array(sets.length * k * d);
  sets.forEach((s, row) => {
    s?.indices.forEach((j, i) => {
      const at = (row * k + slot.get(j)!) * d;
      for (let c = 0; c < d; c++) delta[at + c] += s.deltas[i * d + c];
    });
  });
  return [union, delta, sets.length];
}
