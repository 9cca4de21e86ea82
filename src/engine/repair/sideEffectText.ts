// The side effects of a repair in words, for the CLI and the repair panel (the webview bundles it: no imports but types).
import type { SideEffectSummary } from '../types';

/** "changes 0.4 % of tokens on 120 of your completions; keeps 34/35 lines the model had right": the panel's first line. */
export function sideEffectLine(s: SideEffectSummary, where = 'unrelated prompts'): string {
  const parts: string[] = [];
  if (s.tokenLocality !== null) parts.push(`changes ${fmtPct(1 - s.tokenLocality)} of tokens on ${s.prompts} ${where}`);
  if (s.kept) parts.push(`keeps ${s.kept.kept}/${s.kept.of} lines the model had right`);
  if (s.keptUnseen) parts.push(`${s.keptUnseen.kept}/${s.keptUnseen.of} of lines it was not shown`);
  if (s.heldOutLoss) parts.push(`held-out loss ${s.heldOutLoss.change >= 0 ? '+' : '−'}${fmtPct(Math.abs(s.heldOutLoss.change))}`);
  return parts.join('; ') || 'side effects not measured';
}

function fmtPct(x: number): string {
  const p = 100 * x;
  return `${p === 0 ? '0' : p < 0.1 ? p.toFixed(2) : p.toFixed(1)} %`;
}
