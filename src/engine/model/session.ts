// Runs the instrumented graph: a batched forward with ablations and patches, returning logits, the named
// activations and the KV cache. Types (int32/int64 ids, float16/float32 activations) follow the graph.
import { AsyncLocalStorage } from 'node:async_hooks';
import { ort } from '../onnx/runtime';
import { f16ToF32, f32ToF16 } from '../onnx/float16';
import { hooks, NeuronpatchError } from '../types';
import { type ModelGraph, padsLeft, type ScalarInput } from './graph';
import { addedInputs, type AddedNeuron, mlpIn, packAdded } from './added';
import { interventionInputs, LAST_LOGITS, LAST_NORMALIZER } from './instrument';
import { cacheInputNames } from './recognise';

/**
 * Per-layer patch edits in the form the graph consumes: neuron indices and their value-vector deltas (K×d), and
 * the added (keyed) neurons, if any (added.ts).
 */
export type LayerEdits = Map<number, { indices: number[]; deltas: Float32Array }> & { added?: readonly AddedNeuron[] };

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
  /** Layers whose FFN input (`blocks.L.mlp.in`, x̂) to return: the space keys of added neurons read. */
  ffnInputs?: number[];
  residual?: boolean;
  cache?: boolean;
  /** Only the last position's logits (decoding). */
  lastOnly?: boolean;
  /** Only the logits of positions from this one on (teacher forcing reads those of the desired text). */
  logitsFrom?: number;
}

export interface ForwardResult {
  batch: number;
  seq: number;
  /** [batch, logitPositions, vocab]. */
  logits: Float32Array;
  /** Positions per row in `logits`: seq − logitsFrom, or 1 with `lastOnly`. */
  logitPositions: number;
  /** Sequence position of each row's first logits (seq − 1 with `lastOnly`). */
  logitsFrom: number;
  /** With `lastOnly`: log Σ exp of each row's logits, [batch], so that p(token) = exp(logit − logSumExp). */
  logSumExp?: Float64Array;
  /** `blocks.L.mlp.post`, [batch, seq, m] each. */
  activations: Map<number, Float32Array>;
  /** `blocks.L.mlp.in`, [batch, seq, d] each (asked with `ffnInputs`). */
  ffnInputs: Map<number, Float32Array>;
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

/** onnxruntime execution providers the engine can ask for; the CPU is always there. */
export const EXECUTION_PROVIDERS = ['cpu', 'cuda', 'dml', 'coreml', 'webgpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

/** A graph file, or a graph in memory whose external data lives in `externalDataFolder`. */
export type SessionModel = string | { bytes: Uint8Array; externalDataFolder: string };

export interface SessionOptions {
  threads?: number;
  executionProvider?: ExecutionProvider;
  /** Told why a provider was not used. */
  log?: (line: string) => void;
  /**
   * false: onnxruntime's intra-op threads sleep between parallel sections instead of spinning (default true, as
   * onnxruntime does). The engine process beside an editor sets it, so that idle spinning does not take
   * the cores the UI thread needs.
   */
  spinning?: boolean;
}

/**
 * onnxruntime session options for a model, with the provider asked for ahead of the CPU. Where this build of
 * onnxruntime-node does not ship the provider, the options name the CPU alone and `why` says what happened.
 */
export function sessionOptions(model: SessionModel, opts: SessionOptions = {}): { options: ort.InferenceSession.SessionOptions; why?: string } {
  const options: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads ?? Number(process.env.NEURONPATCH_THREADS ?? 0),
    executionMode: 'sequential',
  };
  const session: Record<string, unknown> = {};
  if (typeof model !== 'string') session.model_external_initializers_file_folder_path = model.externalDataFolder;
  if (opts.spinning === false) session.intra_op = { allow_spinning: '0' };
  if (Object.keys(session).length) options.extra = { session };
  const ep = opts.executionProvider ?? 'cpu';
  if (ep === 'cpu') return { options: { ...options, executionProviders: ['cpu'] } };
  const shipped = availableProviders();
  if (!shipped.includes(ep)) {
    return {
      options: { ...options, executionProviders: ['cpu'] },
      why: `The ${ep} execution provider is not available in this onnxruntime-node build on ${process.platform}-${process.arch} (it has: ${shipped.join(', ')}); running on the CPU.`,
    };
  }
  return { options: { ...options, executionProviders: [ep, 'cpu'] } };
}

/** Providers this onnxruntime-node build ships on this platform (always including 'cpu'). */
export function availableProviders(): ExecutionProvider[] {
  const listed = (ort as unknown as { listSupportedBackends?: () => { name: string; bundled: boolean }[] }).listSupportedBackends?.() ?? [];
  const names = new Set<string>(['cpu']);
  for (const b of listed) if (b.bundled) names.add(b.name);
  return EXECUTION_PROVIDERS.filter((p) => names.has(p));
}

/** Marks the forwards of interactive work (what the user waits on: a completion), across awaits. */
const interactiveWork = new AsyncLocalStorage<true>();

export class InstrumentedSession {
  /** Interactive calls in flight; while any is, other forwards wait their turn (see `interactive`). */
  private interactiveCount = 0;
  private quiet: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  /**
   * Whether the graph runs several new tokens on top of a KV cache (a prompt in pieces, a reused prefix): unknown
   * until tried, false once it failed (generate then runs prompts whole).
   */
  extendsPast: boolean | undefined;
  private readonly floatType: 'float32' | 'float16';
  /** Cache inputs and outputs in feed order: key, value per layer, or one stacked tensor. */
  private readonly cacheInputs: string[];
  private readonly cacheOutputs: string[];

