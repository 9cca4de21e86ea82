// Decoding with the KV cache: greedy or sampled, healed at the prompt boundary, stopped at the end of the line,
// at a token budget or at end of sequence, with patches applied through the graph's inputs. Prompts of a batch
// are left-padded and decoded together.
import { tokensPerForward } from './budget';
import type { LoadedModel } from './model/load';
import { padsLeft } from './model/graph';
import { type KvCache, type LayerEdits, leftPad } from './model/session';
import { eolOf, toLf, withEol } from './eol';
import type { PrefixCache } from './prefix';
import { mulberry32 } from './random';
import { type Completion, type GeneratedToken, NeuronpatchError } from './types';

export interface GenerateOptions {
  maxNewTokens?: number;
  /** Go on past the end of the line. */
  multiline?: boolean;
  /** Heal the prompt boundary (default); false decodes from the prompt's own tokenization, exactly. */
  heal?: boolean;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  edits?: LayerEdits;
  signal?: AbortSignal;
  /**
   * A single prompt's KV cache kept between calls: the prompt's tokens shared with the previous call's are not
   * run again (completions while typing). Ignored for batches of several prompts.
   */
  prefix?: PrefixCache;
  /** Prompt tokens per forward before the first token (default PREFILL_CHUNK). */
  prefillChunk?: number;
  /** Called after each decoding step with the step's index (0: the prompt's forward gave the first token). */
  onStep?: (step: number) => void;
}

export const DEFAULT_MAX_NEW_TOKENS = 48;

/**
 * Prompt tokens run per forward before the first token: a long prompt is run in pieces (the KV cache carries
 * over), so that a cancel is honoured between pieces instead of after the whole prompt.
 */
export const PREFILL_CHUNK = 256;
/** The smallest prompt piece: each piece reads every weight once more. */
const MIN_PREFILL_CHUNK = 64;

/** A prompt as the decoder sees it: its tokens after healing and cutting, and the text decoding must re-emit. */
export interface PreparedPrompt {
  ids: number[];
  /** Prompt text backed off by healing: the first generated tokens must spell it out. */
  healed: string;
  /** How many of the prompt's own tokens healing backed off. */
  healedTokens: number;
  notice?: string;
}

const WORD_CHAR = /[\p{L}\p{N}_]/u;

/**
 * Token healing: back off the last token (and the tokens before it while they continue the same word), so that
 * decoding can pick the token the model would have used across the boundary (`\n` + indentation, ` else`).
 */
export function preparePrompt(model: LoadedModel, original: string, maxNewTokens: number, heal = true): PreparedPrompt {
  const tok = model.tokenizer;
  // The model reads LF. Only the end of a long prompt can fit the context window: the rest is cut before tokenising.
  const tail = tok.tail(toLf(original), model.info.context);
  const prompt = tail.text;
  let ids = tok.encode(prompt);
  let healed = '';
  let healedTokens = 0;
  if (heal && ids.length > 1) {
    let keep = ids.length - 1;
    healed = prompt.slice(tok.decode(ids.slice(0, keep)).length);
    while (keep > 1 && ids.length - keep < 3 && WORD_CHAR.test(healed[0] ?? '')) {
      const prev = tok.tokenText(ids[keep - 1]);
      if (!WORD_CHAR.test(prev[prev.length - 1] ?? '') || /^\s/.test(prev)) break;
      keep--;
      healed = prompt.slice(tok.decode(ids.slice(0, keep)).length);
    }
    // Only heal where the kept tokens decode to an exact prefix of the prompt.
    if (prompt.startsWith(tok.decode(ids.slice(0, keep)))) {
      healedTokens = ids.length - keep;
      ids = ids.slice(0, keep);
    } else healed = '';
  }
  const bos = tok.prefix;
  let notice: string | undefined;
  const budget = model.info.context - maxNewTokens - bos.length;
  if (budget < 1) throw new NeuronpatchError(`maxNewTokens ${maxNewTokens} leaves no room in the context window of ${model.info.context}.`);
  if (tail.dropped) {
    notice = `The prompt has ${(tail.dropped + prompt.length).toLocaleString('en-US')} characters; only its last ${prompt.length.toLocaleString('en-US')} can reach the model's context window of ${model.info.context} tokens, so the first ${tail.dropped.toLocaleString('en-US')} were cut before tokenising.`;
  }
  if (ids.length > budget) {
    notice = `${notice ? `${notice} ` : ''}The prompt has ${ids.length} tokens${tail.dropped ? ' left' : ''}; the model's context window is ${model.info.context} with ${maxNewTokens} kept for the completion, so the first ${ids.length - budget} tokens were cut.`;
    ids = ids.slice(ids.length - budget);
  }
  ids = [...bos, ...ids];
  if (!ids.length) {
    if (model.tokenizer.bosTokenId === undefined && !model.info.eosTokenIds.length) throw new NeuronpatchError('Empty prompt and no BOS/EOS token to start from.');
    ids = [model.tokenizer.bosTokenId ?? model.info.eosTokenIds[0]];
  }
  return { ids, healed, healedTokens, notice };
}

