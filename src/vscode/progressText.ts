// Counts in the words the user reads them: the status bar's patch count and the side-effect check's steps.
// Pure functions; no vscode import.

/**
 * The status bar's patch count: "2 patches" when all are active, "0 of 1 patch active" when some are disabled (the
 * words of the status menu), so a disabled patch is never hidden behind "0 patches".
 */
export function patchCount(active: number, total: number): string {
  if (active === total) return `${total} patch${total === 1 ? '' : 'es'}`;
  return `${active} of ${total} patch${total === 1 ? '' : 'es'} active`;
}

/** What the side-effect check is doing now, with a count of the things that step counts. */
export interface SideEffectStep {
  phase: string;
  done: number;
  total: number;
}

/**
 * The engine's side-effect count (`done` of `total` items, engine/repair/measures.ts: the regression prompts'
 * completions, then the guard lines, then texts whose loss is measured, in that order) as the step it is in, each
 * counted in its own items: "checking that 17 completions from your workspace stay the same: 8/17", then "checking
 * that 3 lines the model gets right (…) stay right: 1/3", then "measuring the model's loss on 17 workspace texts: 5/17".
 * `completions` and `kept` are the counts the engine's "measuring side effects on P regression prompts and G guard
 * lines" line named; whatever the total holds beyond them is the loss measure's texts.
 */
export function sideEffectStep(done: number, total: number, completions: number, kept: number): SideEffectStep {
  const texts = Math.max(0, total - completions - kept);
  const d = Math.max(0, Math.min(done, total));
  if (completions && (d < completions || (d === completions && !kept && !texts)))
    return { phase: `checking that ${completions} completion${completions === 1 ? '' : 's'} from your workspace stay the same`, done: d, total: completions };
  if (kept && d < completions + kept + (texts ? 0 : 1))
    return { phase: `checking that ${kept} line${kept === 1 ? '' : 's'} the model gets right (completions you kept among them) stay right`, done: d - completions, total: kept };
  if (texts) return { phase: `measuring the model's loss on ${texts} workspace text${texts === 1 ? '' : 's'}`, done: d - completions - kept, total: texts };
  return { phase: 'checking side effects', done: d, total };
}