  constructor(
    private readonly session: ort.InferenceSession,
    readonly graph: ModelGraph,
    readonly shape: Shape,
  ) {
    this.floatType = graph.floatType;
    const { cache } = graph;
    this.cacheInputs = cacheInputNames(cache);
    this.cacheOutputs = cache.kind === 'pairs' ? cache.outputs.flatMap((p) => [p.key, p.value]) : cache.outputs;
  }

  /**
   * Opens the instrumented graph. A provider this build lacks, or one that fails to start, falls back to the CPU
   * and says so through `opts.log`; errors of the CPU session itself are thrown.
   */
  static async create(model: SessionModel, graph: ModelGraph, shape: Shape, opts: SessionOptions = {}): Promise<InstrumentedSession> {
    const { options, why } = sessionOptions(model, opts);
    if (why) opts.log?.(why);
    const open = (o: ort.InferenceSession.SessionOptions) =>
      typeof model === 'string' ? ort.InferenceSession.create(model, o) : ort.InferenceSession.create(model.bytes, o);
    let session: ort.InferenceSession;
    try {
      session = await open(options);
    } catch (e) {
      if (!opts.executionProvider || opts.executionProvider === 'cpu' || why) throw e;
      opts.log?.(`The ${opts.executionProvider} execution provider failed to start (${(e as Error).message.slice(0, 300)}); running on the CPU.`);
      session = await open(sessionOptions(model, { ...opts, executionProvider: 'cpu' }).options);
    }
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

  /** [rows][n] integers (ids, mask, positions) as the graph's index type. */
  private indexTensor(rows: number[][]): ort.Tensor {
    const b = rows.length;
    const n = rows[0]?.length ?? 0;
    if (this.graph.indexType === 'int32') {
      const a = new Int32Array(b * n);
      rows.forEach((r, i) => a.set(r, i * n));
      return new ort.Tensor('int32', a, [b, n]);
    }
    return new ort.Tensor('int64', int64Rows(rows, n), [b, n]);
  }

  // Decoding feeds the same interventions at every step: the tensors are kept while the edits object lives.
  private readonly neutral = new Map<number, Record<string, ort.Tensor>>();
  private readonly byEdits = new WeakMap<object, Map<number, Record<string, ort.Tensor>>>();

  private interventionFeeds(b: number, scales: Map<number, Float32Array>, edits: LayerEdits | LayerEdits[] | undefined): Record<string, ort.Tensor> {
    const cacheable = scales.size === 0;
    const memo = !cacheable ? undefined : edits ? this.byEdits.get(edits) ?? new Map<number, Record<string, ort.Tensor>>() : this.neutral;
    const hit = memo?.get(b);
    if (hit) return hit;
    const { layers, neurons, width } = this.shape;
    const patch = packEdits(Array.isArray(edits) ? edits : [edits], layers, width);
    const sets = Array.isArray(edits) ? edits : [edits];
    const added = packAdded(sets.map((e) => e?.added), layers, width);
    const feeds: Record<string, ort.Tensor> = {
      [interventionInputs.scale]: this.floats(packScales(scales, b, layers, neurons), [b, 1, layers * neurons]),
      [interventionInputs.patchIndex]: new ort.Tensor('int64', patch.index, [patch.index.length]),
      [interventionInputs.patchDelta]: this.floats(patch.delta, [patch.rows, patch.index.length, width]),
      [addedInputs.key]: this.floats(added.key, [width, added.slots]),
      [addedInputs.threshold]: this.floats(added.threshold, [added.slots]),
      [addedInputs.value]: this.floats(added.value, [added.rows, added.slots, width]),
    };
    if (memo) {
      memo.set(b, feeds);
      if (edits) this.byEdits.set(edits, memo);
    }
    return feeds;
  }

  emptyCache(batch: number): KvCache {
    const { heads, headDim, cache } = this.graph;
    const dims = { stacked: [2, batch, heads, 0, headDim], pairs: [batch, heads, 0, headDim], fused: [batch, 0, headDim] }[cache.kind];
    const empty = () => this.floats(new Float32Array(0), dims);
    const count = cache.kind === 'pairs' ? cache.inputs.length * 2 : cache.inputs.length;
    return { tensors: Array.from({ length: count }, empty), length: 0, batch };
  }

  /**
   * Runs `fn` ahead of everything else on this session: while it is in flight, every forward that is not part of
   * it (a repair's tracing, solving, side-effect decoding) waits before its next run, so a completion asked for
   * during a repair waits for at most one forward of the repair instead of the whole repair.
   */
  async interactive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.interactiveCount++ === 0) this.quiet = new Promise((resolve) => (this.wake = resolve));
    try {
      return await interactiveWork.run(true, fn);
    } finally {
      if (--this.interactiveCount === 0) {
        this.wake?.();
        this.quiet = undefined;
      }
    }
  }

