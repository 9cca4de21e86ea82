// How the CLI fails: exit codes, usage errors with "did you mean", and the one JSON object an error is under --json.
import leven from 'leven';
import { NeuronpatchError } from '../engine/types';
import { quote, safeMessage } from '../engine/untrusted';

/**
 * The CLI's exit codes (README "The CLI"): 0 done; 1 an input or the work failed (a file missing or not what it
 * should be, a model the engine refuses); 2 the command line itself is wrong (unknown command or option, a bad or
 * missing value, options that exclude each other); 3 a repair ran but did not fix the case; 4 a repair fixed it but
 * the patch could not be saved into --out and was written beside it instead.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, notFixed: 3, rescued: 4 } as const;

/** A command line that is wrong in itself: exit code 2. The message is one line; the hint says what to do. */
export class UsageError extends NeuronpatchError {
  constructor(message: string, hint?: string) {
    super(message, hint);
    this.name = 'UsageError';
  }
}

/**
 * The candidate closest to `word` by Levenshtein distance, when it is close enough to be a likely typo: at most a
 * third of the longer word's length (at least 1, at most 3 edits), or `word` is a prefix of it. Undefined otherwise.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    const d = leven(word.toLowerCase(), c.toLowerCase());
    if (!best || d < best.d) best = { c, d };
  }
  if (!best) return undefined;
  const allowed = Math.min(3, Math.max(1, Math.floor(Math.max(word.length, best.c.length) / 3)));
  if (best.d <= allowed) return best.c;
  // A word left out or cut short: `--max-tokens` for `--max-new-tokens`, `--regress` for `--regression`.
  const parts = word.toLowerCase().split('-').filter(Boolean);
  const holding = candidates.filter((c) => word.length >= 3 && (c.startsWith(word) || parts.length > 1 && parts.every((p) => c.toLowerCase().split('-').includes(p))));
  return holding.length === 1 ? holding[0] : undefined;
}

/** `; did you mean X?` for the closest candidate, or `.` where none is close: the end of a message. */
export function didYouMean(word: string, candidates: readonly string[], show: (c: string) => string = (c) => c): string {
  const c = closest(word, candidates);
  return c ? `; did you mean ${show(c)}?` : '.';
}

const FS_CODES: Record<string, string> = {
  ENOENT: 'no such file or folder', EACCES: 'permission denied', EPERM: 'not permitted', EISDIR: 'it is a folder',
  ENOTDIR: 'a part of the path is not a folder', EEXIST: 'it already exists', ENOSPC: 'no space left on the disk',
  EROFS: 'the file system is read-only', ENAMETOOLONG: 'the name is too long', EMFILE: 'too many open files',
};

/**
 * A file-system error that reached the top (an output folder that cannot be made, a disk that is full) as a
 * NeuronpatchError naming the path and the reason in words, instead of a stack trace; other errors unchanged.
 */
export function fromFsError(e: unknown): unknown {
  const f = e as NodeJS.ErrnoException;
  if (!(f instanceof Error) || typeof f.code !== 'string' || typeof f.path !== 'string' || !FS_CODES[f.code]) return e;
  const what = f.syscall === 'open' || f.syscall === 'stat' || f.syscall === 'access' || f.syscall === 'scandir' ? 'cannot open' : 'cannot write';
  const why = f.code === 'EEXIST' && f.syscall === 'mkdir' ? 'a file is in the way of a folder needed there' : FS_CODES[f.code];
  return new NeuronpatchError(`${what} ${quote(f.path, 160)}: ${why} (${f.code}${f.syscall ? `, ${f.syscall}` : ''}).`,
    'Check the path, the folder\'s permissions and the free space, then run the command again.');
}

/** The exit code an error thrown by a command stands for. */
export function exitCodeOf(e: unknown): number {
  return e instanceof UsageError ? EXIT.usage : EXIT.failed;
}

/**
 * An error as --json prints it: one object, on one line of stderr (stdout stays empty):
 * `{"error": {"kind": "usage"|"input"|"internal", "message": "...", "hint": "...", "exitCode": n}}`. `input` is a
 * NeuronpatchError (a file, the model, the engine refused); `internal` is anything else (a bug: please report it).
 * Untrusted text is escaped and cut as in the text form.
 */
export function errorObject(e: unknown): { error: { kind: 'usage' | 'input' | 'internal'; message: string; hint?: string; exitCode: number } } {
  const exitCode = exitCodeOf(e);
  if (e instanceof NeuronpatchError) {
    const message = e.hint && e.message.endsWith(`\n  ${e.hint}`) ? e.message.slice(0, -(e.hint.length + 3)) : e.message;
    return { error: { kind: e instanceof UsageError ? 'usage' : 'input', message: safeMessage(message), ...(e.hint ? { hint: safeMessage(e.hint) } : {}), exitCode } };
  }
  return { error: { kind: 'internal', message: safeMessage((e as Error)?.message ?? String(e), 2000), exitCode } };
}

/** An error as the terminal shows it: `neuronpatch: message` and the hint indented below it. */
export function errorText(e: unknown): string {
  if (e instanceof NeuronpatchError) return `neuronpatch: ${safeMessage(e.message)}\n`;
  return `neuronpatch: unexpected error: ${safeMessage((e as Error)?.stack ?? String(e), 8000)}\n`;
}

/** A command-line word for a message: quoted and cut. */
export const word = (s: string): string => quote(s, 60);
