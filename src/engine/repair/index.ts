// Repair a case: locate (trace), solve (minimal or joint) on top of the active patches, confirm by greedy
// generation, then measure side effects and generalization. Success is decided by generation, never by
// teacher forcing alone; a case that cannot be fixed is reported as not fixed.
import { generate } from '../generate';
import { dot, row } from '../linalg';
import type { LoadedModel } from '../model/load';
import { type LayerEdits, NonFiniteLogits } from '../model/session';
import { newPatchId, isoNow } from '../patches/id';
import { roundValue } from '../patches/format';
import { combine, patchSet, withAdded } from '../patches/patchset';
import { contrast, logitLenses } from '../trace/attribution';
import { ablationEffects, trace } from '../trace/index';
import { describePosition, repairTarget, teacherForce } from '../trace/teacher';
import { NeuronpatchError, type Patch, type RepairCase, type RepairConflict, type RepairMethod, type RepairResult, type TraceResult } from '../types';
import type { AddedNeuron } from '../model/added';
import { preparePrompt } from '../generate';
import { accumulate, assertFinite, type Edit, toNeuronEdits } from './edits';
import { solveJoint } from './joint';
import { earlierInputs, silentOn, silentPrefix } from './earlier';
import { PrefixCache } from '../prefix';
import { promptVariants } from './augment';
import { DEFAULT_KEY_MARGIN, keyedCandidates, needsReferenceCode, solveKeyed } from './keyed';
import { protectedCode } from './keyedCache';
import { type GuardLine, guardTarget, measureSideEffects, type SideEffectMeasures } from './measures';
import { Cancelled, type SolveContext, solveMinimal } from './minimal';
import { referenceStats } from './reference';
import { Steer } from './steer';
import { completions, generalization, type GreedyLine } from './verify';

export interface RepairOptions {
  method?: RepairMethod;
  /** Prompts whose completions must not change (specificity); also the default reference code. */
  regression?: string[];
  /** Code whose activations tell which neurons are quiet elsewhere; default: the regression prompts. */
  reference?: string[];
  /** Greedy lines of the regression prompts with the active patches, when the caller has them. */
  regressionBefore?: GreedyLine[];
  /**
   * Lines the model already completes exactly right (the user's accepted completions, lines harvested from
   * reference code): the keyed method keeps its neurons silent on them, and every method is checked against them.
   */
  guard?: GuardLine[];
  /** Lines the model completes right that the repair is not given: measured only (correct lines kept, unseen). */
  unseenGuard?: GuardLine[];
  /** Code whose next-token loss is compared before and after (default: the regression prompts). */
  heldOut?: string[];
  /**
   * Keyed method: where the threshold sits between the largest response on protected code (0) and the failing
   * context's (1); default 0.5. Higher: silent on more contexts (locality), fires on fewer variants (generalization).
   */
  keyMargin?: number;
  /**
   * Keyed method: how many automatically made variants of the prompt (earlier lines dropped or thinned, names
   * changed; augment.ts) the keys are made to fire on too, so that they key on the recent code the line follows
   * rather than on the whole file. 0: the failing context alone. Default DEFAULT_KEY_VARIANTS.
   */
  keyVariants?: number;
  /** Keyed method: the layer of the added neurons (default: chosen by measurement, late layers first). */
  keyedLayer?: number;
  /** Enabled patches: the new one is solved on top of them. */
  active?: Patch[];
  /**
   * Logits by which each desired token must win (default 2). A smaller margin makes smaller patches: less of the
   * model's other behaviour changes, and fewer variants of the case are fixed along with it.
   */
  margin?: number;
  /** Neuron budget of the method asked for (a fallback to the joint solver keeps its own). */
  maxNeurons?: number;
  /** When the minimal solver cannot fix the case within its budget, solve it jointly instead. Default true. */
  fallback?: boolean;
  /** Token budget of the before/after generations (the caller's completion length). */
  maxNewTokens?: number;
  /** Run the full trace (occlusion, causal checks, logit lens) for the report; eval turns it off. Default true. */
  analyse?: boolean;
  signal?: AbortSignal;
  onProgress?: (line: string) => void;
  /** The side-effect check's items checked of all (regression prompts, guard lines, held-out texts), per batch. */
  onSideEffectProgress?: (done: number, total: number) => void;
}

