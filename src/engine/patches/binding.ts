// Which patch file a model's patches go to. A patch file is bound to one model (its `model.hash`): when the file a
// user or the default names already holds another model's patches (they switched models), this model's patches
// go to a sibling named for it, so that neither model's patches block or touch the other's.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { ModelInfo } from '../types';
import { parseJson } from './format';

/** Where a model's patches live, and the model the named file belongs to when that is another one. */
export interface PatchFileChoice {
  /** The file to open for this model: the named one, or its sibling for this model. */
  file: string;
  /** Set when the named file holds another model's patches (name as the file says it, cut; full hash). */
  displacedBy?: { name: string; hash: string };
}

/** Characters of the model name kept in a sibling's file name. */
const SLUG_CHARS = 40;

/** `patches.json` for model "Qwen2.5-Coder-0.5B", hash 1a2b3c4d… → `patches.qwen2.5-coder-0.5b-1a2b3c4d.json`. */
export function siblingFor(file: string, model: Pick<ModelInfo, 'name' | 'hash'>): string {
  const ext = path.extname(file) || '.json';
  const base = path.basename(file, path.extname(file));
  const slug = model.name.toLowerCase().replace(/[^a-z0-9.]+/g, '-').slice(0, SLUG_CHARS).replace(/^[-.]+|[-.]+$/g, '') || 'model';
  return path.join(path.dirname(file), `${base}.${slug}-${model.hash.slice(0, 8)}${ext}`);
}

/**
 * The patch file for `model`, given the file the settings name (absolute path). The named file is used when it
 * is absent, unreadable or not valid JSON (opening it then reports the problem as before), unbound, or bound to
 * this model; when it is bound to another model, the sibling of siblingFor() is used and displacedBy says whose
 * the named file is. Never writes. Throws nothing: every failure to read falls back to the named file.
 */
export async function patchFileFor(named: string, model: Pick<ModelInfo, 'name' | 'hash'>): Promise<PatchFileChoice> {
  let value: unknown;
  try {
    value = parseJson(await fs.readFile(named, 'utf8'), named, true);
  } catch {
    return { file: named };
  }
  const m = (value as { model?: { name?: unknown; hash?: unknown } } | null)?.model;
  if (!m || typeof m.hash !== 'string' || m.hash === '' || m.hash === model.hash) return { file: named };
  return { file: siblingFor(named, model), displacedBy: { name: typeof m.name === 'string' ? m.name.slice(0, 80) : '', hash: m.hash } };
}
