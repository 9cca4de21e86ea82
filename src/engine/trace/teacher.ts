// Teacher forcing: feed prompt + desired text, read the argmax at every position of the desired text exactly as
// greedy decoding would (healing constraint included), and report where the model and the desired text part.
import { toLf } from '../eol';
import { healingMask, preparePrompt, type PreparedPrompt } from '../generate';
import { logSumExp } from '../linalg';
import type { LoadedModel } from '../model/load';
import type { LayerEdits } from '../model/session';
import { type FailingPosition, NeuronpatchError } from '../types';

export interface RepairTarget {
  prepared: PreparedPrompt;
  /** Desired tokens after the (healed) prompt; the last one ends the line. */
  targets: number[];
  /** Index in the input sequence whose logits predict target i: `first + i`. */
  first: number;
  /** Input ids: prepared prompt + all targets but the last. */
  input: number[];
  /** The last target ends the line (any token holding a newline will do there). */
  lineEnd: boolean;
}

export interface PositionState {
  index: number;
  desired: number;
  argmax: number;
  /** The strongest token other than the desired one (the argmax where the desired token loses). */
  rival: number;
  /** logit(desired) − logit(rival): positive where the desired token wins, by that margin. */
  gap: number;
  failing: boolean;
}

/** Normalizes the desired text and checks what can be repaired. */
/** `maxChars`: more characters than the context window can hold in any tokenisation (refused before tokenising). */
export function checkDesired(desired: string, maxChars = Infinity): string {
  if (desired.length > maxChars)
    throw new NeuronpatchError(`The desired text has ${desired.length.toLocaleString('en-US')} characters, more than the model's context window can hold.`, 'Repair one line at a time: give the text up to the end of the first line.');
  const text = desired.replace(/\r\n/g, '\n').replace(/\n$/, '');
  if (!text.trim()) throw new NeuronpatchError('The desired text is empty.', 'Give the text the model should produce at the cursor, up to the end of the line.');
  if (text.includes('\n')) throw new NeuronpatchError('The desired text spans several lines.', 'Repair one line at a time: give the text up to the end of the first line.');
  return text;
}

export function repairTarget(model: LoadedModel, original: string, desired: string, lineEnd = true, reserve = 64): RepairTarget {
  const tok = model.tokenizer;
  const text = checkDesired(desired, model.info.context * tok.maxTokenChars);
  // LF, and the same cut as preparePrompt's.
  const prompt = tok.tail(toLf(original), model.info.context).text;
  const prepared = preparePrompt(model, prompt, reserve, true);
  const end = lineEnd ? '\n' : '';
  const full = tok.encode(prompt + text + end);
  const own = tok.encode(prompt);
  // Targets continue the prompt's kept tokens; where the tokenization of prompt + desired text re-segments the
  // kept part, fall back to spelling the healed text and the desired text on their own.
  const keep = own.length - prepared.healedTokens;
  const targets = full.slice(0, keep).every((id, i) => id === own[i]) ? full.slice(keep) : tok.encode(prepared.healed + text + end);
  if (targets.length < 1) throw new NeuronpatchError('The desired text tokenizes to nothing.');
  if (prepared.ids.length + targets.length > model.info.context) {
    throw new NeuronpatchError(`Prompt and desired text need ${prepared.ids.length + targets.length} tokens; the context window is ${model.info.context}.`);
  }
  const input = [...prepared.ids, ...targets.slice(0, -1)];
  return { prepared, targets, first: prepared.ids.length - 1, input, lineEnd };
}

/** Logits of a forward: rows of `stride` positions, the first being sequence position `from`. */
export interface LogitRows {
  logits: Float32Array;
  stride: number;
  from: number;
}

/** The logit rows of a forward's result. */
export function logitRows(res: { logits: Float32Array; logitPositions: number; logitsFrom: number }): LogitRows {
  return { logits: res.logits, stride: res.logitPositions, from: res.logitsFrom };
}

/** Per target position, the tokens healing allows there (undefined: all); the same for every forward of a target. */
const allowedByTarget = new WeakMap<RepairTarget, (Uint8Array | undefined)[]>();

function allowedTokens(model: LoadedModel, target: RepairTarget): (Uint8Array | undefined)[] {
  let allowed = allowedByTarget.get(target);
  if (!allowed) {
    const texts = model.tokenizer.tokenTexts();
    allowed = target.targets.map((_, i) => {
      const rest = target.prepared.healed.slice(model.tokenizer.decode(target.targets.slice(0, i)).length);
      return rest ? healingMask(texts, rest) : undefined;
    });
    allowedByTarget.set(target, allowed);
  }
  return allowed;
}

/**
 * Argmax at each target position under the healing constraint, and whether it departs from the desired text.
 * One pass over each position's vocabulary row (the best and second-best logits; the rival is the best that is
 * not the desired token), in place in the forward's [rows, positions, V] logits: nothing vocabulary-sized is
 * allocated.
 */
