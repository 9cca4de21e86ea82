// Argument parsing shared by the CLI's commands (node's util.parseArgs), and the files they read.
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { checkMargin, DEFAULT_MARGIN, MAX_MARGIN } from '../engine/repair/index';
import { checkJsonDepth } from '../engine/jsonlimits';
import { NeuronpatchError } from '../engine/types';
import { quote, safeMessage } from '../engine/untrusted';
import { didYouMean, UsageError, word } from './errors';

export const usage = `usage: neuronpatch <command> [options]

  info      [--json]                                   architecture, layers, neurons, width, vocabulary, hash
  generate  --prompt TEXT | --prompt-file F | --prompts FILE.jsonl
            [--max-new-tokens N] [--patches FILE]... [--no-heal] [--multiline]
            [--temperature T] [--top-p P] [--seed S] [--unescape] [--json]
  trace     --prompt-file F | --prompt TEXT  --desired TEXT [--top N] [--unescape] [--json]
  repair    --prompt-file F | --prompt TEXT  --desired TEXT [--method keyed|minimal|joint] [--margin LOGITS]
            [--regression FILE] [--reference FILE] [--guard FILE | --no-guard] [--held-out FILE]
            [--key-margin 0..1] [--keyed-layer L] [--out PATCH] [--unescape] [--verbose] [--json]
  eval      --cases FILE [--method keyed|minimal|joint] [--margin LOGITS] [--no-fallback] [--regression FILE]
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
  neuronpatch <command> --help shows one command's options.

  repair and eval use the keyed method by default, which needs reference code (--regression, --reference or
  --guard FILE): without any they use minimal, say so on stderr, and measure no side effects (pass --regression
  FILE to measure them). Added (keyed) neurons are named L<layer>.K<k>: the k-th neuron added to that layer by the
  patches applied, counted in patch order (edited ones L<layer>.N<neuron>).

  Exit codes: 0 done; 1 an input or the work failed (a missing or invalid file, a model the engine refuses);
  2 the command line is wrong (unknown command or option, a bad or missing value); 3 the repair did not fix the
  case; 4 the repair fixed it but --out could not be written (the patch was saved beside it). With --json an error
  is one line of JSON on stderr, {"error": {"kind", "message", "hint", "exitCode"}}, and stdout stays empty.
`;

export const modelOption = { model: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, threads: { type: 'string' } } as const;

/** The lines of `usage` about one command (its name's line and the indented ones after it). */
export function commandUsage(command: string): string {
  const lines = usage.split('\n');
  const at = lines.findIndex((l) => l.startsWith(`  ${command} `));
  if (at < 0) return usage;
  let end = at + 1;
  while (end < lines.length && /^ {10,}\S/.test(lines[end])) end++;
  return `usage: neuronpatch ${lines.slice(at, end).map((l) => l.trim().replace(/^(\S+) {2,}/, '$1 ').replace(/ {3,}/g, ': ')).join('\n    ')}\n\n${usage.slice(usage.indexOf('  Every command takes'))}`;
}

/** A negative number after an option that takes a value (`--max-new-tokens -3`) is that option's value. */
function numbersAsValues(args: string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = args[i + 1];
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d|inf|nan)/i.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
    if (a === '--') {
      out.push(...args.slice(i + 1));
      break;
    }
  }
  return out;
}

/**
 * The options of `command` from `args` (node's util.parseArgs, strict, no positionals). Whatever parseArgs refuses
 * becomes a one-line UsageError (exit code 2) naming the option, with "did you mean" for an unknown one.
 * @throws UsageError
 */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(command: string, args: string[], options: T) {
  const all = { ...modelOption, ...options };
  try {
    return parseArgs({ args: numbersAsValues(args, all), options: all, allowPositionals: false, strict: true });
  } catch (e) {
    const code = String((e as { code?: string }).code ?? '');
    if (!code.startsWith('ERR_PARSE_ARGS')) throw e;
    throw parseArgsError(command, (e as Error).message, Object.keys(all));
  }
}