export { Cancelled };

export const DEFAULT_MARGIN = 2;
/** Prompt variants a keyed repair keys on by default (RepairOptions.keyVariants). */
export const DEFAULT_KEY_VARIANTS = 0;
export const MAX_MARGIN = 10;

/** The margin asked for, or the default; a clear error where it is out of range. */
export function checkMargin(asked?: number): number {
  const margin = asked ?? DEFAULT_MARGIN;
  if (!(margin > 0 && margin <= MAX_MARGIN)) {
    throw new NeuronpatchError(`The repair margin must be a number of logits above 0 and at most ${MAX_MARGIN}, got ${margin}.`, `Leave it at ${DEFAULT_MARGIN} unless you are trading side effects against generalization.`);
  }
  return margin;
}

/** The key margin asked for, or the default; a clear error where it is out of range. */
export function checkKeyMargin(asked?: number): number {
  const m = asked ?? DEFAULT_KEY_MARGIN;
  if (!(m > 0 && m < 1)) {
    throw new NeuronpatchError(`The key margin must be a number between 0 and 1 (exclusive), got ${m}.`, `It places the threshold between the largest response on protected code (0) and the failing context (1); ${DEFAULT_KEY_MARGIN} is the default.`);
  }
  return m;
}

export async function repair(model: LoadedModel, c: RepairCase, opts: RepairOptions = {}): Promise<RepairResult> {
  const method = opts.method ?? 'minimal';
  const margin = checkMargin(opts.margin);
  if (method === 'keyed') checkKeyMargin(opts.keyMargin);
  const active = opts.active ?? [];
  const d = model.info.width;
  const base = active.length ? patchSet(active, d) : undefined;
  const progress = opts.onProgress ?? (() => undefined);

  progress('generating the current completion');
  // Its prompt's KV cache is kept: a keyed patch whose neurons are silent on the prompt confirms on top of it.
  const prefix = new PrefixCache();
  const [beforeGen] = await generate(model, [c.prompt], { edits: base, signal: opts.signal, maxNewTokens: opts.maxNewTokens, prefix });
  const generationMs = beforeGen.ms;
  const target = repairTarget(model, c.prompt, c.desired, c.lineEnd ?? true);
  const desired = c.desired.replace(/\r\n/g, '\n').replace(/\n$/, '');
  const produces = (completion: string) => (c.lineEnd ?? true ? completion === desired : completion.startsWith(desired));
  if (produces(beforeGen.completion)) {
    throw new NeuronpatchError('The model already completes this prompt with the desired text: there is nothing to repair.');
  }

  const all = [...Array(model.info.layers).keys()];
  // Keyed: the same forward reads x̂ at the candidate layers (the keys' contexts).
  const keyedAt = method === 'keyed' ? (opts.keyedLayer !== undefined ? [opts.keyedLayer] : keyedCandidates(model)).filter((L) => (model.graph.keyedLayers ?? []).includes(L)) : [];
  const f0 = await teacherForce(model, target, base, all, true, keyedAt);
  const failing0 = f0.states.filter((s) => s.failing);
  progress('tracing the neurons behind the completion');
  const traced: TraceResult = opts.analyse === false
    ? { prompt: c.prompt, desired: c.desired, completion: beforeGen.completion, at: null, ms: 0,
      failing: failing0.map((s) => describePosition(model, target, s, f0.logits, 0)) }
    : await trace(model, c, { edits: base, signal: opts.signal, known: { completion: beforeGen.completion, forced: f0 } });

  // Per-model caches (computed on the first repair, then read from disk).
  progress(`reading the model's statistics on reference code${method === 'keyed' ? ' and the protected code' : ''}`);
  const steer = await Steer.load(model);
  const reference = opts.reference ?? opts.regression ?? [c.prompt];
  // The neurons' second moments on reference code weigh the minimal and joint solvers' edits; the keyed method
  // never reads them (its protected code's x̂ and whitening below are its statistics), and has no fallback to them.
  const ref = method === 'keyed' ? undefined : await referenceStats(model, reference.length ? reference : [c.prompt], opts.signal);
  // Keyed: x̂ of the protected code (reference, guard lines, earlier patches' cases), like the statistics above.
  const protection = method === 'keyed' ? await keyedProtection(model, active, base, reference, opts) : undefined;
  // The repair's own time: locate and solve, then confirm by generation. The trace above is the report's.
  const started = performance.now();
  progress(`solving (${method}) for ${Math.max(1, failing0.length)} failing token(s)`);
  const common = (m: RepairMethod): CommonContext => ({
    model, target, base, active, steer, start: f0, margin,
    maxNeurons: (m === method ? opts.maxNeurons : undefined) ?? (m === 'keyed' ? target.targets.length : m === 'minimal' ? Math.min(48, 3 * Math.max(1, failing0.length) + 2) : Math.min(256, 8 * Math.max(1, target.targets.length))),
    maxRounds: m === 'minimal' ? 3 * Math.max(1, failing0.length) + 6 : 10,
    signal: opts.signal, log: progress,
  });
  const context = (m: RepairMethod): SolveContext => ({ ...common(m), ref: ref ?? missingStats() });
  let ctx: CommonContext = common(method);
  let keyed: { added: AddedNeuron[]; why: string; layer: number; inputs?: Float32Array } | undefined;
  if (method === 'keyed') {
    const variants = promptVariants(c.prompt, desired, opts.keyVariants ?? DEFAULT_KEY_VARIANTS).flatMap((p) => {
      try {
        return [repairTarget(model, p, desired, c.lineEnd ?? true)];
      } catch {
        return [];
      }
    });
    const k = await diverges(method, () => solveKeyed(ctx, { ...protection!, keyMargin: opts.keyMargin ?? DEFAULT_KEY_MARGIN, layer: opts.keyedLayer, variants }));
    keyed = { added: k.added, why: k.why, layer: k.layer, inputs: k.inputs };
    progress(k.why);
  }
  let solved = method === 'keyed' ? { edits: [] as Edit[], rounds: 0, failing: 0 }
    : await diverges(method, () => (method === 'minimal' ? solveMinimal(context(method)) : solveJoint(context(method))));
  let solvedBy = method;
  let fallback: string | undefined;
  // Long completions can leave the greedy search trading positions until its budget is spent; the joint solve,
  // which weighs every failing position at once, then starts afresh from the unpatched state.
  if (method === 'minimal' && solved.failing > 0 && opts.fallback !== false) {
    fallback = `The minimal solver left ${solved.failing} of ${failing0.length} failing tokens unfixed within its budget `
      + `(${plural(solved.edits.length, 'neuron')}, ${plural(solved.rounds, 'round')}); the patch comes from the joint solver.`;
    progress(fallback);
    const joint = context('joint');
    ctx = joint;
    solved = await diverges('joint', () => solveJoint(joint));
    solvedBy = 'joint';
  }
  // Added neurons are silent on earlier cases by construction (their sequences are protected code).
  const held = keyed ? { edits: solved.edits } : await holdEarlierFixes({ ...ctx, ref: ref ?? missingStats() }, solved.edits, { prompt: c.prompt, desired }, produces, progress);
  // Confirmed exactly as the patch file will store it (deltas rounded to its precision).
  const edits = prune(held.edits, solvedBy, solved.rounds).map((e) => ({ ...e, delta: Float64Array.from(e.delta, roundValue) }));
  const added = (keyed?.added ?? []).map((a) => ({ layer: a.layer, key: Array.from(a.key, roundValue), threshold: roundValue(a.threshold), value: Array.from(a.value, roundValue) }));
  const patched = withAdded(combine(base, edits, d), added);

  progress('confirming by greedy generation');
  // Added neurons only (no value edit) exactly silent on the prompt's first positions leave their KV cache as it
  // was under the base: the confirming generation starts from the kept cache there (repair/earlier.ts).
  if (keyed?.inputs && !edits.length) prefix.reuseUnder(patched, target.input, silentPrefix(added, keyed.inputs, target.first, keyed.layer));
  else prefix.clear();
  const [afterGen] = await generate(model, [c.prompt], { edits: patched, signal: opts.signal, maxNewTokens: opts.maxNewTokens, prefix });
  // A patch that would break an earlier fix is no repair: success needs both.
  // Keyed: only the earlier cases a new neuron can reach are decoded again; on the others every new neuron is
  // exactly silent, so their completions are what they were (repair/earlier.ts).
  const reach = protection ? protection.extra.map((rows) => !added.every((a) => silentOn(a, rows))) : undefined;
  const conflicts = await brokenEarlierFixes(ctx, patched, reach);
  if (conflicts.length) progress(`the new patch breaks ${plural(conflicts.length, 'earlier fix', 'earlier fixes')}: not a successful repair`);
  const success = produces(afterGen.completion) && !conflicts.length;
  const ms = performance.now() - started;
  progress('analysing the patch for the report');

  const f1 = await teacherForce(model, target, patched);
  const positions = failing0.map((s) => {
    const b = describePosition(model, target, s, f0.logits, 0);
    const a = describePosition(model, target, f1.states[s.index], f1.logits, 0);
    return { index: s.index, text: b.desired.text, before: { prob: b.desired.prob, rank: b.desired.rank }, after: { prob: a.desired.prob, rank: a.desired.rank } };
  });

  // The edited neurons as the trace sees them at the first failing position.
  const first = failing0[0];
  const pos = first ? target.first + first.index : -1;
  const cvec = first ? contrast(model, row(f0.residual!, pos, d), first.desired, first.argmax) : undefined;
  // Ablating each edited neuron is for the report; eval (analyse: false) has no use for it.
  const analysed = first && opts.analyse !== false;
  const effects = analysed ? await ablationEffects(model, target.input.slice(0, pos + 1), first.desired, first.argmax, edits, base) : [];
  const vectors = edits.map((e) => model.weights.valueVector(e.layer, e.neuron, d));
  // One pass over the unembedding for every lens: each edited neuron before and after, each added neuron.
  const lenses = await logitLenses(model, [
    ...vectors, ...edits.map((e, i) => Float64Array.from(vectors[i], (x, k) => x + e.delta[k])), ...added.map((a) => a.value),
  ]);
  // x̂ of the case under the base at the added neurons' layer: the keyed solve's own (no forward), else computed.
  const f0Inputs = !added.length || !first ? undefined
    : keyed?.inputs && added.every((a) => a.layer === keyed!.layer) ? new Map([[keyed.layer, keyed.inputs]])
      : (await model.session.forward({ ids: [target.input], edits: base, ffnInputs: [...new Set(added.map((a) => a.layer))], lastOnly: true })).ffnInputs;
  const firstAdded = (base?.added?.filter((a) => a.layer === added[0]?.layer).length ?? 0);
  // Each added neuron left out of the patched model, one row each: the report's ablation effect.
  const addedEffects = analysed && added.length
    ? await ablationEffects(model, target.input.slice(0, pos + 1), first.desired, first.argmax, patched.added!.slice(-added.length).map((a, i) => ({ layer: a.layer, neuron: i, added: a })), patched)
    : [];
  const addedNeurons = added.map((a, i) => {
    const x = first ? f0Inputs?.get(a.layer) : undefined;
    const act = x ? addedActivationAt(a, x, pos, d) : 0;
    return {
      layer: a.layer, neuron: model.info.neurons + firstAdded + i, added: true as const,
      attribution: cvec ? act * dot(Float64Array.from(a.value), cvec) : null,
      ablationEffect: analysed ? addedEffects[i] : null,
      activation: act,
      promotesBefore: [],
      promotesAfter: lenses[2 * edits.length + i].promotes,
    };
  });
  const neurons = edits.map((e, i) => {
    const v = vectors[i];
    const z = first ? f0.activations.get(e.layer)![pos * model.info.neurons + e.neuron] : 0;
    return {
      layer: e.layer, neuron: e.neuron,
      attribution: cvec ? z * dot(v, cvec) : null,
      ablationEffect: analysed ? effects[i] : null,
      promotesBefore: lenses[i].promotes,
      promotesAfter: lenses[edits.length + i].promotes,
    };
  });
  neurons.push(...addedNeurons);

  let specificity: number | null = null;
  let nextTokenSpecificity: number | null = null;
  let meanKl: number | null = null;
  let changed: RepairResult['changed'] = [];
  let measures: SideEffectMeasures | undefined;
  if (opts.regression?.length || opts.guard?.length) {
    progress(`measuring side effects on ${opts.regression?.length ?? 0} regression prompts and ${opts.guard?.length ?? 0} guard lines`);
    measures = await measureSideEffects(model, {
      prompts: opts.regression ?? [], before: opts.regressionBefore, guard: opts.guard, heldOut: opts.heldOut ?? opts.regression ?? [],
      unseenGuard: opts.unseenGuard, onProgress: opts.onSideEffectProgress,
      ...(protection ? { known: { sequences: protection.sequences, rows: protection.protect } } : {}),
    }, base, patched, opts.signal);
    ({ linesUnchanged: specificity, nextToken: nextTokenSpecificity, meanKl, changed } = measures);
  }
  const gen = c.variants?.length ? await generalization(model, c.variants, patched, opts.signal) : null;

  const patch: Patch = {
    id: newPatchId(), createdAt: isoNow(), enabled: true, method: solvedBy,
    case: { prompt: c.prompt, desired, before: beforeGen.completion, after: afterGen.completion },
    edits: toNeuronEdits(edits),
    ...(added.length ? { added } : {}),
    metrics: {
      success, failingTokens: failing0.length, specificity, meanKl, generalization: gen, repairMs: Math.round(ms), margin,
      ...(measures ? { tokenLocality: measures.tokenLocality, keptLines: measures.kept, heldOutLossChange: measures.lossChange } : {}),
      ...(keyed ? { keyMargin: opts.keyMargin ?? DEFAULT_KEY_MARGIN } : {}),
    },
  };
  return {
    success, method: solvedBy, before: beforeGen.completion, after: afterGen.completion, failingTokens: failing0.length, positions, neurons,
    patch, specificity, nextTokenSpecificity, meanKl, generalization: gen, changed, ms, generationMs, trace: traced,
    ...(measures ? { sideEffects: measures.summary } : {}),
    ...(keyed ? { layerChoice: keyed.why } : {}),
    ...(fallback ? { fallback } : {}),
    ...(conflicts.length ? { conflicts } : {}),
    ...(target.prepared.notice ? { notice: target.prepared.notice } : {}),
  };
}

