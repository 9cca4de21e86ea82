// Context keys for `when` clauses: what exists now (patches, an active one, the patch file, an edited suggestion,
// the model's state), so empty states disable or hide commands instead of answering with an error.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { Ctx } from './ctx';

/** Sets the keys and keeps them up to date; returns the values last set (for tests: VS Code does not read them back). */
export function activateContextKeys(ctx: Ctx): Map<string, unknown> {
  const values = new Map<string, unknown>();
  const set = (key: string, value: unknown): Thenable<unknown> => {
    values.set(key, value);
    return vscode.commands.executeCommand('setContext', `neuronpatch.${key}`, value);
  };
  const patches = (): void => {
    const all = ctx.patches.list();
    const active = ctx.patches.active().length;
    void set('hasPatches', all.length > 0);
    void set('hasActivePatches', active > 0);
    void set('hasDisabledPatches', all.length > active);
    const file = ctx.patches.file;
    void set('hasPatchFile', !!file && fs.existsSync(file));
  };
  const model = (): void => void set('modelState', ctx.models.current.kind);
  const edit = (): void => {
    const t = ctx.edits.current;
    const doc = t && vscode.workspace.textDocuments.find((d) => d.uri.toString() === t.uri);
    void set('hasEditedSuggestion', !!(doc && ctx.edits.edited(doc)));
  };
  ctx.own(ctx.patches.onDidChange(patches));
  ctx.own(ctx.models.onDidChange(() => {
    model();
    patches();
  }));
  ctx.own(ctx.edits.onDidChangeCodeLenses(edit));
  patches();
  model();
  edit();
  return values;
}
