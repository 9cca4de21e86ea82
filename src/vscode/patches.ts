// The patch file of the workspace, opened through the engine's PatchStore for the loaded model.
// An invalid file (hand-edited into bad JSON, or failing validation) is reported with the file opened at the
// problem, and is never written while it is invalid: every change is refused until the user fixes it.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { patchFileFor } from '../engine/patches/binding';
import { savePatchTo } from '../engine/patches/rescue';
import { PatchStore } from '../engine/patches/store';
import type { ModelInfo, Patch } from '../engine/types';
import type { Config } from './config';
import { errorMessage, firstLine, type ModelHost } from './model';
import type { PatchTrust } from './trust';
import type { Provenance } from './trustPolicy';

export type PatchState =
  | { kind: 'none'; reason: string }
  /** `displaced`: the file the settings name holds another model's patches, so this model's are in `file` beside it. */
  | { kind: 'ready'; file: string; store: PatchStore; displaced?: { named: string; model: string } }
  | { kind: 'invalid'; file: string; message: string; at: { line: number; character: number } };

export class PatchHost implements vscode.Disposable {
  private state: PatchState = { kind: 'none', reason: 'The model is not loaded yet.' };
  private model: ModelInfo | undefined;
  private watcher: vscode.FileSystemWatcher | undefined;
  private lastWritten: string | undefined;
  /** The file opened for the loaded model (the named one, or its sibling for this model), once opened. */
  private chosen: string | null = null;
  /** Named files already said to hold another model's patches (said once per file and model). */
  private readonly toldDisplaced = new Set<string>();
  private opening: Promise<void> = Promise.resolve();
  /** Bumped on every change of the active set, so completion caches know when to forget. */
  version = 0;
  private readonly changed = new vscode.EventEmitter<PatchState>();
  readonly onDidChange = this.changed.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly config: Config,
    models: ModelHost,
    private readonly log: vscode.LogOutputChannel,
    /** Which patches may be applied: workspace trust, and the patches made or accepted on this machine. */
    private readonly trust: PatchTrust,
  ) {
    this.disposables.push(
      vscode.workspace.onDidGrantWorkspaceTrust(() => {
        this.setState(this.state);
        void this.offerRepositoryPatches();
      }),
      models.onDidChange((s) => {
        if (s.kind === 'ready') {
          this.model = s.model.info;
          void this.reopen();
        } else if (this.model) {
          this.model = undefined;
          this.setState({ kind: 'none', reason: 'The model is not loaded.' });
        }
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (config.affectsPatchFile(e)) void this.reopen();
      }),
    );
  }

  get current(): PatchState {
    return this.state;
  }

  get file(): string | null {
    return this.chosen ?? this.config.patchFile;
  }

  list(): Patch[] {
    return this.state.kind === 'ready' ? this.state.store.list() : [];
  }

  /** The patches applied to completions and repairs: enabled, and made or accepted here in a trusted workspace. */
  active(): Patch[] {
    return this.state.kind === 'ready' && this.model ? this.trust.applied(this.state.store.list(), this.model.hash) : [];
  }

  /** Whether a listed patch is applied, disabled, or held back (restricted mode, or arrived with the repository). */
  provenance(p: Patch): Provenance {
    return this.model ? this.trust.provenance(p, this.model.hash) : 'restricted';
  }

  /** Accepts the patches that arrived with the repository (the user chose to apply them). */
  async acceptRepositoryPatches(ids?: string[]): Promise<void> {
    if (!this.model) return;
    const held = this.list().filter((p) => this.provenance(p) === 'repository' && (!ids || ids.includes(p.id)));
    await this.trust.remember(held, this.model.hash);
    this.log.info(`accepted ${held.length} patch(es) that came with the workspace: ${held.map((p) => p.id).join(', ')}`);
    this.setState(this.state);
  }

  /** Tells the user about patches held back, once per open: restricted mode, or patches from the repository. */
  private async offerRepositoryPatches(): Promise<void> {
    const s = this.state;
    if (s.kind !== 'ready' || !this.model) return;
    const rel = vscode.workspace.asRelativePath(s.file);
    if (!this.trust.trusted) {
      const n = s.store.list().length;
      if (n) this.log.warn(`Restricted Mode: the ${n} patch(es) of ${rel} are not applied until the workspace is trusted`);
      return;
    }
    const held = s.store.list().filter((p) => this.provenance(p) === 'repository' && p.enabled);
    if (!held.length) return;
    this.log.warn(`${held.length} patch(es) in ${rel} came with the workspace (not made on this machine): not applied until accepted`);
    const choice = await vscode.window.showWarningMessage(
      `Neuron Patch: ${held.length} patch(es) in ${rel} came with this workspace, not from a repair on this machine. ` +
        `They change the model's completions and are not applied until you accept them.`,
      'Apply Them', 'Review File',
    );
    if (choice === 'Apply Them') await this.acceptRepositoryPatches(held.map((p) => p.id));
    else if (choice === 'Review File') await vscode.window.showTextDocument(vscode.Uri.file(s.file), { preview: false });
  }

  /** Waits for an open in flight (tests, and commands that run right after the model loads). */
  settled(): Promise<void> {
    return this.opening;
  }

  /** Opens (again) the patch file the settings name, for the loaded model. */
  reopen(opts: { reveal?: boolean } = { reveal: true }): Promise<void> {
    this.opening = this.opening.then(() => this.open(opts.reveal ?? true));
    return this.opening;
  }

  private async open(reveal: boolean): Promise<void> {
    const named = this.config.patchFile;
    this.chosen = null;
    this.watch(named);
    if (!this.model) return this.setState({ kind: 'none', reason: 'The model is not loaded yet.' });
    if (!named) return this.setState({ kind: 'none', reason: 'Open a folder to keep patches in it.' });
    // A file of another model (the user switched models) stays as it is; this model's patches go beside it.
    const { file, displacedBy } = await patchFileFor(named, this.model);
    this.chosen = file;
    if (file !== named) this.watch(file);
    const displaced = displacedBy ? { named, model: displacedBy.name || `hash ${displacedBy.hash.slice(0, 12)}` } : undefined;
    try {
      const store = await PatchStore.open(file, this.model);
      this.lastWritten = await readOrUndefined(file);
      this.log.info(`patch file ${file}: ${store.list().length} patches, ${store.active().length} active`);
      if (displaced) this.sayDisplaced(displaced.named, displaced.model, file);
      this.setState({ kind: 'ready', file, store, displaced });
      if (store.swept.length) this.log.info(`removed ${store.swept.length} temp file(s) left by writers that died: ${store.swept.join(', ')}`);
      void this.offerRepositoryPatches();
    } catch (e) {
      const message = errorMessage(e);
      const text = (await readOrUndefined(file)) ?? '';
      const at = locateProblem(text, message);
      this.log.error(`patch file ${file} is invalid (line ${at.line + 1}, column ${at.character + 1}): ${message}`);
      this.setState({ kind: 'invalid', file, message, at });
      if (reveal) void this.reportInvalid();
    }
  }

  private sayDisplaced(named: string, owner: string, file: string): void {
    const model = this.model?.name ?? '';
    const line = `${vscode.workspace.asRelativePath(named)} holds the patches of model ${JSON.stringify(owner)}; ` +
      `those of ${JSON.stringify(model.slice(0, 80))} are kept in ${vscode.workspace.asRelativePath(file)} beside it (both files are left as they are)`;
    this.log.info(line);
    const key = `${named}\n${model}`;
    if (this.toldDisplaced.has(key)) return;
    this.toldDisplaced.add(key);
    void vscode.window.showInformationMessage(`Neuron Patch: ${line}.`);
  }

  /** Shows the invalid file at the problem, with the error. */
  async reportInvalid(): Promise<void> {
    const s = this.state;
    if (s.kind !== 'invalid') return;
    const pos = new vscode.Position(s.at.line, s.at.character);
    try {
      await vscode.window.showTextDocument(vscode.Uri.file(s.file), {
        selection: new vscode.Range(pos, pos),
        preview: false,
      });
    } catch (e) {
      this.log.warn(`could not open ${s.file}: ${errorMessage(e)}`);
    }
    void vscode.window.showErrorMessage(
      `Neuron Patch: the patch file ${vscode.workspace.asRelativePath(s.file)} is invalid (line ${s.at.line + 1}): ` +
        `${firstLine(s.message)} It was left as it is; fix it and save, and the patches come back.`,
    );
  }

  private watch(file: string | null): void {
    this.watcher?.dispose();
    this.watcher = undefined;
    if (!file) return;
    // Watch from the workspace folder when the file is inside it: its own folder may not exist yet.
    const folder = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(file));
    const pattern = folder
      ? new vscode.RelativePattern(folder, path.relative(folder.uri.fsPath, file).split(path.sep).join('/'))
      : new vscode.RelativePattern(vscode.Uri.file(path.dirname(file)), path.basename(file));
    const w = vscode.workspace.createFileSystemWatcher(pattern);
    const onChange = async (): Promise<void> => {
      const text = await readOrUndefined(file);
      if (text !== undefined && text === this.lastWritten && this.state.kind === 'ready') return;
      this.log.info(`patch file ${file} changed on disk: reloading`);
      await this.reopen();
    };
    w.onDidChange(onChange);
    w.onDidCreate(onChange);
    w.onDidDelete(onChange);
    this.watcher = w;
  }

  private requireStore(): PatchStore {
    const s = this.state;
    if (s.kind === 'ready') return s.store;
    if (s.kind === 'invalid')
      throw new Error(`The patch file ${s.file} is invalid (line ${s.at.line + 1}): fix it first; it is not overwritten.`);
    throw new Error(s.reason);
  }

  /**
   * Adds a patch made on this machine and saves. If the save fails, the patch is not lost: the error is shown
   * with Save As…, which writes it to a patch file of the user's choice (thrown again when declined).
   */
  async add(p: Patch): Promise<void> {
    const store = this.requireStore();
    const added = store.add(p);
    if (this.model) await this.trust.remember([added], this.model.hash);
    try {
      await this.save(store, `added patch ${p.id}`);
    } catch (e) {
      const message = errorMessage(e);
      this.log.error(`could not save patch ${p.id} into ${store.file}: ${message}`);
      const choice = await vscode.window.showErrorMessage(
        `Neuron Patch: the repair's patch could not be saved into ${vscode.workspace.asRelativePath(store.file)}: ${firstLine(message)} Save it to another file?`,
        'Save As…',
      );
      const target = choice && this.model ? await vscode.window.showSaveDialog({ filters: { 'Patch file': ['json'] }, saveLabel: 'Save Patch' }) : undefined;
      if (!target || !this.model) throw e;
      const saved = await savePatchTo(target.fsPath, this.model, added);
      this.log.info(`patch ${p.id} saved to ${saved} instead`);
      void vscode.window.showInformationMessage(`Neuron Patch: the patch was saved to ${saved}.`);
    }
  }

  async setEnabled(id: string, on: boolean): Promise<void> {
    const store = this.requireStore();
    const p = store.get(id);
    // Turning on a patch that came with the repository is the user accepting it.
    if (on && p && this.model && this.provenance(p) === 'repository') await this.trust.remember([p], this.model.hash);
    store.setEnabled(id, on);
    await this.save(store, `${on ? 'enabled' : 'disabled'} patch ${id}`);
  }

  async remove(id: string): Promise<void> {
    const store = this.requireStore();
    store.remove(id);
    await this.save(store, `deleted patch ${id}`);
  }

  private async save(store: PatchStore, what: string): Promise<void> {
    const file = (this.state as { file: string }).file;
    let result;
    try {
      result = await store.save();
    } catch (e) {
      // The file became invalid on disk (or unreadable): nothing was written; show it as invalid.
      void this.reopen();
      throw e;
    }
    for (const d of result.dropped) this.log.warn(`patch file ${file}: ${d}`);
    if (result.merged) this.log.info(`patch file ${file} had changed on disk: changes replayed on top of it`);
    this.lastWritten = await readOrUndefined(file);
    this.log.info(`${what}; ${store.active().length} of ${store.list().length} patches active (${file})`);
    this.setState(this.state);
  }

  private setState(s: PatchState): void {
    this.state = s;
    this.version++;
    this.changed.fire(s);
  }

  dispose(): void {
    this.watcher?.dispose();
    this.changed.dispose();
    for (const d of this.disposables) d.dispose();
  }
}

