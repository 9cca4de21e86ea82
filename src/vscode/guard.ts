// The user's guard set: ghost-text completions they accepted and left as they were, recorded per workspace and
// model beside the patch file (.neuronpatch/guard-<model hash>.json; engine/repair/guardStore.ts), never sent
// anywhere. An accepted single-line completion is checked GUARD_DELAY_MS later (or when its document is saved):
// if the text at its place is still exactly what was accepted, the line is a guard line. A repair is then
// checked against the guard set, plus lines sampled from the workspace that the model completes right.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { GuardStore } from '../engine/repair/guardStore';
import type { GuardLine } from '../engine/repair/measures';
import type { AcceptedCompletion } from './completions';
import type { Config } from './config';
import type { Model } from './model';
import { promptAt } from './prompt';

const GUARD_DELAY_MS = 30_000;
/** Workspace lines harvested per repair (besides the user's accepted completions). */
const WORKSPACE_LINES = 40;

interface Pending {
  uri: string;
  offset: number;
  prompt: string;
  text: string;
  modelHash: string;
  source: string;
  timer: NodeJS.Timeout;
}

export class GuardRecorder implements vscode.Disposable {
  private pending: Pending[] = [];
  private readonly stores = new Map<string, Promise<GuardStore>>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly config: Config, private readonly log: vscode.LogOutputChannel) {
    this.disposables.push(vscode.workspace.onDidSaveTextDocument((d) => this.checkDocument(d.uri.toString())));
  }

  /** Where the guard files live: the patch file's folder (`.neuronpatch/`), or nowhere without a workspace. */
  private folder(): string | null {
    const file = this.config.patchFile;
    return file ? path.dirname(file) : null;
  }

  private store(modelHash: string): Promise<GuardStore> | undefined {
    const folder = this.folder();
    if (!folder) return undefined;
    const key = `${folder}\n${modelHash}`;
    let s = this.stores.get(key);
    if (!s) this.stores.set(key, (s = GuardStore.open(folder, modelHash)));
    return s;
  }

  /** An accepted suggestion: a single-line one is checked later for being left as it was. */
  accepted(a: AcceptedCompletion, modelHash: string | undefined): void {
    if (!modelHash || a.text.includes('\n') || !a.text.trim()) return;
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === a.uri);
    if (!doc) return;
    const pos = new vscode.Position(a.line, a.character);
    const p: Pending = {
      uri: a.uri, offset: doc.offsetAt(pos), prompt: promptAt(doc, pos), text: a.text, modelHash,
      source: `${vscode.workspace.asRelativePath(doc.uri)}:${a.line + 1}`,
      timer: setTimeout(() => void this.check(p), GUARD_DELAY_MS),
    };
    this.pending.push(p);
  }

  private checkDocument(uri: string): void {
    for (const p of this.pending.filter((x) => x.uri === uri)) {
      clearTimeout(p.timer);
      void this.check(p);
    }
  }

  /** Records the line if the accepted text is still there, unedited, up to the end of its line. */
  private async check(p: Pending): Promise<void> {
    this.pending = this.pending.filter((x) => x !== p);
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === p.uri);
    if (!doc || doc.isClosed || p.offset + p.text.length > doc.getText().length) return;
    const start = doc.positionAt(p.offset);
    const rest = doc.lineAt(start.line).text.slice(start.character);
    if (rest !== p.text || promptAt(doc, start) !== p.prompt) return;
    const store = await this.store(p.modelHash);
    if (store && (await store.add({ prompt: p.prompt, desired: p.text, source: `accepted at ${p.source}` }))) {
      this.log.info(`guard set: ${JSON.stringify(p.text)} kept as accepted (${store.size} lines for this model)`);
    }
  }

  /**
   * The guard lines of a repair: the user's accepted completions for this model, and lines of the sampled
   * workspace prompts the model completes exactly right.
   */
  async lines(model: Model, workspacePrompts: string[], signal?: AbortSignal): Promise<GuardLine[]> {
    const store = this.store(model.info.hash);
    const accepted = store ? (await store).list() : [];
    const sampled = workspacePrompts.length ? await model.harvestGuard(workspacePrompts, { max: WORKSPACE_LINES, signal }) : [];
    return [...accepted, ...sampled];
  }

  dispose(): void {
    for (const p of this.pending) clearTimeout(p.timer);
    this.pending = [];
    for (const d of this.disposables) d.dispose();
  }
}
