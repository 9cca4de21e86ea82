// Export a model folder with the active patches (and, from the panel, the repair shown there) baked in.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { exportPatched } from '../../engine/export/export';
import type { Patch } from '../../engine/types';
import type { CommandFactory, Ctx } from '../ctx';

/**
 * Asks for a folder (unless `outDir` is given) and exports into it; returns the folder, or undefined when the
 * user cancelled. `onPicked` is called with the folder once it is chosen, before the export starts.
 */
export async function exportPatchedModel(ctx: Ctx, extra: Patch[] = [], outDir?: string, onPicked?: (folder: string) => void): Promise<string | undefined> {
  const model = await ctx.models.require();
  const patches = [...ctx.patches.active(), ...extra.map((p) => ({ ...p, enabled: true }))];
  if (patches.length === 0) throw new Error('There is no active patch to export.');
  // Beside the workspace, not in it: a model folder in the workspace would be searched, indexed and sampled.
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const n = patches.length;
  const picked = outDir
    ? vscode.Uri.file(outDir)
    : await vscode.window.showSaveDialog({
        title: `Neuron Patch: export ${model.info.name} with ${n} patch${n === 1 ? '' : 'es'} as a new model folder`,
        defaultUri: vscode.Uri.file(path.join(ws ? path.dirname(ws) : model.info.folder ? path.dirname(model.info.folder) : '.', `${model.info.name}-patched`)),
        saveLabel: 'Export Here',
      });
  if (!picked) return undefined;
  const out = picked.fsPath;
  onPicked?.(out);
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Neuron Patch: exporting ${n} patch${n === 1 ? '' : 'es'}…` },
    () =>
      exportPatched({
        sourceFolder: model.info.folder,
        onnxPath: model.loaded.onnxPath,
        graph: model.loaded.graph,
        patches,
        outDir: out,
      }),
  );
  ctx.log.info(`exported ${model.info.name} with ${n} patches to ${out}`);
  void vscode.window
    .showInformationMessage(`Neuron Patch: patched model (${n} patch${n === 1 ? '' : 'es'}) written to ${out}.`, 'Reveal', 'Use This Model')
    .then(async (choice) => {
      if (choice === 'Reveal') await vscode.commands.executeCommand('revealFileInOS', picked);
      else if (choice === 'Use This Model') await ctx.config.setModelFolder(out);
    });
  return out;
}

/** `outDir` (for tests and other extensions): export there without asking. */
export const exportModel: CommandFactory = (ctx) => (args?: { outDir?: string }) => exportPatchedModel(ctx, [], args?.outDir);
