// The extension's table of contents: build the context, then one line per command, view and provider.
// The work happens in src/engine; everything here is glue.
import '../engine/onnx/privacy'; // first: onnxruntime's telemetry off before anything loads it
import * as vscode from 'vscode';
import { completionAccepted, dismissEdit, repairAtCursor, repairFromEdit } from './commands/repair';
import { deletePatch, disablePatch, enablePatch, revealPatchFile, showPatches } from './commands/patches';
import { exportModel } from './commands/exportModel';
import { pickModelFolder, reloadModel, showLog } from './commands/model';
import { Ctx } from './ctx';
import { RepairPanel } from './panel/panel';
import { PatchTree } from './patchTree';
import { activateStatusBar } from './statusBar';
import { activateContextKeys } from './contextKeys';
import { goToPatchSource, openDemo, openPatch, repairSuggestion, statusMenu, toggleCompletions, togglePatch } from './commands/surface';

/** What activate returns: the context, for the extension-host tests. */
export interface Api {
  ctx: Ctx;
}

export function activate(context: vscode.ExtensionContext): Api {
  const ctx = new Ctx(context);
  context.subscriptions.push(ctx);

  ctx.registerCommand('repairAtCursor', repairAtCursor);
  ctx.registerCommand('repairFromEdit', repairFromEdit);
  ctx.registerCommand('dismissEdit', dismissEdit);
  ctx.registerCommand('completionAccepted', completionAccepted);
  ctx.registerCommand('enablePatch', enablePatch);
  ctx.registerCommand('disablePatch', disablePatch);
  ctx.registerCommand('deletePatch', deletePatch);
  ctx.registerCommand('revealPatchFile', revealPatchFile);
  ctx.registerCommand('showPatches', showPatches);
  ctx.registerCommand('exportModel', exportModel);
  ctx.registerCommand('pickModelFolder', pickModelFolder);
  ctx.registerCommand('reloadModel', reloadModel);
  ctx.registerCommand('showLog', showLog);
  ctx.registerCommand('statusMenu', statusMenu);
  ctx.registerCommand('toggleCompletions', toggleCompletions);
  ctx.registerCommand('repairSuggestion', repairSuggestion);
  ctx.registerCommand('openPatch', openPatch);
  ctx.registerCommand('togglePatch', togglePatch);
  ctx.registerCommand('goToPatchSource', goToPatchSource);
  ctx.registerCommand('openDemo', openDemo);

  const documents = [{ scheme: 'file' }, { scheme: 'untitled' }, { scheme: 'vscode-remote' }];
  ctx.own(vscode.languages.registerInlineCompletionItemProvider(documents, ctx.completions));
  ctx.own(vscode.languages.registerCodeLensProvider(documents, ctx.edits));
  ctx.patchTree = ctx.own(new PatchTree(ctx));
  ctx.contextKeys = activateContextKeys(ctx);
  // The repair panel comes back after a window reload, as it was (its webview keeps its state and scroll).
  ctx.own(
    vscode.window.registerWebviewPanelSerializer(RepairPanel.viewType, {
      deserializeWebviewPanel: async (panel, saved) => RepairPanel.revive(ctx, panel, saved),
    }),
  );
  activateStatusBar(ctx);

  ctx.own(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (ctx.config.affectsModel(e)) {
        ctx.log.info(`model folder setting changed: ${ctx.config.modelFolder}`);
        void ctx.models.reset().then(() => ctx.models.get({ quiet: false }).catch(() => undefined));
      }
    }),
  );
  ctx.log.info(`activated; model folder ${ctx.config.modelFolder}, patch file ${ctx.config.patchFile ?? '(no folder open)'}`);
  return { ctx };
}

export function deactivate(): void {
  // Ctx is disposed through context.subscriptions.
}
