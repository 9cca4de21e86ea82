// Automatically made variants of a repair's prompt, for keys that generalise: the same line should come next after
// the same recent code whatever came much earlier and whatever the file's own names are. A keyed repair reads its
// failing contexts in these variants too and keys on what they share (keyed.ts), while its threshold is still set
// against protected code. Variants (deterministic, at most `count`):
//   - earlier lines dropped: the prompt from a later line on (the last KEEP lines always stay);
//   - earlier lines thinned: every other line before the last KEEP dropped;
//   - names changed: identifiers of the prompt that the desired line does not use (and that are not keywords or
//     builtins) renamed consistently, in the earlier lines or in the whole prompt.
// A variant whose tokens of the desired line differ from the original's is left out by the caller.

/** Lines before the cursor that every variant keeps as they are. */
const KEEP = 2;

const PY_WORDS = new Set([
  'False', 'None', 'True', 'and', 'as', 'assert', 'async', 'await', 'break', 'class', 'continue', 'def', 'del', 'elif', 'else', 'except',
  'finally', 'for', 'from', 'global', 'if', 'import', 'in', 'is', 'lambda', 'nonlocal', 'not', 'or', 'pass', 'raise', 'return', 'try',
  'while', 'with', 'yield', 'self', 'cls', 'print', 'len', 'range', 'str', 'int', 'dict', 'list', 'set', 'tuple', 'object', 'super',
  'isinstance', 'type', 'open', 'Exception', 'ValueError', 'TypeError', 'KeyError', 'function', 'var', 'let', 'const', 'new', 'this',
  'public', 'private', 'static', 'void', 'return', 'struct', 'fn', 'pub', 'impl', 'use', 'match', 'func', 'package',
]);

const IDENT = /[A-Za-z_][A-Za-z0-9_]*/g;

/** `prompt` with identifiers in `names` renamed (a fixed suffix per name), from character `from` on. */
function rename(prompt: string, names: Set<string>, from: number, tag: string): string {
  const head = prompt.slice(0, from);
  const tail = prompt.slice(from).replace(IDENT, (w) => (names.has(w) ? `${w}${tag}` : w));
  return head + tail;
}

/**
 * Up to `count` variants of `prompt` (text before the cursor, at a line start or inside a line) for a repair whose
 * desired text is `desired`; none where the prompt has too few lines to vary. Deterministic.
 */
export function promptVariants(prompt: string, desired: string, count: number): string[] {
  if (count <= 0) return [];
  const lines = prompt.split('\n');
  // The last element is the current line's text before the cursor (often empty).
  const earlier = lines.length - 1 - KEEP;
  const out: string[] = [];
  const add = (p: string) => {
    if (p !== prompt && p.trim() && !out.includes(p)) out.push(p);
  };
  if (earlier >= 2) {
    add(lines.slice(Math.floor(earlier / 2)).join('\n'));
    add(lines.filter((_, i) => i >= earlier || i % 2 === 1).join('\n'));
    add(lines.slice(Math.floor((3 * earlier) / 4)).join('\n'));
  }
  const used = new Set(desired.match(IDENT) ?? []);
  const names = new Set((prompt.match(IDENT) ?? []).filter((w) => !used.has(w) && !PY_WORDS.has(w) && w.length > 1));
  if (names.size) {
    const cut = earlier > 0 ? lines.slice(0, earlier).join('\n').length : 0;
    add(rename(prompt, names, 0, '_v'));
    if (cut > 0) add(rename(prompt.slice(0, cut), names, 0, 'X') + prompt.slice(cut));
  }
  if (earlier >= 2) add(lines.slice(earlier - 1).join('\n'));
  return out.slice(0, count);
}
