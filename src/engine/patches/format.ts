// The patch file's text: parsing with positions for syntax errors, and writing it so that a diff stays short
// and readable: 2-space indent, keys in a fixed order, every array of numbers (a delta) on one line.
import { NeuronpatchError, PATCH_FORMAT, PATCH_FORMAT_2, type PatchFile } from '../types';
import { checkJsonDepth } from '../jsonlimits';
import { safeMessage } from '../untrusted';
import { jsonErrorOffset } from './jsonpos';
import { PATCH_FILE_SHAPE } from './validate';

/**
 * Significant digits kept for delta values (a delta is written as e.g. -0.002718282, not -0.0027182818284590). The
 * relative error is at most 5e-7 (a few fp32 steps; 1000× finer than fp16 weights, whose step is 1e-3), so a
 * delta that moves a logit gap by 5 is off by under 3e-6 logits. It cannot make patched runs differ from the file:
 * the store rounds patches when they are added or loaded, so what is in memory is exactly what the file holds.
 * A repair that wants its confirmation pass to see the stored values bit for bit rounds with roundDelta first.
 */
export const DELTA_DIGITS = 7;

export function roundValue(x: number): number {
  return x === 0 ? 0 : Number(x.toPrecision(DELTA_DIGITS));
}

export function roundDelta(delta: readonly number[]): number[] {
  return delta.map(roundValue);
}

function line(value: unknown, indent: string): string {
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    if (value.every((v) => typeof v === 'number')) return `[${value.map((v) => JSON.stringify(v)).join(', ')}]`;
    const inner = indent + '  ';
    return `[\n${value.map((v) => inner + line(v, inner)).join(',\n')}\n${indent}]`;
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) return '{}';
    const inner = indent + '  ';
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${line(v, inner)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The file's text, ending with a newline. Its format is neuronpatch/2 where a patch adds neurons (keyed), else
 * neuronpatch/1, which older versions of neuronpatch still read.
 */
export function serializePatchFile(file: PatchFile): string {
  const format = file.patches.some((p) => p.added?.length) ? PATCH_FORMAT_2 : PATCH_FORMAT;
  return `${line({ ...file, format }, '')}\n`;
}

/** 1-based line and column of a character offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: lines[lines.length - 1].length + 1 };
}

/**
 * JSON.parse with the file name and the line/column of a syntax error in the NeuronpatchError; a value nested
 * deeper than MAX_JSON_DEPTH is refused the same way (see ../jsonlimits). `reading`: the file is only read (patches
 * to apply), and the error says what a patch file is rather than that it will not be written over.
 */
export function parseJson(text: string, file: string, reading = false): unknown {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // editors on Windows may add a BOM
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (e) {
    // V8's message quotes an excerpt of the text: escaped and cut like any untrusted string.
    const msg = safeMessage((e as Error).message.replace(/\n/g, '\\n'), 200);
    const at = lineColumn(body, jsonErrorOffset(body));
    throw new NeuronpatchError(
      reading ? `${file}:${at.line}:${at.column}: not valid JSON (${msg}), so not a patch file.` : `${file}:${at.line}:${at.column}: not valid JSON (${msg}). The file was left untouched.`,
      reading
        ? `Pass a patch file instead. ${PATCH_FILE_SHAPE}.`
        : 'Fix it by hand or move it aside; neuronpatch does not write over a file it cannot read.',
    );
  }
  checkJsonDepth(value, `${file} (left untouched)`);
  return value;
}
