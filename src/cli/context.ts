// What every command shares: opening the model, reading patch files, warnings on stderr.
import { loadModel, type Model } from '../engine';
import { PatchStore } from '../engine/patches/store';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { NeuronpatchError, type Patch } from '../engine/types';
import { checkDtype, DTYPES } from '../engine/model/dtype';
import { safeMessage } from '../engine/untrusted';
import { checkInputFile, defaultModelDir, int, shownPath } from './args';
import { didYouMean, UsageError, word } from './errors';
import type { Phases } from './progress';

export type Command = (args: string[]) => Promise<number>;

let tracked: Phases | undefined;

/** Warnings go through `phases` while it shows a live progress line, so that they do not tear it. */
export function trackPhases(phases: Phases | undefined): void {
  tracked = phases;
}

/** A warning on stderr, escaped and cut (warnings quote case files and patch files). */
export const warn = (msg: string): void => {
  const line = `neuronpatch: ${safeMessage(msg)}\n`;
  if (tracked) tracked.say(line);
  else process.stderr.write(line);
};

/** The model of --model (default: the embedded demo) in the file --dtype picks; `auto`'s choice is said on stderr. */
export async function openModel(dir: string | undefined, threads?: string, dtype?: string): Promise<Model> {
  const t = threads !== undefined ? int(threads, 'threads', 0) : undefined;
  const d = (() => {
    try {
      return checkDtype(dtype);
    } catch {
      throw new UsageError(`--dtype must be one of ${DTYPES.join(', ')}, got ${word(dtype ?? '')}${didYouMean(dtype ?? '', DTYPES)}`);
    }
  })();
  if (dir !== undefined && !existsSync(dir)) {
    throw new NeuronpatchError(`--model: no such folder: ${shownPath(dir)}${path.isAbsolute(dir) ? '' : ` (read from the current folder, ${shownPath(process.cwd())})`}.`,
      'Give a model folder (config.json, tokenizer.json and an .onnx file), or leave out --model for the embedded demo model.');
  }
  const model = await loadModel(dir ?? defaultModelDir(), {
    threads: t, dtype: d,
    log: (line) => (line.startsWith('dtype ') ? warn(line) : undefined),
  });
  // Where the config and the tokenizer disagreed on BOS/EOS: said once.
  if (model.info.notice) warn(model.info.notice);
  return model;
}

/** Enabled patches of every file given, in order; each file is validated against the model. */
export async function readPatches(model: Model, files: string[]): Promise<Patch[]> {
  const out: Patch[] = [];
  for (const f of files) {
    checkInputFile(f, '--patches');
    out.push(...(await PatchStore.open(f, model.info, { mustExist: true })).active());
  }
  return out;
}