/**
 * The keyed method's protected code: reference prompts and guard lines (cached per model), and the active
 * patches' cases under those patches (their own neurons fire there), with the whitening of the candidate layers
 * (the first two per model and reference set, cached: keyedCache.ts).
 */
async function keyedProtection(model: LoadedModel, active: readonly Patch[], base: LayerEdits | undefined, reference: string[], opts: RepairOptions) {
  const layers = opts.keyedLayer !== undefined ? [opts.keyedLayer] : keyedCandidates(model);
  if (opts.keyedLayer !== undefined && !(model.graph.keyedLayers ?? []).includes(opts.keyedLayer)) {
    throw new NeuronpatchError(`Layer ${opts.keyedLayer} takes no added neurons; layers ${(model.graph.keyedLayers ?? []).join(', ') || 'none'} do.`);
  }
  const sequences = [
    ...reference.map((p) => preparePrompt(model, p, 1, false).ids),
    ...(opts.guard ?? []).flatMap((g) => { const t = guardTarget(model, g); return t ? [t.input] : []; }),
  ];
  // Earlier patches' cases (below) are not counted: a handful of positions, not ordinary code the key must miss.
  if (!sequences.some((r) => r.length)) throw needsReferenceCode();
  // Per model and reference set: from memory, the verified derived cache, or computed (keyedCache.ts).
  const { protect } = await protectedCode(model, sequences, layers);
  const earlier = active.map((p) => repairTarget(model, p.case.prompt, p.case.desired).input);
  const extra = await earlierInputs(model, active, earlier, layers, base);
  return { protect, extra, sequences };
}

