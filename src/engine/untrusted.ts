// Text that came from files the user did not write with neuronpatch (patch files, config.json, tokenizer.json,
// case files, a model's output) is quoted and cut before it reaches a terminal, a log or a panel: terminal escape
// sequences (ESC, CSI, OSC: screen clears, window titles, hyperlinks) and bidirectional overrides are shown as
// \u escapes, never sent raw, and a 5 MB string is shown as its first characters and its length.

/** C0 controls, DEL, C1 controls (U+0080–U+009F: 8-bit CSI/OSC), bidi embeddings/overrides/isolates, BOM, LS/PS. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;
/** The same set less newline and tab, for multi-line messages. */
const UNSAFE_IN_MESSAGE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;

const hex = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** The first `max` characters of `s` (whole code points), with how much was cut. */
function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max;
  const code = s.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--; // do not split a surrogate pair
  return `${s.slice(0, end)}… (${s.length.toLocaleString('en-US')} characters in all)`;
}

/**
 * An untrusted value as one quoted, escaped, cut string for a message: `"name"` with every control character
 * written as `\uXXXX` (or `\n`, `\t`, `\"`), at most `max` characters of the original (default 80). Non-strings
 * are described (`a number`, `an object`) rather than serialised.
 */
export function quote(value: unknown, max = 80): string {
  if (typeof value !== 'string') {
    if (value === null) return 'null';
    if (Array.isArray(value)) return `an array of ${value.length}`;
    if (typeof value === 'object') return 'an object';
    return cut(String(value), max);
  }
  const shown = cut(value, max);
  const body = shown.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\t/g, '\\t').replace(UNSAFE, hex);
  return `"${body}"`;
}

/**
 * A whole message (possibly several lines) safe for a terminal or a log: control characters other than newline
 * and tab escaped as `\uXXXX`, and at most `max` characters (default 4000).
 */
export function safeMessage(text: string, max = 4000): string {
  return cut(text, max).replace(UNSAFE_IN_MESSAGE, hex);
}

/** A name for display (a model's name from its config): control characters dropped, trimmed, at most `max` characters. */
export function displayName(value: string, max = 120): string {
  const clean = value.replace(UNSAFE, '').trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}
