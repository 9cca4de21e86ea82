// A repair's result is never lost to a save error: when its patch cannot join the patch file (the file became
// invalid on disk, is locked, the disk refused), the patch is written to a patch file of its own beside it, or in
// the system's temp folder when that fails too.
import * as os from 'node:os';
import * as path from 'node:path';
import type { ModelInfo, Patch } from '../types';
import { PatchStore } from './store';

/**
 * Writes `patch` alone into a new patch file for `model` (`<file>.rescued-<patch id>.json`, else the same name in
 * os.tmpdir()) and returns its path. Throws (the last error) only when neither place can be written; the caller
 * still holds the patch in memory then.
 */
export async function rescuePatch(file: string, model: ModelInfo, patch: Patch): Promise<string> {
  const name = `${path.basename(file).replace(/\.json$/i, '')}.rescued-${patch.id.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64)}.json`;
  let last: unknown;
  for (const dir of [path.dirname(path.resolve(file)), os.tmpdir()]) {
    try {
      return await savePatchTo(path.join(dir, name), model, patch);
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

/**
 * Adds `patch` to the patch file `target` (created when absent; an existing one must be a valid file for
 * `model`, and is appended to) and returns the path. Throws a NeuronpatchError like PatchStore.
 */
export async function savePatchTo(target: string, model: ModelInfo, patch: Patch): Promise<string> {
  const store = await PatchStore.open(target, model);
  if (!store.get(patch.id)) store.add(patch);
  await store.save();
  return target;
}