/** parseArgs's message, in one line a user can act on. */
function parseArgsError(command: string, message: string, known: string[]): UsageError {
  const help = `neuronpatch ${command} --help lists its options.`;
  const named = /'(-[^' ]*)/.exec(message)?.[1];
  const unknown = /^Unknown option '([^']*)'/.exec(message);
  if (unknown) {
    const opt = unknown[1];
    const bare = opt.replace(/^-+/, '');
    return new UsageError(`${command}: unknown option ${word(opt)}${didYouMean(bare, known, (c) => `--${c}`)}`, help);
  }
  const positional = /^Unexpected argument '([^']*)'/.exec(message);
  if (positional) {
    return new UsageError(`${command}: unexpected argument ${word(positional[1])}: ${command} takes options only (--name value).`, `${help} Quote a value that holds spaces.`);
  }
  if (named && /argument missing/.test(message)) return new UsageError(`${command}: ${named} needs a value.`, help);
  if (named && /does not take an argument/.test(message)) return new UsageError(`${command}: ${named} takes no value (it is a switch: give it alone).`, help);
  if (named && /ambiguous/.test(message)) {
    return new UsageError(`${command}: ${named} is followed by something that looks like an option; to pass a value that starts with "-", write ${named}=VALUE.`, help);
  }
  return new UsageError(`${command}: ${safeMessage(message.split('\n')[0], 200)}`, help);
}

/** The embedded demo model: models/demo beside the bundle (dist/ → ..) or the sources (out/src/cli → ../../..). */
export function defaultModelDir(): string {
  const candidates = [path.resolve(__dirname, '..', 'models', 'demo'), path.resolve(__dirname, '..', '..', '..', 'models', 'demo')];
  return candidates.find((c) => existsSync(c)) ?? candidates[0];
}

/** The demo model's regression prompts (bench/cases/regression.jsonl beside models/), as a path a user can paste. */
export function demoRegressionFile(): string {
  const file = path.resolve(defaultModelDir(), '..', '..', 'bench', 'cases', 'regression.jsonl');
  if (!existsSync(file)) return 'bench/cases/regression.jsonl';
  const rel = path.relative(process.cwd(), file);
  return rel.startsWith('..') || path.isAbsolute(rel) ? file : rel;
}

/** A path for a message: quoted, escaped and cut. */
export const shownPath = (file: string): string => quote(file, 160);

/**
 * Checks that `file`, given with `--option`, is a readable file, before any slow work.
 * @throws NeuronpatchError saying which option's file is missing (or a folder, or unreadable), the path and what to do.
 */
export function checkInputFile(file: string, option: string): void {
  try {
    if (statSync(file).isDirectory()) throw Object.assign(new Error('is a folder'), { code: 'EISDIR' });
    accessSync(file, constants.R_OK);
  } catch (e) {
    throw inputFileError(file, option, e as NodeJS.ErrnoException);
  }
}

/** What each option's file holds, for the hint of a file that is missing. */
const FILE_OF: Record<string, string> = {
  '--prompt-file': 'the prompt as plain text (or give it with --prompt TEXT)',
  '--prompts': 'JSONL, one {"prompt": "..."} per line',
  '--patches': 'a patch file, as `neuronpatch repair --out FILE` writes it',
  '--regression': 'JSONL, one {"prompt": "..."} of ordinary code per line (for the demo model: DEMO_REGRESSION)',
  '--reference': 'JSONL, one {"prompt": "..."} of ordinary code per line',
  '--held-out': 'JSONL, one {"prompt": "..."} of code per line',
  '--from': 'JSONL, one {"prompt": "..."} of ordinary code per line',
  '--cases': 'JSONL, one {"id", "prompt", "desired"} per line (as bench/cases/dev.jsonl)',
  '--guard': 'guard lines, as `neuronpatch guard --out FILE` writes them',
  '--unseen-guard': 'guard lines, as `neuronpatch guard --out FILE` writes them',
};

