// Multi-line completions where the code opens a block: after a line ending in `:` or an opening bracket, the
// completion may span the block's lines, and stops where the code dedents back to the opening line's indentation
// (a closing bracket at that indentation is kept). Pure functions on text; no vscode import.

/** A block the cursor is at the start of: the indentation (in columns, tab = 4) of the line that opened it. */
export interface OpenBlock {
  indent: number;
  /** The opener is on the cursor's own line: the completion must move to the next line to enter the block. */
  sameLine: boolean;
  /** The opening character: `:` or a bracket. */
  opener: string;
}

const OPENERS = /[:([{]\s*$/;
const CLOSERS: Record<string, string> = { '(': ')', '[': ']', '{': '}' };

function indentOf(line: string): number {
  let n = 0;
  for (const ch of line) {
    if (ch === ' ') n++;
    else if (ch === '\t') n += 4;
    else break;
  }
  return n;
}

/**
 * The block the text before the cursor opens, if any: its current line ends in `:` or `(`/`[`/`{`, or it is
 * blank (indentation only) and the last non-blank line before it does. Comments are not looked into.
 */
export function openBlock(before: string): OpenBlock | undefined {
  const lines = before.split(/\r?\n/);
  const current = lines[lines.length - 1];
  const opener = (line: string): string | undefined => (OPENERS.test(line) ? line.trimEnd().slice(-1) : undefined);
  const here = opener(current);
  if (here) return { indent: indentOf(current), sameLine: true, opener: here };
  if (current.trim() !== '') return undefined;
  for (let i = lines.length - 2; i >= 0; i--) {
    if (lines[i].trim() === '') continue;
    const o = opener(lines[i]);
    return o ? { indent: indentOf(lines[i]), sameLine: false, opener: o } : undefined;
  }
  return undefined;
}

/**
 * The part of a multi-line completion that stays inside the block: its first line, then the lines indented deeper
 * than the block's opening line (blank ones included), and a closing bracket at the opening line's indentation;
 * trailing blank lines dropped. A completion that goes on after an opener on the same line (` pass`) is a
 * one-liner: only its first line is kept.
 */
export function cutAtDedent(block: OpenBlock, completion: string): string {
  const lines = completion.split('\n');
  if (block.sameLine && lines[0].trim() !== '') return lines[0];
  const kept = [lines[0]];
  const closer = CLOSERS[block.opener];
  for (const line of lines.slice(1)) {
    if (line.trim() === '' || indentOf(line) > block.indent) {
      kept.push(line);
      continue;
    }
    if (closer && line.trimStart().startsWith(closer)) kept.push(line);
    break;
  }
  while (kept.length > 1 && kept[kept.length - 1].trim() === '') kept.pop();
  return kept.join('\n').replace(/[ \t]+$/, '');
}
