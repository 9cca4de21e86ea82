// The status bar item: the model and the number of active patches (crossed out when completions are off); a click
// opens its menu (completions on/off, the model, the patches, the log).
import * as vscode from 'vscode';
import type { Ctx } from './ctx';
import { patchCount } from './progressText';

export function activateStatusBar(ctx: Ctx): void {
  const item = ctx.own(vscode.window.createStatusBarItem('neuronpatch.status', vscode.StatusBarAlignment.Right, 100));
  item.name = 'Neuron Patch';
  const update = (): void => {
    const m = ctx.models.current;
    const active = ctx.patches.active().length;
    const patches = patchCount(active, ctx.patches.list().length);
    item.backgroundColor = undefined;
    item.command = 'neuronpatch.statusMenu';
    switch (m.kind) {
      case 'idle':
        item.text = '$(circuit-board) Neuron Patch';
        item.tooltip = 'The model loads on the first completion. Click for the menu.';
        break;
      case 'loading':
        item.text = '$(loading~spin) Neuron Patch';
        item.tooltip = `Loading ${m.folder}…`;
        break;
      case 'ready':
        item.text = `$(circuit-board) ${m.model.info.name} · ${patches}`;
        item.tooltip = `${m.model.info.name} (${m.folder}): ${ctx.patches.list().length} patches, ${active} active. Click for the menu.`;
        if (ctx.patches.current.kind === 'invalid') {
          item.text = `$(warning) ${m.model.info.name} · patch file invalid`;
          item.backgroundColor = new vscode.ThemeColor('statusBarItem.warningBackground');
        }
        break;
      case 'failed':
        item.text = '$(error) Neuron Patch: no model';
        item.tooltip = `${m.folder} did not load: ${m.message}\nClick for the menu (pick another folder, show the log).`;
        item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
        break;
    }
    if (!ctx.config.inlineCompletionsEnabled) {
      item.text = item.text.replace(/^\$\([^)]*\)/, '$(circle-slash)');
      item.tooltip = `Inline completions are off. ${typeof item.tooltip === 'string' ? item.tooltip : ''}`;
    }
    item.accessibilityInformation = {
      label: `${item.text.replace(/\$\([^)]*\)\s*/g, '')}${ctx.config.inlineCompletionsEnabled ? '' : ', completions off'}`,
    };
  };
  ctx.own(ctx.models.onDidChange(update));
  ctx.own(ctx.patches.onDidChange(update));
  ctx.own(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('neuronpatch.inlineCompletions.enabled')) update();
    }),
  );
  update();
  item.show();
}