function inputFileError(file: string, option: string, e: NodeJS.ErrnoException): NeuronpatchError {
  const where = path.isAbsolute(file) ? '' : ` (read from the current folder, ${shownPath(process.cwd())})`;
  if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
    return new NeuronpatchError(`${option}: no such file: ${shownPath(file)}${where}.`, `Check the path and the spelling; ${option} takes an existing file${FILE_OF[option] ? `: ${FILE_OF[option].replace('DEMO_REGRESSION', demoRegressionFile())}` : ''}.`);
  }
  if (e.code === 'EISDIR') return new NeuronpatchError(`${option}: ${shownPath(file)} is a folder, not a file.`, `Give ${option} a file.`);
  if (e.code === 'EACCES' || e.code === 'EPERM') return new NeuronpatchError(`${option}: ${shownPath(file)} cannot be read (permission denied).`, 'Check the file\'s permissions.');
  return new NeuronpatchError(`${option}: cannot read ${shownPath(file)}: ${e.code ?? safeMessage(e.message, 200)}.`);
}

/**
 * The text of `file`, given with `--option` (`option` is the option's name with its dashes, e.g. `--prompt-file`).
 * @throws NeuronpatchError naming the option and the path when it cannot be read.
 */
export function readText(file: string, option: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw inputFileError(file, option, e as NodeJS.ErrnoException);
  }
}

/**
 * An integer option: absent → `fallback`; otherwise whole digits at least `min` (1 by default: counts, tokens,
 * limits) and at most `max`.
 * @throws UsageError naming the option, the value given and what is accepted.
 */
export function int(value: string | undefined, name: string, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  const n = /^\+?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    const what = max < Number.MAX_SAFE_INTEGER ? `an integer from ${min} to ${max}` : min === 1 ? 'a positive integer (1, 2, 3, …)' : `an integer of ${min} or more`;
    throw new UsageError(`--${name} must be ${what}, got ${word(value)}.`);
  }
  return n;
}

/**
 * A number option: absent → `fallback`; otherwise a decimal number within `range` (`min`/`max` inclusive unless
 * `above`/`below`, which are exclusive).
 * @throws UsageError naming the option, the value given and what is accepted.
 */
export function float(value: string | undefined, name: string, fallback: number, range: { min?: number; above?: number; max?: number; below?: number; what?: string } = {}): number {
  if (value === undefined) return fallback;
  const n = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value.trim()) ? Number(value) : NaN;
  const ok = Number.isFinite(n) && (range.min === undefined || n >= range.min) && (range.above === undefined || n > range.above)
    && (range.max === undefined || n <= range.max) && (range.below === undefined || n < range.below);
  if (!ok) throw new UsageError(`--${name} must be ${range.what ?? 'a number'}, got ${word(value)}.`);
  return n;
}

/** --margin LOGITS, checked before any work (the default where absent). */
export function marginOption(value: string | undefined): number {
  return checkMargin(float(value, 'margin', DEFAULT_MARGIN, { above: 0, max: MAX_MARGIN, what: `a number of logits above 0 and at most ${MAX_MARGIN} (default ${DEFAULT_MARGIN})` }));
}

/**
 * One JSON object per non-empty line (a BOM before the first is ignored); a broken line is reported by number
 * and skipped, the rest go on. A file with no usable line at all throws a NeuronpatchError naming `what`.
 */
export function readJsonl<T>(file: string, check: (v: unknown) => string | undefined, warn: (msg: string) => void, what = 'lines', option = 'the file'): T[] {
  const out: T[] = [];
  let text = readText(file, option);
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
 * @throws UsageError naming the option, for an unknown escape under `unescape`.
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
    throw new UsageError(`--${name} has ${quote(all)}, which --unescape does not read: it reads \\n, \\t and \\\\ only.`, 'Write \\\\ for a backslash, or leave out --unescape and use --prompt-file.');
  });
}

export function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : text());
}