/** Tokens allowed while `rest` of the healed text is still to be spelt: they start with it or are a prefix of it. */
export function healingMask(texts: string[], rest: string): Uint8Array {
  const ok = new Uint8Array(texts.length);
  texts.forEach((s, id) => {
    if (s && !s.includes('\uFFFD') && (s.startsWith(rest) || rest.startsWith(s))) ok[id] = 1;
  });
  return ok;
}


function softmaxInPlace(x: Float64Array): void {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i] = Math.exp(x[i] - max);
  for (let i = 0; i < x.length; i++) x[i] /= sum;
}

interface Row {
  prepared: PreparedPrompt;
  out: number[];
  tokens: GeneratedToken[];
  done: boolean;
  /** Characters of the healed text spelt so far, while healing. */
  consumed: number;
  healing: boolean;
}

/**
 * The row's generated text, decoded after the prompt's last token: tokenizers that drop a leading space at the
 * start of a text (SentencePiece's ▁) then keep it, as they should in the middle of one.
 */
function generatedText(model: LoadedModel, row: Row): string {
  const anchor = row.prepared.ids.slice(-1);
  return model.tokenizer.decode([...anchor, ...row.out]).slice(model.tokenizer.decode(anchor).length);
}

/** The visible completion: generated text minus the healed prefix, cut at the end of the line unless multiline. */
function visible(full: string, healed: string, multiline: boolean): { text: string; ended: boolean } {
  if (full.length < healed.length) return { text: '', ended: false };
  const text = full.slice(healed.length);
  const nl = text.indexOf('\n');
  if (!multiline && nl >= 0) return { text: text.slice(0, nl), ended: true };
  return { text, ended: false };
}

/**
 * Greedy or sampled completions of `prompts`, decoded together: left-padded to one width, one KV cache. A graph
 * that cannot take left padding (no `position_ids`: it numbers every row's slots from 0; GroupQueryAttention)
 * decodes prompts of equal token length together, each group on its own.
 */
export async function generate(model: LoadedModel, prompts: string[], opts: GenerateOptions = {}): Promise<Completion[]> {
  // The model reads LF; a CRLF prompt's completion is given back in CRLF.
  const done = await decodeGroups(model, prompts.map(toLf), opts);
  return done.map((c, i) => (eolOf(prompts[i]) === '\n' ? c : { ...c, completion: withEol(c.completion, eolOf(prompts[i])) }));
}

async function decodeGroups(model: LoadedModel, prompts: string[], opts: GenerateOptions): Promise<Completion[]> {
  if (padsLeft(model.graph) || prompts.length < 2) return decode(model, prompts, opts);
  const maxNew = opts.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  const groups = new Map<number, number[]>();
  prompts.forEach((p, i) => {
    const n = preparePrompt(model, p, maxNew, opts.heal ?? true).ids.length;
    groups.set(n, [...(groups.get(n) ?? []), i]);
  });
  if (groups.size === 1) return decode(model, prompts, opts);
  const out = new Array<Completion>(prompts.length);
  for (const idx of groups.values()) {
    const got = await decode(model, idx.map((i) => prompts[i]), opts);
    idx.forEach((i, k) => (out[i] = got[k]));
  }
  return out;
}