  async forward(req: ForwardRequest): Promise<ForwardResult> {
    while (this.quiet && !interactiveWork.getStore()) await this.quiet;
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
    if (!padsLeft(this.graph) && req.mask?.some(leftPadded)) {
      throw new NeuronpatchError(
        'forward: a left-padded row for a graph that cannot take one (no position_ids, or GroupQueryAttention): its positions would count the padding.',
        'Pad such rows on the right (padRows) or batch rows of equal length only.',
      );
    }

    const { graph, shape } = this;
    const feeds: Record<string, ort.Tensor> = { [graph.inputs.ids]: this.indexTensor(req.ids) };
    if (graph.inputs.mask) feeds[graph.inputs.mask] = this.indexTensor(mask);
    if (graph.inputs.positions) feeds[graph.inputs.positions] = this.indexTensor(req.positions ?? mask.map((row) => positionsAfter(row, past.length)));
    this.cacheInputs.forEach((name, i) => (feeds[name] = past.tensors[i]));
    const from = req.lastOnly ? t - 1 : Math.min(Math.max(0, req.logitsFrom ?? 0), t - 1);
    if (graph.logitPositions) feeds[graph.logitPositions] = req.lastOnly ? LAST_POSITION : sequencePositions(from, t);
    // num_logits_to_keep: the last position when decoding, else all (0), gathered from by logitPositions.
    for (const sc of graph.scalars ?? []) feeds[sc.name] = scalarTensor(sc, req.lastOnly ? 1 : 0);

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
    for (const set of perExample ?? (req.edits ? [req.edits as LayerEdits] : [])) checkEdits(set, shape, graph.keyedLayers ?? []);
    Object.assign(feeds, this.interventionFeeds(b, scales, perExample ?? (req.edits as LayerEdits | undefined)));

    const { cacheOutputs } = this;
    const logitsName = req.lastOnly ? LAST_LOGITS : graph.logits;
    for (const L of req.ffnInputs ?? []) {
      if (!graph.keyedLayers?.includes(L)) throw new NeuronpatchError(`Layer ${L}'s FFN input is not exposed by this model's instrumented graph (no added neurons there).`);
    }
    const fetches = [logitsName, ...(req.activations ?? []).map((L) => hooks.mlpPost(L)), ...(req.ffnInputs ?? []).map(mlpIn)];
    if (req.lastOnly) fetches.push(LAST_NORMALIZER);
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
    const ffnInputs = new Map<number, Float32Array>();
    for (const L of req.ffnInputs ?? []) ffnInputs.set(L, this.toF32(out[mlpIn(L)]));
    let logits = this.toF32(out[logitsName]);
    // A graph whose lm_head could not be found computes every position: keep the ones asked for.
    if (!req.lastOnly && from > 0 && !graph.logitPositions) logits = laterPositions(logits, b, t, from, shape.vocab);
    const bad = nonFinite(logits, mask, past.length + from, shape.vocab);
    if (bad) throw new NonFiniteLogits(bad, logits.length, !!(req.edits || req.ablations?.length));
    return {
      batch: b, seq: t,
      logits,
      logitPositions: req.lastOnly ? 1 : t - from,
      logitsFrom: from,
      logSumExp: req.lastOnly ? logSumExps(out[LAST_NORMALIZER].data as Float32Array) : undefined,
      activations,
      ffnInputs,
      residual: req.residual ? this.toF32(out[hooks.finalResid]) : undefined,
      cache: req.cache ? { tensors: cacheOutputs.map((n) => out[n]), length: total, batch: b } : undefined,
    };
  }
}