export function positionStates(model: LoadedModel, target: RepairTarget, l: LogitRows, row: number): PositionState[] {
  const { logits } = l;
  const V = model.info.vocab;
  const texts = model.tokenizer.tokenTexts();
  const eos = new Set(model.info.eosTokenIds);
  const allowedAt = allowedTokens(model, target);
  const states: PositionState[] = [];
  for (let i = 0; i < target.targets.length; i++) {
    const off = (row * l.stride + target.first + i - l.from) * V;
    const y = target.targets[i];
    const { argmax, rival } = allowedAt[i] ? bestTwoAllowed(logits, off, V, y, allowedAt[i]!) : bestTwo(logits, off, V, y);
    const last = target.lineEnd && i === target.targets.length - 1;
    // At the end of the line any token that ends it will do: a newline (with indentation after it) or end of text.
    const failing = last ? !(texts[argmax]?.includes('\n') || eos.has(argmax)) : argmax !== y;
    // Where healing allows one token only, nothing competes with it.
    const gap = rival < 0 ? Infinity : logits[off + y] - logits[off + rival];
    states.push({ index: i, desired: y, argmax, rival: rival < 0 ? y : rival, gap, failing });
  }
  return states;
}

/**
 * The argmax of `logits[off, off + V)` and the best index other than `y` (the argmax itself unless it is `y`,
 * else the runner-up; −1 when V = 1). Ties go to the lower index, as a strict `>` scan gives them.
 */
export function bestTwo(logits: Float32Array, off: number, V: number, y: number): { argmax: number; rival: number } {
  let b1 = 0;
  let v1 = logits[off];
  let b2 = -1;
  let v2 = -Infinity;
  for (let v = 1; v < V; v++) {
    const x = logits[off + v];
    if (x > v2) {
      if (x > v1) {
        b2 = b1; v2 = v1; b1 = v; v1 = x;
      } else {
        b2 = v; v2 = x;
      }
    }
  }
  // NaN rows (checked by the session) aside, b2 is set whenever V > 1.
  return { argmax: b1, rival: b1 !== y ? b1 : b2 };
}

/** bestTwo over the tokens healing allows at this position (−1 where none is allowed). */
function bestTwoAllowed(logits: Float32Array, off: number, V: number, y: number, allowed: Uint8Array): { argmax: number; rival: number } {
  let argmax = -1;
  let rival = -1;
  for (let v = 0; v < V; v++) {
    if (!allowed[v]) continue;
    const x = logits[off + v];
    if (argmax < 0 || x > logits[off + argmax]) argmax = v;
    if (v !== y && (rival < 0 || x > logits[off + rival])) rival = v;
  }
  return { argmax, rival };
}

/**
 * Positions a solver must still work on: failing ones, and ones won by less than `minGap` logits (decoding with the
 * KV cache, or in fp16, must not flip them). At the end of the line any newline token wins, so no gap is asked.
 */
export function weakPositions(states: PositionState[], target: RepairTarget, minGap: number): PositionState[] {
  const last = states.length - 1;
  return states.filter((s, i) => s.failing || (s.gap < minGap && !(target.lineEnd && i === last)));
}

export function describePosition(model: LoadedModel, target: RepairTarget, s: PositionState, l: LogitRows, row: number): FailingPosition {
  const V = model.info.vocab;
  const off = (row * l.stride + target.first + s.index - l.from) * V;
  const { logits } = l;
  const lse = logSumExp(logits, off, V);
  const yv = logits[off + s.desired];
  let rank = 1;
  for (let v = off, end = off + V; v < end; v++) if (logits[v] > yv) rank++;
  const tok = model.tokenizer;
  return {
    index: s.index,
    prefix: tok.decode(target.targets.slice(0, s.index)),
    model: { id: s.argmax, text: tok.tokenText(s.argmax), prob: Math.exp(logits[off + s.argmax] - lse) },
    desired: { id: s.desired, text: tok.tokenText(s.desired), prob: Math.exp(yv - lse), rank },
  };
}

export interface Forced {
  target: RepairTarget;
  states: PositionState[];
  /** Logits of the desired text's positions only. */
  logits: LogitRows;
  activations: Map<number, Float32Array>;
  residual?: Float32Array;
  /** FFN inputs x̂ of the layers asked for ([input length, d] each), where asked. */
  ffnInputs?: Map<number, Float32Array>;
}

/**
 * One teacher-forced forward with the given edits; activations of the listed layers, the final residual, and the
 * FFN inputs of `ffnInputs` (layers that take added neurons).
 */
export async function teacherForce(model: LoadedModel, target: RepairTarget, edits?: LayerEdits, layers: number[] = [], residual = false, ffnInputs: number[] = []): Promise<Forced> {
  const res = await model.session.forward({ ids: [target.input], edits, activations: layers, residual, logitsFrom: target.first, ffnInputs });
  const logits = logitRows(res);
  return { target, states: positionStates(model, target, logits, 0), logits, activations: res.activations, residual: res.residual, ...(ffnInputs.length ? { ffnInputs: res.ffnInputs } : {}) };
}