function addedActivationAt(a: { key: number[]; threshold: number }, x: Float32Array, pos: number, d: number): number {
  let s = -a.threshold;
  for (let c = 0; c < d; c++) s += a.key[c] * x[pos * d + c];
  return Math.max(0, s);
}

const plural = (n: number, what: string, many = `${what}s`) => `${n} ${n === 1 ? what : many}`;

const HOLD_PASSES = 4;

/**
 * Earlier fixes must hold: with the new edits on top of the active patches, every active patch's case is decoded
 * again, and a case that broke (or the new one, if a later correction broke it) is repaired once more inside the
 * new patch, for a bounded number of passes. Success is still decided by generation afterwards.
 */
async function holdEarlierFixes(
  ctx: SolveContext, edits: Edit[], current: { prompt: string; desired: string }, produces: (s: string) => boolean,
  progress: (line: string) => void,
): Promise<{ edits: Edit[] }> {
  const earlier = earlierCases(ctx);
  if (!earlier.length) return { edits };
  const d = ctx.model.info.width;
  let out = edits;
  for (let pass = 0; pass < HOLD_PASSES; pass++) {
    const cases = [current, ...earlier];
    const got = await completions(ctx.model, cases.map((k) => k.prompt), combine(ctx.base, out, d), ctx.signal);
    const broken = cases.filter((k, i) => !(i === 0 ? produces(got[i]) : got[i] === k.desired));
    if (!broken.length) break;
    progress(`keeping earlier fixes: ${broken.length} case(s) to restore (pass ${pass + 1})`);
    for (const k of broken) {
      const target = repairTarget(ctx.model, k.prompt, k.desired);
      const again = await solveMinimal({ ...ctx, target, base: combine(ctx.base, out, d), start: undefined, maxNeurons: 6, maxRounds: 8 });
      for (const e of again.edits) out = accumulate(out, e.layer, e.neuron, e.delta);
    }
  }
  return { edits: out };
}