/** Edits must name layers and neurons the model has, with one delta of the residual width per neuron. */
function checkEdits(edits: LayerEdits, shape: Shape, keyedLayers: number[]): void {
  for (const a of edits.added ?? []) {
    if (!keyedLayers.includes(a.layer)) throw new NeuronpatchError(`An added neuron is in layer ${a.layer}, which takes none in this model (layers ${keyedLayers.join(', ') || 'none'} do).`);
    if (a.key.length !== shape.width || a.value.length !== shape.width || !Number.isFinite(a.threshold)) {
      throw new NeuronpatchError(`An added neuron of layer ${a.layer} needs a key and a value of ${shape.width} numbers and a finite threshold.`);
    }
  }
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

/**
 * Rows of token ids padded to one width for a single forward (no decoding continues it): on the left where the
 * graph takes per-row positions, on the right where it does not (`position_ids` absent: the graph numbers every
 * row's slots from 0, so left padding would shift the real tokens' positions; GroupQueryAttention: its seqlens_k
 * puts each row's tokens first). On the right, causal attention keeps the padding out of the real tokens. `start[b]` is the slot of row b's first real token.
 */
export function padRows(graph: ModelGraph, rows: number[][], pad?: number): { ids: number[][]; mask: number[][]; width: number; start: number[] } {
  if (padsLeft(graph)) {
    const p = leftPad(rows, pad);
    return { ...p, start: rows.map((r) => p.width - r.length) };
  }
  const width = Math.max(...rows.map((r) => r.length));
  return {
    width,
    ids: rows.map((r) => [...r, ...new Array<number>(width - r.length).fill(pad ?? r[r.length - 1])]),
    mask: rows.map((r) => [...r.map(() => 1), ...new Array<number>(width - r.length).fill(0)]),
    start: rows.map(() => 0),
  };
}

/** A mask row with padding before a real token. */
function leftPadded(mask: number[]): boolean {
  const first = mask.indexOf(1);
  return first > 0;
}

/**
 * Count of NaN and ±Infinity values among the logits of real tokens: [batch, P, V] logits whose first position is
 * mask slot `at` (padding may legitimately attend to nothing).
 */
function nonFinite(logits: Float32Array, mask: number[][], at: number, V: number): number {
  let n = 0;
  const P = logits.length / (mask.length * V);
  mask.forEach((row, b) => {
    for (let p = 0; p < P; p++) {
      if (!row[at + p]) continue;
      const off = (b * P + p) * V;
      for (let i = off; i < off + V; i++) if (!Number.isFinite(logits[i])) n++;
    }
  });
  return n;
}

/**
 * The model's logits hold NaN or ±Infinity: in fp16 graphs, an overflow of the activations (the usual failure of
 * fp16 builds of large models); with edits or ablations applied, possibly those.
 */
export class NonFiniteLogits extends NeuronpatchError {
  constructor(readonly count: number, readonly total: number, readonly intervened: boolean) {
    super(
      `The model's logits are not finite: ${count} of ${total} values are NaN or ±Infinity${intervened ? ' with the patch edits or ablations applied' : ''}.`,
      intervened
        ? 'The edits are too large for the model\'s float range; check the patch file or repair with a smaller margin.'
        : 'The graph overflows its float range (an fp16 build of a large model does this): use an fp32 export, or fp16 weights with fp32 activations (mixed precision).',
    );
    this.name = 'NonFiniteLogits';
  }
}

function scalarTensor(sc: ScalarInput, value: number): ort.Tensor {
  const dims = sc.rank === 0 ? [] : [1];
  return sc.type === 'int32' ? new ort.Tensor('int32', Int32Array.of(value), dims) : new ort.Tensor('int64', BigInt64Array.of(BigInt(value)), dims);
}

/**
 * Positions of the slots after the first `past` (the cached ones) of a left-padded row: the count of real tokens
 * before each slot, 0 on padding.
 */
function positionsAfter(mask: number[], past: number): number[] {
  let seen = 0;
  for (let i = 0; i < past; i++) if (mask[i]) seen++;
  const out = new Array<number>(mask.length - past);
  for (let i = past; i < mask.length; i++) out[i - past] = mask[i] ? seen++ : 0;
  return out;
}

/** The lm_head's positions: the last one only (decoding), or from..t−1. */
const LAST_POSITION = new ort.Tensor('int64', BigInt64Array.of(-1n), [1]);

function sequencePositions(from: number, t: number): ort.Tensor {
  return new ort.Tensor('int64', int64Rows([range(t - from).map((i) => i + from)], t - from), [t - from]);
}

/** Positions from..t−1 of [b, t, V] logits. */
function laterPositions(logits: Float32Array, b: number, t: number, from: number, V: number): Float32Array {
  const out = new Float32Array(b * (t - from) * V);
  for (let r = 0; r < b; r++) out.set(logits.subarray((r * t + from) * V, (r + 1) * t * V), r * (t - from) * V);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * [rows][n] integers as int64 data. Ids, masks and positions fit in 32 bits: on little-endian hosts each is
 * written as its two 32-bit halves, sparing a BigInt per element on every decoding step.
 */
function int64Rows(rows: number[][], n: number): BigInt64Array {
  const out = new BigInt64Array(rows.length * n);
  if (!LITTLE_ENDIAN) {
    rows.forEach((r, i) => r.forEach((v, j) => (out[i * n + j] = BigInt(v))));
    return out;
  }
  const halves = new Int32Array(out.buffer);
  rows.forEach((r, i) => {
    for (let j = 0, at = 2 * i * n; j < n; j++, at += 2) {
      const v = r[j];
      if (v !== (v | 0)) throw new NeuronpatchError(`forward: ${v} is not a 32-bit integer.`);
      halves[at] = v;
      halves[at + 1] = v < 0 ? -1 : 0;
    }
  });
  return out;
}

/** log Σ exp per row from the graph's [max, log-softmax at the max] pairs. */
function logSumExps(normalizer: Float32Array): Float64Array {
  const out = new Float64Array(normalizer.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = normalizer[2 * i] - normalizer[2 * i + 1];
  return out;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Per-layer [b, m] scales (absent: 1) packed as the graph's [b, 1, layers · m] input, layer after layer in each row. */
function packScales(scales: Map<number, Float32Array>, b: number, layers: number, m: number): Float32Array {
  const packed = new Float32Array(b * layers * m).fill(1);
  for (const [L, s] of scales) for (let r = 0; r < b; r++) packed.set(s.subarray(r * m, (r + 1) * m), (r * layers + L) * m);
  return packed;
}

/**
 * The patch inputs: per layer, the union of the neurons edited across examples, padded to the same K in every
 * layer with zero edits of neuron 0 (K ≥ 1 keeps the shapes non-empty); index [layers · K] and a
 * [rows, layers · K, d] delta block where each row holds its own example's deltas (zeros elsewhere).
 */
function packEdits(sets: (LayerEdits | undefined)[], layers: number, d: number): { index: BigInt64Array; delta: Float32Array; rows: number } {
  // Per layer, neuron → its slot in the union.
  const slots = range(layers).map((L) => {
    const slot = new Map<number, number>();
    for (const s of sets) for (const j of s?.get(L)?.indices ?? []) if (!slot.has(j)) slot.set(j, slot.size);
    return slot;
  });
  const k = Math.max(1, ...slots.map((u) => u.size));
  const rows = sets.length;
  const index = new BigInt64Array(layers * k);
  const delta = new Float32Array(rows * layers * k * d);
  slots.forEach((slot, L) => {
    for (const [j, i] of slot) index[L * k + i] = BigInt(j);
    sets.forEach((s, row) => {
      const e = s?.get(L);
      e?.indices.forEach((j, i) => {
        const at = (row * layers * k + L * k + slot.get(j)!) * d;
        for (let c = 0; c < d; c++) delta[at + c] += e.deltas[i * d + c];
      });
    });
  });
  return { index, delta, rows };
}