async function decode(model: LoadedModel, prompts: string[], opts: GenerateOptions): Promise<Completion[]> {
  const started = performance.now();
  const maxNew = opts.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  const multiline = opts.multiline ?? false;
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  const random = mulberry32(opts.seed ?? 0);
  const eos = new Set(model.info.eosTokenIds);
  const texts = model.tokenizer.tokenTexts();
  const V = model.info.vocab;
  const rows: Row[] = prompts.map((p) => {
    const prepared = preparePrompt(model, p, maxNew, opts.heal ?? true);
    return { prepared, out: [], tokens: [], done: false, consumed: 0, healing: prepared.healed.length > 0 };
  });
  if (!rows.length) return [];

  const pad = model.info.eosTokenIds[0] ?? 0;
  const { ids: first, mask } = leftPad(rows.map((r) => r.prepared.ids), pad);
  let ids = first;
  let cache: KvCache | undefined;
  // Running several new tokens on top of a cache (prompt pieces, a reused prefix) is what some exports cannot do
  // (onnxruntime-genai's GroupQueryAttention graphs take a whole prompt or one token): the first failure marks
  // the session, and the prompt is run whole from then on.
  const extend = model.session.extendsPast !== false;
  const prefix = rows.length === 1 && extend ? opts.prefix : undefined;
  const whole = (e: unknown): void => {
    if (!cache?.length || ids[0].length < 2 || model.session.extendsPast) throw e;
    model.session.extendsPast = false;
    prefix?.clear();
    ids = first;
    cache = undefined;
  };
  if (prefix) {
    const taken = prefix.take(first[0], opts.edits);
    ids = [taken.rest];
    cache = taken.past;
  }
  // All but the last piece of a long prompt: cache only, checking for a cancel between pieces.
  // Pieces of at most PREFILL_CHUNK tokens, fewer where the model is large (one run's budget, budget.ts: 128 tokens
  // at Qwen2.5-Coder-0.5B, 64 at 1.5B), so that a cancel waits for one piece only.
  const chunk = extend ? Math.max(1, opts.prefillChunk ?? Math.min(PREFILL_CHUNK, Math.max(MIN_PREFILL_CHUNK, Math.floor(tokensPerForward(model.info) / rows.length)))) : Infinity;
  while (ids[0].length > chunk) {
    if (opts.signal?.aborted) throw new NeuronpatchError('Generation was cancelled.');
    const past: number = cache?.length ?? 0;
    try {
      const res = await model.session.forward({
        ids: ids.map((r) => r.slice(0, chunk)), mask: mask.map((m) => m.slice(0, past + chunk)), past: cache, edits: opts.edits, cache: true, lastOnly: true,
      });
      if (past) model.session.extendsPast = true;
      cache = res.cache;
      ids = ids.map((r) => r.slice(chunk));
    } catch (e) {
      whole(e);
      break;
    }
  }
  for (let step = 0; step < maxNew && rows.some((r) => !r.done); step++) {
    if (opts.signal?.aborted) throw new NeuronpatchError('Generation was cancelled.');
    let res;
    try {
      res = await model.session.forward({ ids, mask, past: cache, edits: opts.edits, cache: true, lastOnly: true });
    } catch (e) {
      if (step > 0) throw e;
      whole(e);
      res = await model.session.forward({ ids, mask, past: cache, edits: opts.edits, cache: true, lastOnly: true });
    }
    if (step === 0 && cache?.length && ids[0].length > 1) model.session.extendsPast = true;
    cache = res.cache;
    if (step === 0) prefix?.keep(first[0], cache, opts.edits);
    const next: number[] = [];
    rows.forEach((row, b) => {
      if (row.done) {
        next.push(pad);
        return;
      }
      const logits = res.logits.subarray(b * V, (b + 1) * V);
      const rest = row.healing ? row.prepared.healed.slice(row.consumed) : '';
      const allowed = rest ? healingMask(texts, rest) : undefined;
      let id = -1;
      if (temperature > 0) {
        const scaled = Float64Array.from(logits, (v, i) => (allowed && !allowed[i] ? -Infinity : v / temperature));
        softmaxInPlace(scaled);
        const order = [...scaled.keys()].sort((a, c) => scaled[c] - scaled[a]);
        let mass = 0;
        const nucleus: number[] = [];
        for (const i of order) {
          nucleus.push(i);
          mass += scaled[i];
          if (mass >= topP) break;
        }
        let u = random() * mass;
        for (const i of nucleus) if ((u -= scaled[i]) <= 0) { id = i; break; }
        if (id < 0) id = nucleus[nucleus.length - 1];
      } else {
        let best = -Infinity;
        for (let i = 0; i < V; i++) if ((!allowed || allowed[i]) && logits[i] > best) { best = logits[i]; id = i; }
      }
      if (id < 0) {
        row.done = true;  // nothing can spell the healed text: stop rather than emit garbage
        next.push(pad);
        return;
      }
      row.out.push(id);
      row.tokens.push({ id, text: texts[id], prob: Math.exp(logits[id] - res.logSumExp![b]) });
      // Decoding the row again is only needed while healing or where a line may end the completion (the text
      // itself is decoded once, at the end).
      if (row.healing || (!multiline && texts[id].includes('\n'))) {
        const full = generatedText(model, row);
        row.consumed = full.length;
        row.healing = row.consumed < row.prepared.healed.length;
        if (visible(full, row.prepared.healed, multiline).ended) row.done = true;
      }
      if (eos.has(id)) row.done = true;
      next.push(id);
    });
    opts.onStep?.(step);
    if (cache && cache.length + 1 > model.info.context) break;
    ids = next.map((id) => [id]);
    for (const m of mask) m.push(1);  // the rows are this loop's own (leftPad's)
  }
  const ms = performance.now() - started;
  return rows.map((r) => ({
    completion: visible(generatedText(model, r), r.prepared.healed, multiline).text, tokens: r.tokens, ms,
    ...(r.prepared.notice ? { notice: r.prepared.notice } : {}),
  }));
}

/** Many prompts in batches of `batch` rows: one KV cache and one set of edits per batch. */
export async function generateBatched(model: LoadedModel, prompts: string[], opts: GenerateOptions = {}, batch = 16): Promise<Completion[]> {
  const out: Completion[] = [];
  for (let i = 0; i < prompts.length; i += batch) out.push(...(await generate(model, prompts.slice(i, i + batch), opts)));
  return out;
}
