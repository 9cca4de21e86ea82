// The one-line repair case an edited suggestion makes: the engine repairs one line at a time, and a multi-line
// suggestion (`\n    return x.shape[0]`) edited into `\n    return x * y` is taught on the line the user changed:
// the prompt runs to the start of that line's text, the desired text is the line. Pure; no vscode import.

/** A repair case inside an edited suggestion: the prompt grows by `promptChars` of it; `desired` ends the line. */
export interface EditCase {
  /** Characters of the edited text (from the suggestion's start) that join the prompt: the part the user kept. */
  promptChars: number;
  /** The user's text from there to the end of that line (one line, not empty). */
  desired: string;
  /** Line of the edited text (0: the suggestion's first line) the desired text is on. */
  line: number;
}

/** Why no case can be made from an edit, in words for the user. */
export interface NoEditCase {
  reason: string;
}

/**
 * The case to repair from a suggestion the user accepted (`accepted`) and changed (`edited`, the document's text
 * from the suggestion's start over as many lines). Where the first difference is on the suggestion's first line,
 * the prompt is the text before the suggestion and the desired text the user's first line (as for a one-line
 * suggestion). Where it is on a later line, the prompt runs on to the start of that line's text (after its
 * indentation: the lines above are the model's own, kept by the user) and the desired text is that line's text.
 * `undefined` when nothing differs; `NoEditCase` when the changed line holds no text to teach (emptied or removed).
 */
export function editCase(accepted: string, edited: string): EditCase | NoEditCase | undefined {
  const a = accepted.replace(/\r\n/g, '\n');
  const e = edited.replace(/\r\n/g, '\n');
  if (a === e) return undefined;
  let i = 0;
  while (i < a.length && i < e.length && a[i] === e[i]) i++;
  const lineStart = e.lastIndexOf('\n', i - 1) + 1;
  const end = e.indexOf('\n', i);
  const lineEnd = end < 0 ? e.length : end;
  const line = e.slice(0, lineStart).split('\n').length - 1;
  const text = e.slice(lineStart, lineEnd);
  const from = line === 0 ? 0 : lineStart + (text.length - text.trimStart().length);
  const desired = e.slice(from, lineEnd);
  if (!desired.trim())
    return { reason: `Line ${line + 1} of the edited suggestion is empty: there is no text on it to teach the model. Edit the line to the text it should be, or use "Repair Completion at Cursor" there.` };
  return { promptChars: from, desired, line };
}

/** Type guard: a case could not be made. */
export function isNoCase(c: EditCase | NoEditCase | undefined): c is NoEditCase {
  return !!c && 'reason' in c;
}
