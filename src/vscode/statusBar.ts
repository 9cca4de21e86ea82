// The status bar item: the model and the number of active patches; opens the Patches view.
import * as vscode from 'vscode';
import type { Ctx } from './ctx';

export function activateStatusBar(ctx: Ctx): void {
  const item = ctx.own(vscode.window.createStatusBarItem('neuronpatch.status', vscode.StatusBarAlignment.Right, 100));
  item.name = 'Neuron Patch';
  const update = (): void => {
    const m = ctx.models.current;
    const active = ctx.patches.active().length;
    const patches = `${active} patch${active === 1 ? '' : 'es'}`;
    item.backgroundColor = undefined;
    item.command = 'neuronpatch.showPatches';
    switch (m.kind) {
      case 'idle':
        item.text = '$(circuit-board) Neuron Patch';
        item.tooltip = 'The model loads on the first completion. Click to show the patches.';
        break;
      case 'loading':
        item.text = '$(loading~spin) Neuron Patch';
        item.tooltip = `Loading ${m.folder}…`;
        break;
      case 'ready':
        item.text = `$(circuit-board) ${m.model.info.name} · ${patches}`;
        item.tooltip = `${m.model.info.name} (${m.folder}): ${ctx.patches.list().length} patches, ${active} active. Click to show them.`;
        if (ctx.patches.current.kind === 'invalid') {
          item.text = `$(warning) ${m.model.info.name} · patch file invalid`;
          item.backgroundColor = new vscode.ThemeColor('statusBarItem.warningBackground');
        }
        break;
      case 'failed':
        item.text = '$(error) Neuron Patch: no model';
        item.tooltip = `${m.folder} did not load: ${m.message}\nClick to pick another folder.`;
        item.command = 'neuronpatch.pickModelFolder';
        item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
        break;
    }
    item.accessibilityInformation = { label: item.text.replace(/\$\([^)]*\)\s*/g, '') };
  };
  ctx.own(ctx.models.onDidChange(update));
  ctx.own(ctx.patches.onDidChange(update));
  update();
  item.show();
}
