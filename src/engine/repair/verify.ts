// What counts as fixed, and what else changed: greedy completions of regression prompts before and after a patch
// (batched: they share one patch and one model), the mean next-token KL divergence, and the case's variants.
import { generateBatched, preparePrompt } from '../generate';
import { logSoftmax } from '../linalg';
import type { LoadedModel } from '../model/load';
import { type LayerEdits, leftPad } from '../model/session';
import type { RepairCaseVariant } from '../types';

const BATCH = 16;

export async function completions(model: LoadedModel, prompts: string[], edits?: LayerEdits, signal?: AbortSignal): Promise<string[]> {
  return (await generateBatched(model, prompts, { edits, signal }, BATCH)).map((c) => c.completion);
}

/**
 * The next-token distributions at the end of each (healed) prompt, before and after: their mean KL(p_before ‖
 * p_after), and the share of prompts whose most likely next token is unchanged.
 */
export async function nextTokenShift(model: LoadedModel, prompts: string[], before?: LayerEdits, after?: LayerEdits): Promise<{ meanKl: number; sameNext: number }> {
  const V = model.info.vocab;
  let total = 0;
  let same = 0;
  for (let i = 0; i < prompts.length; i += BATCH) {
    const rows = prompts.slice(i, i + BATCH).map((p) => preparePrompt(model, p, 1).ids);
    const { ids, mask, width } = leftPad(rows);
    const [a, b] = await Promise.all([
      model.session.forward({ ids, mask, edits: before }),
      model.session.forward({ ids, mask, edits: after }),
    ]);
    for (let r = 0; r < rows.length; r++) {
      const off = (r * width + width - 1) * V;
      const p = logSoftmax(a.logits, off, V);
      const q = logSoftmax(b.logits, off, V);
      let kl = 0;
      let [pa, qa] = [0, 0];
      for (let v = 0; v < V; v++) {
        kl += Math.exp(p[v]) * (p[v] - q[v]);
        if (p[v] > p[pa]) pa = v;
        if (q[v] > q[qa]) qa = v;
      }
      total += Math.max(0, kl);
      if (pa === qa) same++;
    }
  }
  return prompts.length ? { meanKl: total / prompts.length, sameNext: same / prompts.length } : { meanKl: 0, sameNext: 1 };
}

export interface SideEffects {
  /** Share of regression prompts whose greedy line is unchanged. */
  specificity: number;
  /** Share whose most likely next token is unchanged: a line can flip on a near-tie late in it, a token cannot. */
  nextTokenSpecificity: number;
  meanKl: number;
  changed: { prompt: string; before: string; after: string }[];
}

export async function sideEffects(
  model: LoadedModel, prompts: string[], base: LayerEdits | undefined, patched: LayerEdits, before?: string[], signal?: AbortSignal,
): Promise<SideEffects> {
  const old = before ?? (await completions(model, prompts, base, signal));
  const now = await completions(model, prompts, patched, signal);
  const changed = prompts.flatMap((prompt, i) => (old[i] === now[i] ? [] : [{ prompt, before: old[i], after: now[i] }]));
  const { meanKl, sameNext } = await nextTokenShift(model, prompts, base, patched);
  return { specificity: prompts.length ? 1 - changed.length / prompts.length : 1, nextTokenSpecificity: sameNext, meanKl, changed };
}

/** Share of the variants whose greedy completion with the patch is their desired text. */
export async function generalization(model: LoadedModel, variants: RepairCaseVariant[], patched: LayerEdits, signal?: AbortSignal): Promise<number | null> {
  if (!variants.length) return null;
  const got = await completions(model, variants.map((v) => v.prompt), patched, signal);
  return got.filter((g, i) => g === variants[i].desired.replace(/\n$/, '')).length / variants.length;
}