function earlierCases(ctx: CommonContext): { prompt: string; desired: string }[] {
  return ctx.active.map((p) => ({ prompt: p.case.prompt, desired: p.case.desired }));
}

/** The active patches whose case no longer decodes to its desired text with the final edits (none: all hold). */
async function brokenEarlierFixes(ctx: CommonContext, patched: LayerEdits, reach?: boolean[]): Promise<RepairConflict[]> {
  const earlier = earlierCases(ctx);
  const check = earlier.flatMap((_, i) => (reach && !reach[i] ? [] : [i]));
  if (!check.length) return [];
  const got = await completions(ctx.model, check.map((i) => earlier[i].prompt), patched, ctx.signal);
  return check.flatMap((i, k) => (got[k] === earlier[i].desired ? [] : [{ patchId: ctx.active[i].id, desired: earlier[i].desired, got: got[k] }]));
}

/** A solve context without the reference second moments (the keyed method's: it never reads them). */
type CommonContext = Omit<SolveContext, 'ref'>;

/** Where a solver that reads the reference second moments runs without them: a bug, never the user's doing. */
function missingStats(): never {
  throw new Error('internal: the minimal or joint solver was started without the reference statistics');
}

/**
 * Runs a solver; where its own edits make the model's logits non-finite (its changes grew past the float range:
 * seen on fp16 graphs, whose activations saturate), the repair stops saying the solver diverged, rather than
 * dropping the edits and reporting a patch of zero neurons.
 * @throws NeuronpatchError naming the solver and the divergence.
 */
async function diverges<T>(solver: RepairMethod, solve: () => Promise<T>): Promise<T> {
  try {
    return await solve();
  } catch (e) {
    if (!(e instanceof NonFiniteLogits) || !e.intervened) throw e;
    throw new NeuronpatchError(
      `The ${solver} solver diverged: with its changes the model's logits became non-finite (${e.count} of ${e.total} NaN or ±Infinity).`,
      `No patch was made. Try ${solver === 'joint' ? '--method minimal' : '--method joint'}, a smaller --margin, or an fp32 export of the model (fp16 activations saturate).`,
    );
  }
}

/** Drops edits too small to matter next to the largest one. */
function prune(edits: Edit[], solver: string, rounds: number): Edit[] {
  assertFinite(edits, solver, rounds);
  const size = edits.map((e) => Math.sqrt(e.delta.reduce((s, v) => s + v * v, 0)));
  const max = Math.max(0, ...size);
  return edits.filter((_, i) => size[i] > 1e-4 * max);
}

