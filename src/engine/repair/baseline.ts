// The "before" side of a side-effect check: the greedy lines of the regression prompts under the active patches
// (none: the unpatched model), which token locality, lines unchanged and the changed-lines list compare against.
// They are the same on every run for the same model, prompts and patches, and decoding them is most of a check's
// cost (240 prompts × up to 48 tokens), so they are cached in the model's cache folder per model hash, prompts'
// hash and patches' hash, verified before use (derivedCache.ts).
import { DEFAULT_MAX_NEW_TOKENS } from '../generate';
import { type CacheOutcome, cachedDerived, inputsHash } from '../model/derivedCache';
import type { LoadedModel } from '../model/load';
import { patchSet } from '../patches/patchset';
import type { Patch } from '../types';
import { type GreedyLine, greedyLines, nextTokenLogits } from './verify';

/** Bumped when greedy decoding's defaults change (healing, stop rule, token budget): older entries are decoded again. */
const FORMAT = 1;
/** Prompts decoded per progress report: verify.ts's batch, so the batches are the ones greedyLines makes. */
const CHUNK = 16;

export interface BaselineOptions {
  /** Enabled patches the lines are decoded under (default none: the unpatched model). */
  active?: readonly Patch[];
  signal?: AbortSignal;
  /** Prompts decoded so far of all (decoding only; a cache hit reports nothing). */
  onProgress?: (done: number, total: number) => void;
}

/** What the patches change, for the cache key: their edits and added neurons, not their ids or dates. */
function patchesKey(active: readonly Patch[]): unknown {
  return active.map((p) => ({ edits: p.edits, added: p.added ?? [] }));
}

/**
 * The greedy line (text and token ids, healed boundary, end-of-line stop, DEFAULT_MAX_NEW_TOKENS) of each prompt
 * under `opts.active`, read from the cache when an entry verifies, decoded and cached otherwise. `cache` says which.
 * @throws NeuronpatchError when cancelled through `opts.signal`, or when the patches do not fit the model.
 */
export async function baselineLines(model: LoadedModel, prompts: string[], opts: BaselineOptions = {}): Promise<{ lines: GreedyLine[]; cache: CacheOutcome }> {
  const active = opts.active ?? [];
  const V = model.info.vocab;
  const key = { kind: 'lines', format: FORMAT, model: model.info.hash, inputs: inputsHash([DEFAULT_MAX_NEW_TOKENS, prompts, patchesKey(active)]) };
  const shape = (v: unknown): string | undefined => {
    if (!Array.isArray(v)) return 'not a list';
    if (v.length !== prompts.length) return `${v.length} lines for ${prompts.length} prompts`;
    const bad = v.findIndex((l) => !l || typeof l.completion !== 'string' || !Array.isArray(l.tokens) || l.tokens.length > DEFAULT_MAX_NEW_TOKENS
      || !l.tokens.every((t: unknown) => Number.isInteger(t) && (t as number) >= 0 && (t as number) < V));
    return bad >= 0 ? `line ${bad + 1} is not {completion, tokens}` : undefined;
  };
  const edits = active.length ? patchSet(active, model.info.width) : undefined;
  const { value, cache } = await cachedDerived<GreedyLine[]>(model.cacheDir, key, shape, async () => {
    const out: GreedyLine[] = [];
    for (let i = 0; i < prompts.length; i += CHUNK) {
      opts.onProgress?.(i, prompts.length);
      out.push(...(await greedyLines(model, prompts.slice(i, i + CHUNK), edits, opts.signal)));
    }
    opts.onProgress?.(prompts.length, prompts.length);
    return out;
  });
  return { lines: value, cache };
}

/**
 * The unpatched model's next-token logits at the end of each (healed) prompt ([vocab] per prompt: the "before" of
 * the next-token measures), read from the cache when an entry verifies, computed and cached otherwise (float32,
 * base64 in the entry).
 */
export async function baselineNextToken(model: LoadedModel, prompts: string[]): Promise<{ rows: Float32Array[]; cache: CacheOutcome }> {
  const V = model.info.vocab;
  const key = { kind: 'next', format: FORMAT, model: model.info.hash, inputs: inputsHash(prompts) };
  const bytes = prompts.length * V * 4;
  const shape = (v: unknown): string | undefined => {
    if (typeof v !== 'string') return 'not a string';
    if (Buffer.byteLength(v, 'base64') !== bytes) return `${Buffer.byteLength(v, 'base64')} bytes, ${bytes} expected`;
    return undefined;
  };
  const { value, cache } = await cachedDerived<string>(model.cacheDir, key, shape, async () => {
    const rows = await nextTokenLogits(model, prompts);
    const all = new Float32Array(prompts.length * V);
    rows.forEach((r, i) => all.set(r, i * V));
    return Buffer.from(all.buffer, all.byteOffset, all.byteLength).toString('base64');
  });
  const buf = Buffer.from(value, 'base64');
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  if (all.some((x) => !Number.isFinite(x))) return { rows: await nextTokenLogits(model, prompts), cache: { hit: false, why: 'the cached logits are not all finite' } };
  return { rows: prompts.map((_, i) => all.subarray(i * V, (i + 1) * V)), cache };
}