async function readOrUndefined(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Where in the file the problem is (0-based line and character): the JSON syntax error's position when the text
 * does not parse; otherwise the patch the validation message names (`patches[3]`, or a quoted patch id).
 */
export function locateProblem(text: string, message: string): { line: number; character: number } {
  let offset = 0;
  const engineAt = /:(\d+):(\d+): not valid JSON/.exec(message);
  if (engineAt) return { line: Number(engineAt[1]) - 1, character: Math.max(0, Number(engineAt[2]) - 1) };
  try {
    JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    const idx = /patches\[(\d+)\]/.exec(message);
    if (idx) {
      offset = nthPatchOffset(text, Number(idx[1]));
    } else {
      for (const m of message.matchAll(/"([^"\n]{1,200})"|'([^'\n]{1,200})'/g)) {
        const needle = JSON.stringify(m[1] ?? m[2]);
        const at = text.indexOf(needle);
        if (at >= 0) {
          offset = at;
          break;
        }
      }
    }
  } catch (e) {
    const msg = errorMessage(e);
    const lc = /line (\d+) column (\d+)/.exec(msg);
    if (lc) return { line: Number(lc[1]) - 1, character: Number(lc[2]) - 1 };
    const pos = /position (\d+)/.exec(msg);
    offset = pos ? Number(pos[1]) : text.length;
  }
  return offsetToPosition(text, offset);
}

function nthPatchOffset(text: string, n: number): number {
  const start = text.indexOf('"patches"');
  if (start < 0) return 0;
  let at = start;
  for (let i = 0; i <= n; i++) {
    const next = text.indexOf('"id"', at + 1);
    if (next < 0) return at;
    at = next;
  }
  return at;
}

function offsetToPosition(text: string, offset: number): { line: number; character: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length - 1, character: lines[lines.length - 1].length };
}
