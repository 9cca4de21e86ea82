// The patch file on disk, bound to one model: read and validated once, changed in memory, saved atomically.
//
// Concurrent writers (the extension and the CLI on the same file): the store remembers the text it read or
// last wrote. If the file on disk is different at save time, it is re-read and validated, and this store's
// unsaved changes are replayed on top of it: additions are appended, enable/disable and removals applied by id.
// A change whose patch another writer removed is dropped and reported in the save result (their removal
// wins). If the file on disk became invalid or was rebound to another model, nothing is written and the save
// throws; the unsaved changes stay in memory. The read, merge and rename run under an inter-process lock
// (./lock.ts), so two neuronpatch writers (two `repair --out F`, the CLI and the extension) never lose each
// other's patches; editors and git do not take that lock, and a write of theirs in the milliseconds between the
// read and the rename is not seen. Opening a file sweeps the temp files of writers that died mid-save.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { NeuronpatchError, PATCH_FORMAT, type ModelInfo, type Patch, type PatchFile } from '../types';
import { sweepStaleTemps, writeFileAtomic } from '../atomic';
import { quote } from '../untrusted';
import { parseJson, roundDelta, serializePatchFile } from './format';
import { type HeldLock, withFileLock } from './lock';
import { checkPatchFile, formatProblems, PATCH_FILE_SHAPE, validatePatch } from './validate';

/**
 * Tests only: milliseconds to sleep inside the lock between re-reading the file and renaming the new one over
 * it, widening the read-modify-write window that the lock protects (NEURONPATCH_TEST_SAVE_DELAY_MS).
 */
function testDelayMs(): number {
  const ms = Number(process.env.NEURONPATCH_TEST_SAVE_DELAY_MS ?? 0);
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

type Change =
  | { kind: 'add'; patch: Patch }
  | { kind: 'enable'; id: string; enabled: boolean }
  | { kind: 'remove'; id: string };

export interface SaveResult {
  /** The file was written (false when there was nothing to save). */
  written: boolean;
  /** The file had changed on disk and this store's changes were replayed on top of it. */
  merged: boolean;
  /** Changes that could not be replayed, in words (their patch was removed by another writer). */
  dropped: string[];
}

function short(hash: string): string {
  return hash.length > 16 ? `${quote(hash.slice(0, 16))}…` : quote(hash);
}

/** Rounds deltas as they are written, so memory and file agree exactly (see DELTA_DIGITS). */
function normalise(p: Patch): Patch {
  return {
    ...p, case: { ...p.case }, metrics: { ...p.metrics }, edits: p.edits.map((e) => ({ ...e, delta: roundDelta(e.delta) })),
    ...(p.added ? { added: p.added.map((a) => ({ ...a, key: roundDelta(a.key), threshold: roundDelta([a.threshold])[0], value: roundDelta(a.value) })) } : {}),
  };
}

async function readText(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'EISDIR') throw new NeuronpatchError(`The patch file ${file} is a folder.`, 'Name a .json file for the patches.');
    throw new NeuronpatchError(`Cannot read the patch file ${file}: ${(e as Error).message}`);
  }
}

/** Parses and validates a patch file's text for this model; errors name the file and say it was left untouched. */
function parseFor(text: string, file: string, model: ModelInfo, reading = false): PatchFile {
  const value = parseJson(text, file, reading);
  // The binding first: a file of another model would otherwise fail on layer and width checks, which misleads.
  const m = (value as { model?: { name?: unknown; hash?: unknown } } | null)?.model;
  if (m && typeof m.hash === 'string' && m.hash !== '' && m.hash !== model.hash) {
    const theirs = typeof m.name === 'string' && m.name ? `${quote(m.name)}` : 'an unnamed model';
    throw new NeuronpatchError(
      `${file} holds patches for model ${theirs} (hash ${short(m.hash)}), not for the loaded model "${model.name}" ` +
        `(hash ${short(model.hash)}). The file was left untouched.`,
      `Patches move value vectors of one exact set of weights; load model ${theirs} to use them, or use another patch file for "${model.name}".`,
    );
  }
  const { file: parsed, problems } = checkPatchFile(value, model);
  if (!parsed) {
    // Not a patch file at all (another JSON file): say what one looks like rather than how to fix this one.
    const other = /^(format|\(top level\)): (missing|expected)/.test(problems[0] ?? '');
    throw new NeuronpatchError(
      other ? `${file} is not a neuronpatch patch file; it was left untouched:\n${formatProblems(problems)}`
        : `${file} is not a valid neuronpatch patch file; it was left untouched:\n${formatProblems(problems)}`,
      other ? `${PATCH_FILE_SHAPE}.${reading ? '' : ' Name another file for the patches, or move this one aside.'}`
        : 'Fix the file by hand (each problem names its place in the JSON) or move it aside.',
    );
  }
  return { ...parsed, patches: parsed.patches.map(normalise) };
}

export class PatchStore {
  private changes: Change[] = [];
  /** The save in flight, so that saves run one after another. */
  private saving: Promise<unknown> = Promise.resolve();

  private constructor(
    /** Path of the patch file. */
    readonly file: string,
    private readonly model: ModelInfo,
    private state: PatchFile,
    /** The text on disk when last read or written; null when there was no file. */
    private base: string | null,
    /** Temp files of dead writers removed beside the file when it was opened. */
    readonly swept: string[] = [],
  ) {}

