// Which lines of a file are worth completing, and the prompt before one: shared by the case harvester
// (tools/cases/harvest.mjs) and the demo model's engine evaluation (tools/demo-model/engine_eval.mjs), so that
// the cases and the model card's exact-line rate sample lines the same way.

/** A line worth completing: 4–80 characters of code, no trailing whitespace, not a comment, ended by a newline. */
export function isCandidate(f, k) {
  if (k < 3 || k >= f.lines.length - 1) return false;
  const line = f.lines[k];
  const s = line.trim();
  return s.length >= 4 && s.length <= 80 && line.length <= 100 && line === line.trimEnd() && /[A-Za-z0-9_]/.test(s) && !s.startsWith('#');
}

/**
 * The file's text up to the start of line k, cut from the left at a line boundary to at most `max` tokens
 * (`countTokens(text)` → tokens); undefined when not even line k − 1 fits or the text is blank.
 */
export function promptFor(f, k, max, countTokens) {
  // Start where the lines' own token counts say the budget is reached, then correct with the exact count.
  let s = k;
  let est = 0;
  while (s > 0) {
    const n = countTokens(`${f.lines[s - 1]}\n`);
    if (est + n > max) break;
    est += n;
    s--;
  }
  let prompt = `${f.lines.slice(s, k).join('\n')}\n`;
  while (s < k - 1 && countTokens(prompt) > max) prompt = `${f.lines.slice(++s, k).join('\n')}\n`;
  if (countTokens(prompt) > max || !prompt.trim()) return undefined;
  return { prompt, tokens: countTokens(prompt), firstLine: s + 1 };
}
