// The one place that reads `workspace.getConfiguration('neuronpatch')`; everything else asks typed questions.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { DEFAULT_MARGIN, MAX_MARGIN } from '../engine/repair/index';
import type { RepairMethod } from '../engine/types';
import { EXECUTION_PROVIDERS, type ExecutionProvider } from '../engine/model/session';

export const SECTION = 'neuronpatch';

export class Config {
  constructor(private readonly extensionPath: string) {}

  private get cfg(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  /** The model folder to load: the setting resolved against the first workspace folder, or the embedded demo. */
  get modelFolder(): string {
    const raw = (this.cfg.get<string>('modelFolder') ?? '').trim();
    if (!raw) return this.demoModelFolder;
    const expanded = raw.startsWith('~/') ? path.join(process.env.HOME ?? '', raw.slice(2)) : raw;
    if (path.isAbsolute(expanded)) return expanded;
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    return path.resolve(ws ?? this.extensionPath, expanded);
  }

  /** Which dtype file of a multi-dtype model folder to load (transformers.js's names, or 'auto'). */
  get modelDtype(): string {
    return (this.cfg.get<string>('model.dtype') ?? 'auto').trim() || 'auto';
  }

  get demoModelFolder(): string {
    return path.join(this.extensionPath, 'models', 'demo');
  }

  get inlineCompletionsEnabled(): boolean {
    return this.cfg.get<boolean>('inlineCompletions.enabled') ?? true;
  }

  get maxNewTokens(): number {
    return clampInt(this.cfg.get<number>('maxNewTokens'), 1, 256, 24);
  }

  get debounceMs(): number {
    return clampInt(this.cfg.get<number>('inlineCompletions.debounceMs'), 0, 5000, 250);
  }

  get repairMethod(): RepairMethod {
    const m = this.cfg.get<string>('repair.method');
    return m === 'joint' || m === 'minimal' || m === 'keyed' ? m : 'keyed';
  }

  get repairMargin(): number {
    const v = this.cfg.get<number>('repair.margin');
    return typeof v === 'number' && Number.isFinite(v) ? Math.min(MAX_MARGIN, Math.max(0.25, v)) : DEFAULT_MARGIN;
  }

  /**
   * Share (0–1) of the workspace completions checked after a repair that a patch may change before the panel
   * warns and Apply asks to confirm; from `neuronpatch.repair.sideEffectWarning` (percent).
   */
  get warnChangedShare(): number {
    return clampInt(this.cfg.get<number>('repair.sideEffectWarning'), 0, 100, 25) / 100;
  }

  /** Completions may span lines after a line ending in `:` or an opening bracket (up to the block's dedent). */
  get multilineCompletions(): boolean {
    return this.cfg.get<boolean>('inlineCompletions.multiline') ?? true;
  }

  get regressionSampleSize(): number {
    return clampInt(this.cfg.get<number>('repair.regressionSampleSize'), 0, 500, 32);
  }

  /** Absolute path of the patch file, or null when it is relative and no folder is open. */
  get patchFile(): string | null {
    const raw = (this.cfg.get<string>('patchFile') ?? '').trim() || '.neuronpatch/patches.json';
    if (path.isAbsolute(raw)) return raw;
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    return ws ? path.join(ws, raw) : null;
  }

  /** The onnxruntime execution provider asked for (`cpu` unless set to one of EXECUTION_PROVIDERS). */
  get executionProvider(): ExecutionProvider {
    const v = this.cfg.get<string>('executionProvider') ?? 'cpu';
    return (EXECUTION_PROVIDERS as readonly string[]).includes(v) ? (v as ExecutionProvider) : 'cpu';
  }

  affectsModel(e: vscode.ConfigurationChangeEvent): boolean {
    return e.affectsConfiguration(`${SECTION}.modelFolder`) || e.affectsConfiguration(`${SECTION}.model.dtype`)
      || e.affectsConfiguration(`${SECTION}.executionProvider`);
  }

  affectsPatchFile(e: vscode.ConfigurationChangeEvent): boolean {
    return e.affectsConfiguration(`${SECTION}.patchFile`);
  }

  async setModelFolder(folder: string): Promise<void> {
    const target = vscode.workspace.workspaceFolders?.length
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
    await this.cfg.update('modelFolder', folder, target);
  }
}

function clampInt(v: number | undefined, lo: number, hi: number, dflt: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) return dflt;
  return Math.min(hi, Math.max(lo, Math.round(v)));
}