  /**
   * Opens the patch file for `model`. A missing file is an empty store (nothing is written until a change is
   * saved), unless `mustExist` (reading patches given on a command line: the file is only read, and its errors
   * say what a patch file is); an unreadable, invalid, or other model's file throws a NeuronpatchError and is not
   * touched.
   */
  static async open(file: string, model: ModelInfo, opts: { mustExist?: boolean } = {}): Promise<PatchStore> {
    const text = await readText(file);
    if (text === null && opts.mustExist) throw new NeuronpatchError(`Patch file not found: ${file}`);
    const state = text === null ? PatchStore.empty(model) : parseFor(text, file, model, opts.mustExist);
    const swept = await sweepStaleTemps(file);
    return new PatchStore(file, model, state, text, swept);
  }

  private static empty(model: ModelInfo): PatchFile {
    return { format: PATCH_FORMAT, model: { name: model.name, hash: model.hash }, patches: [] };
  }

  /** Every patch, in file order. Treat as read-only; change patches through the store. */
  list(): Patch[] {
    return this.state.patches.slice();
  }

  /** The enabled patches, in file order: what the session applies. */
  active(): Patch[] {
    return this.state.patches.filter((p) => p.enabled);
  }

  get(id: string): Patch | undefined {
    return this.state.patches.find((p) => p.id === id);
  }

  /** True when there are changes not yet saved. */
  get dirty(): boolean {
    return this.changes.length > 0;
  }

  /** Appends a patch (validated against the model; deltas rounded as the file stores them). Returns what is stored. */
  add(patch: Patch): Patch {
    const p = normalise(validatePatch(patch, this.model, `patch ${quote(patch?.id ?? '')}`));
    if (this.get(p.id)) throw new NeuronpatchError(`A patch with id ${quote(p.id)} is already in ${this.file}.`, 'Give the new patch a new id (newPatchId()).');
    this.apply({ kind: 'add', patch: p }, this.state);
    this.changes.push({ kind: 'add', patch: p });
    return p;
  }

  setEnabled(id: string, enabled: boolean): void {
    this.require(id);
    this.apply({ kind: 'enable', id, enabled }, this.state);
    this.changes.push({ kind: 'enable', id, enabled });
  }

  remove(id: string): void {
    this.require(id);
    this.apply({ kind: 'remove', id }, this.state);
    this.changes.push({ kind: 'remove', id });
  }

  private require(id: string): Patch {
    const p = this.get(id);
    if (!p) throw new NeuronpatchError(`No patch ${quote(id)} in ${this.file}.`, `It has ${this.state.patches.length} patches; list them to see their ids.`);
    return p;
  }

  /** Applies one change to a state; returns why it could not be applied, or null. */
  private apply(c: Change, state: PatchFile): string | null {
    const i = c.kind === 'add' ? -1 : state.patches.findIndex((p) => p.id === c.id);
    switch (c.kind) {
      case 'add':
        if (state.patches.some((p) => p.id === c.patch.id)) return `adding patch ${quote(c.patch.id)}: a patch with that id is already in the file`;
        state.patches.push(c.patch);
        return null;
      case 'enable':
        if (i < 0) return `${c.enabled ? 'enabling' : 'disabling'} patch ${quote(c.id)}: another program removed it from the file`;
        state.patches[i] = { ...state.patches[i], enabled: c.enabled };
        return null;
      case 'remove':
        if (i >= 0) state.patches.splice(i, 1); // already gone: the removal is done
        return null;
    }
  }

  /**
   * Writes the changes made since the last open or save, atomically. If the file changed on disk meanwhile,
   * re-reads it and replays the changes on top (see the module comment). No changes: writes nothing.
   * Saves run one at a time; changes made while a save is writing stay pending for the next one.
   */
  save(): Promise<SaveResult> {
    const run = this.saving.then(() => this.saveNow());
    this.saving = run.catch(() => undefined);
    return run;
  }

  private async saveNow(): Promise<SaveResult> {
    if (this.changes.length === 0) return { written: false, merged: false, dropped: [] };
    try {
      await fs.mkdir(path.dirname(this.file), { recursive: true });
    } catch (e) {
      throw new NeuronpatchError(`Cannot create the folder of ${this.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; nothing was written.`);
    }
    return withFileLock(this.file, (lock) => this.saveLocked(lock));
  }

  private async saveLocked(lock: HeldLock): Promise<SaveResult> {
    const disk = await readText(this.file);
    // From here to serialising, nothing awaits: the state and the change list hold still.
    const n = this.changes.length;
    let next = this.state;
    const dropped: string[] = [];
    const merged = disk !== this.base;
    if (merged) {
      try {
        next = disk === null ? PatchStore.empty(this.model) : parseFor(disk, this.file, this.model);
      } catch (e) {
        const err = e as NeuronpatchError;
        throw new NeuronpatchError(
          `${this.file} changed on disk since it was read, and the new content cannot be used, so your ` +
            `${n} unsaved change(s) were not written:\n${err.message}`,
          err.hint,
        );
      }
      for (const c of this.changes) {
        const why = this.apply(c, next);
        if (why) dropped.push(why);
      }
    }
    const text = serializePatchFile(next);
    const delay = testDelayMs();
    if (delay) await new Promise((r) => setTimeout(r, delay));
    lock.check();
    try {
      await writeFileAtomic(this.file, text);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new NeuronpatchError(`Cannot write ${this.file} (${code}); it was left as it was, and the unsaved change(s) are kept in memory.`);
    }
    const later = this.changes.slice(n);
    if (merged) for (const c of later) this.apply(c, next); // made while writing: already in this.state, not in next
    this.state = next;
    this.base = text;
    this.changes = later;
    return { written: true, merged, dropped };
  }
}
