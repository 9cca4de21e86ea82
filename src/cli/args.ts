// Argument parsing shared by the CLI's commands (node's util.parseArgs), and the files they read.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { checkMargin } from '../engine/repair/index';
import { checkJsonDepth } from '../engine/jsonlimits';
import { NeuronpatchError } from '../engine/types';
import { quote, safeMessage } from '../engine/untrusted';

export const usage = `usage: neuronpatch <command> [options]

  info      [--json]                                   architecture, layers, neurons, width, vocabulary, hash
  generate  --prompt TEXT | --prompt-file F | --prompts FILE.jsonl
            [--max-new-tokens N] [--patches FILE]... [--no-heal] [--multiline]
            [--temperature T] [--top-p P] [--seed S] [--unescape] [--json]
  trace     --prompt-file F | --prompt TEXT  --desired TEXT [--top N] [--unescape] [--json]
  repair    --prompt-file F | --prompt TEXT  --desired TEXT [--method minimal|joint|keyed] [--margin LOGITS]
            [--regression FILE] [--reference FILE] [--guard FILE | --no-guard] [--held-out FILE]
            [--key-margin 0..1] [--keyed-layer L] [--out PATCH] [--unescape] [--verbose] [--json]
  eval      --cases FILE [--method minimal|joint|keyed] [--margin LOGITS] [--no-fallback] [--regression FILE]
            [--reference FILE] [--guard FILE | --no-guard] [--held-out FILE] [--key-margin 0..1] [--limit N] [--json]
  guard     --from PROMPTS.jsonl [--out GUARD.jsonl] [--max N]   lines the model completes exactly right
  export    --patches FILE... --out DIR [--quantized side-branch|requantize]
  demo      [--out DIR] [--method keyed|minimal|joint] [--regression-limit N]
                                                       the main job on the embedded model, with a report

  --prompt and --desired are taken as typed: "\\n" in them is a backslash and an n, as in code. For a prompt of
  several lines use --prompt-file F, a shell's $'...' quoting (--prompt $'def f():\\n    '), or --unescape,
  which reads \\n, \\t and \\\\ in --prompt and --desired as newline, tab and backslash.
  repair, eval and demo print their wall time phase by phase; a phase longer than 2 s shows progress on stderr.
  Guard sets and the regression prompts' lines before a repair are cached per model and prompt set under
  NEURONPATCH_CACHE (default ~/.cache/neuronpatch), checked before use and rebuilt when anything differs.

  Every command takes --model DIR (default: the embedded demo model, models/demo) and --dtype
  auto|fp32|fp16|q8|int8|uint8|q4|q4f16 (which file of a folder holding several dtypes; default auto).
`;

export const modelOption = { model: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, threads: { type: 'string' } } as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  return parseArgs({ args, options: { ...modelOption, ...options }, allowPositionals: false, strict: true });
}

/** The embedded demo model: models/demo beside the bundle (dist/ → ..) or the sources (out/src/cli → ../../..). */
export function defaultModelDir(): string {
  const candidates = [path.resolve(__dirname, '..', 'models', 'demo'), path.resolve(__dirname, '..', '..', '..', 'models', 'demo')];
  return candidates.find((c) => existsSync(c)) ?? candidates[0];
}

export function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new NeuronpatchError(`Cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function int(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new NeuronpatchError(`--${name} must be a non-negative integer, got "${value}".`);
  return n;
}

export function float(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new NeuronpatchError(`--${name} must be a number, got "${value}".`);
  return n;
}

/** --margin LOGITS, checked before any work (the default where absent). */
export function marginOption(value: string | undefined): number {
  return checkMargin(value === undefined ? undefined : float(value, 'margin', 0));
}

/**
 * One JSON object per non-empty line (a BOM before the first is ignored); a broken line is reported by number
 * and skipped, the rest go on. A file with no usable line at all throws a NeuronpatchError naming `what`.
 */
export function readJsonl<T>(file: string, check: (v: unknown) => string | undefined, warn: (msg: string) => void, what = 'lines'): T[] {
  const out: T[] = [];
  let text = readText(file, 'file');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let skipped = 0;
  const say = warn;
  warn = (msg) => {
    if (skipped <= 20) say(skipped === 20 ? `${msg} (further skipped lines are counted, not shown)` : msg);
  };
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
      checkJsonDepth(v, `line ${i + 1}`);
    } catch (e) {
      skipped++;
      warn(`${file}:${i + 1}: not valid JSON (${quote((e as Error).message, 200)}); line skipped`);
      return;
    }
    const problem = check(v);
    if (problem) {
      skipped++;
      warn(`${file}:${i + 1}: ${problem}; line skipped`);
    } else out.push(v as T);
  });
  if (!out.length)
    throw new NeuronpatchError(
      skipped ? `${file} has no valid ${what}: all ${skipped} line(s) were skipped (see above).` : `${file} has no ${what}: it is empty.`,
      `Give one JSON object per line, as in bench/cases/dev.jsonl.`,
    );
  return out;
}

/**
 * A --prompt or --desired value. With `unescape`, \n, \t and \\ are read as newline, tab and backslash, and any
 * other backslash is an error (code is full of backslashes: nothing is guessed). Without it the text is taken as
 * typed; one holding a literal \n but no newline gets a hint on stderr.
 * @throws NeuronpatchError naming the option, for an unknown escape under `unescape`.
 */
export function promptArg(value: string, unescape: boolean, name: string): string {
  if (!unescape) {
    if (name === 'prompt' && value.includes('\\n') && !value.includes('\n')) {
      process.stderr.write(`neuronpatch: ${safeMessage(`--${name} holds "\\n" but no newline: it is read as typed (a backslash and an n). For a newline use --unescape, $'...' quoting, or --prompt-file.`)}\n`);
    }
    return value;
  }
  return value.replace(/\\(.?)/gs, (all, c: string) => {
    if (c === 'n') return '\n';
    if (c === 't') return '\t';
    if (c === '\\') return '\\';
    throw new NeuronpatchError(`--${name} has ${quote(all)}, which --unescape does not read: it reads \\n, \\t and \\\\ only.`, 'Write \\\\ for a backslash, or leave out --unescape and use --prompt-file.');
  });
}

export function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : text());
}
