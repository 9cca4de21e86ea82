// The commands around the edges: the status-bar menu, turning completions on and off, repairing the suggestion
// on screen, a patch opened from the Patches view, Space on a row, and the walkthrough's demo file.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CommandFactory, Ctx } from '../ctx';
import { DEMO_FILE, DEMO_TEXT } from '../demo';
import { RepairPanel } from '../panel/panel';
import type { PatchItem } from '../patchTree';
import { describePosition, promptAt } from '../prompt';
import { repairAndShow, warmRegression } from '../repairFlow';
import { askDesired } from './repair';

interface MenuItem extends vscode.QuickPickItem {
  run: () => Thenable<unknown> | unknown;
}

/** The status bar item's menu; `pick` (tests) chooses an item by its label instead of asking. */
export const statusMenu: CommandFactory = (ctx) => async (args?: { pick?: string }) => {
  const on = ctx.config.inlineCompletionsEnabled;
  const m = ctx.models.current;
  const model = m.kind === 'ready' ? m.model.info.name : m.kind === 'failed' ? 'did not load' : m.kind === 'loading' ? 'loading…' : 'not loaded yet';
  const items: MenuItem[] = [
    {
      label: on ? '$(circle-slash) Turn Inline Completions Off' : '$(eye) Turn Inline Completions On',
      description: 'Ctrl+Alt+Shift+C',
      run: () => vscode.commands.executeCommand('neuronpatch.toggleCompletions'),
    },
    { label: '$(wrench) Repair Completion at Cursor', description: 'Ctrl+Alt+R', run: () => vscode.commands.executeCommand('neuronpatch.repairAtCursor') },
    { label: '$(list-tree) Show Patches', description: `${ctx.patches.active().length} of ${ctx.patches.list().length} active`, run: () => vscode.commands.executeCommand('neuronpatch.showPatches') },
    { label: '$(folder-opened) Pick Model Folder…', description: `now: ${model}`, run: () => vscode.commands.executeCommand('neuronpatch.pickModelFolder') },
    { label: '$(refresh) Reload Model', run: () => vscode.commands.executeCommand('neuronpatch.reloadModel') },
    { label: '$(output) Show Log', run: () => vscode.commands.executeCommand('neuronpatch.showLog') },
  ];
  const picked = args?.pick
    ? items.find((i) => i.label.replace(/\$\([^)]*\)\s*/, '') === args.pick)
    : await vscode.window.showQuickPick(items, { title: `Neuron Patch · ${model}`, placeHolder: 'What do you want to do?' });
  if (args?.pick && !picked) throw new Error(`No menu item "${args.pick}".`);
  await picked?.run();
  return items.map((i) => i.label.replace(/\$\([^)]*\)\s*/, ''));
};

export const toggleCompletions: CommandFactory = (ctx) => async () => {
  const on = !ctx.config.inlineCompletionsEnabled;
  await vscode.workspace.getConfiguration('neuronpatch').update('inlineCompletions.enabled', on, vscode.ConfigurationTarget.Global);
  ctx.log.info(`inline completions ${on ? 'on' : 'off'}`);
  vscode.window.setStatusBarMessage(`Neuron Patch: inline completions ${on ? 'on' : 'off'}`, 3000);
  return on;
};

/**
 * Repairs the ghost-text suggestion on screen: the completion is the one shown (no second decode), the desired text
 * asked for as with the repair at the cursor. Falls back to the repair at the cursor when nothing is shown here.
 */
export const repairSuggestion: CommandFactory = (ctx) => async (args?: { desired?: string }) => {
  const editor = vscode.window.activeTextEditor;
  if (!editor) throw new Error('Open a file with a suggestion showing.');
  const doc = editor.document;
  const pos = editor.selection.active;
  const shown = ctx.completions.shownAt(doc, pos);
  if (shown === undefined) return vscode.commands.executeCommand('neuronpatch.repairAtCursor', args);
  const prompt = promptAt(doc, pos);
  await vscode.commands.executeCommand('editor.action.inlineSuggest.hide');
  let desired = args?.desired;
  if (desired === undefined) {
    const warm = warmRegression(ctx, doc, pos.line);
    desired = await askDesired(prompt, shown);
    if (desired === undefined || desired === shown) warm.stop();
  }
  if (desired === undefined || desired === shown) return undefined;
  return repairAndShow(ctx, { doc, line: pos.line, prompt, desired, method: ctx.config.repairMethod, source: describePosition(doc, pos) });
};

function patchOf(ctx: Ctx, arg: PatchItem | string | undefined) {
  if (typeof arg === 'string') return ctx.patches.list().find((p) => p.id === arg);
  return arg?.patch ?? ctx.patchTree?.focused();
}

/** A patch from the Patches view, read-only in the panel, with a button to go where it was made. */
export const openPatch: CommandFactory = (ctx) => (arg?: PatchItem | string) => {
  const p = patchOf(ctx, arg);
  if (!p) throw new Error('Select a patch in the Patches view.');
  RepairPanel.showSaved(ctx, p);
};

/** Space on a row of the Patches view: enables or disables it. */
export const togglePatch: CommandFactory = (ctx) => async (arg?: PatchItem | string) => {
  const p = patchOf(ctx, arg);
  if (!p) return;
  // A patch held back (from the repository) is off whatever its flag says: Space accepts it, as the eye does.
  const held = ctx.patches.provenance(p) === 'repository';
  await ctx.patches.setEnabled(p.id, held ? true : !p.enabled);
};

export const goToPatchSource: CommandFactory = (ctx) => async (arg?: PatchItem | string) => {
  const p = patchOf(ctx, arg);
  const m = p?.case.source && /^(.*):(\d+):(\d+)$/.exec(p.case.source);
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
  if (!m || !ws) throw new Error('This patch does not say where it was made (patches from the command line do not).');
  const pos = new vscode.Position(Number(m[2]) - 1, Number(m[3]) - 1);
  await vscode.window.showTextDocument(vscode.Uri.joinPath(ws, m[1]), { selection: new vscode.Range(pos, pos) });
};

/** Writes (or opens) the demo file in the workspace and puts the cursor where the model goes wrong. */
export const openDemo: CommandFactory = (ctx) => async () => {
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  let doc: vscode.TextDocument;
  if (ws) {
    const file = path.join(ws, DEMO_FILE);
    if (!fs.existsSync(file)) fs.writeFileSync(file, DEMO_TEXT);
    doc = await vscode.workspace.openTextDocument(file);
  } else {
    doc = await vscode.workspace.openTextDocument({ language: 'python', content: DEMO_TEXT });
  }
  const editor = await vscode.window.showTextDocument(doc, { preview: false });
  const end = doc.lineAt(doc.lineCount - 1).range.end;
  editor.selection = new vscode.Selection(end, end);
  ctx.log.info(`demo file opened: ${doc.uri.toString()}`);
  await vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
  return doc.uri.fsPath;
};
