// The repair commands: at the cursor (desired text typed or selected), and from an edited suggestion.
import * as vscode from 'vscode';
import type { AcceptedCompletion } from '../completions';
import type { CommandFactory } from '../ctx';
import { abortSignal, describePosition, promptAt } from '../prompt';
import { repairAndShow } from '../repairFlow';

/**
 * Optional arguments, for keybindings, other extensions and tests: the desired text (skips the input box), the
 * method, and a token that cancels the repair like the notification's Cancel button.
 */
export interface RepairArgs {
  desired?: string;
  method?: 'minimal' | 'joint';
  cancel?: vscode.CancellationToken;
  /** Called with each progress message of the repair (what the notification shows). */
  onProgress?: (message: string) => void;
}

export const repairAtCursor: CommandFactory = (ctx) => async (args?: RepairArgs) => {
  const editor = vscode.window.activeTextEditor;
  if (!editor) throw new Error('Open a file and place the cursor where the completion is wrong.');
  const doc = editor.document;
  const sel = editor.selection;
  const pos = sel.start;
  const completion = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'Neuron Patch: completing at the cursor…', cancellable: true },
    async (_p, token) => {
      const a = abortSignal(token);
      try {
        return await ctx.completions.completeNow(doc, pos, a.signal);
      } catch (e) {
        if (token.isCancellationRequested) return undefined;
        throw e;
      } finally {
        a.dispose();
      }
    },
  );
  if (completion === undefined) return;
  const selected = sel.isEmpty ? undefined : doc.getText(sel);
  let desired = args?.desired;
  if (desired === undefined) {
    desired = await vscode.window.showInputBox({
      title: 'Neuron Patch: Repair Completion at Cursor',
      prompt: `The model completes this with ${JSON.stringify(completion)}. What should it be?`,
      value: selected ?? completion,
      placeHolder: 'the text the model should produce here',
      ignoreFocusOut: true,
      validateInput: (v) => (v === '' ? 'Type the text the model should complete here.' : undefined),
    });
  }
  if (desired === undefined) return;
  if (desired === completion) {
    void vscode.window.showInformationMessage(
      `Neuron Patch: the model already completes this with ${JSON.stringify(desired)}; nothing to repair.`,
    );
    return;
  }
  await repairAndShow(ctx, {
    doc,
    line: pos.line,
    prompt: promptAt(doc, pos),
    desired,
    method: args?.method ?? ctx.config.repairMethod,
    source: describePosition(doc, pos),
  }, args?.cancel, args?.onProgress);
};

export const repairFromEdit: CommandFactory = (ctx) => async () => {
  const tracked = ctx.edits.current;
  if (!tracked) throw new Error('No edited suggestion to learn from: accept a suggestion, edit it, then run this.');
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === tracked.uri);
  const edited = doc && ctx.edits.edited(doc);
  if (!doc || !edited) throw new Error('The accepted suggestion has not been edited.');
  await repairAndShow(ctx, {
    doc,
    line: edited.start.line,
    prompt: promptAt(doc, edited.start),
    desired: edited.desired,
    method: ctx.config.repairMethod,
    source: describePosition(doc, edited.start),
  });
};

export const dismissEdit: CommandFactory = (ctx) => () => ctx.edits.clear();

/** Run by VS Code after a ghost-text suggestion was accepted (the item's command). */
export const completionAccepted: CommandFactory = (ctx) => (a: AcceptedCompletion) => {
  ctx.log.info(`suggestion accepted at ${a.line + 1}:${a.character + 1}: ${JSON.stringify(a.text)}`);
  ctx.edits.accepted(a);
  void ctx.models.get({ quiet: true }).then((m) => ctx.guard.accepted(a, m?.info.hash));
};
