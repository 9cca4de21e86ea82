// The repair commands: at the cursor (desired text typed or selected), and from an edited suggestion.
import * as vscode from 'vscode';
import type { AcceptedCompletion } from '../completions';
import type { CommandFactory } from '../ctx';
import { fromVisible, gluesOnto, visibleEdges } from '../panel/messages';
import { abortSignal, describePosition, promptAt } from '../prompt';
import { repairAndShow, warmRegression } from '../repairFlow';

/**
 * Optional arguments, for keybindings, other extensions and tests: the desired text (skips the input box), the
 * method, and a token that cancels the repair like the panel's Cancel button (or Escape in the panel).
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
  const prompt = promptAt(doc, pos);
  let desired = args?.desired;
  if (desired === undefined) {
    const warm = warmRegression(ctx, doc, pos.line);
    desired = await askDesired(prompt, completion, selected);
    if (desired === undefined) warm.stop();
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
    prompt,
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
  if ('reason' in edited) throw new Error(edited.reason);
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

/**
 * Asks for the desired text in an input box prefilled with the completion, its leading and trailing whitespace
 * shown as ␣ and ⇥ (read back as spaces and tabs). While the typed text would glue onto the word before the
 * cursor ("return" + "a + b"), the box says so; on Enter it then offers the spaced version first.
 * Undefined when the user gave up.
 */
export async function askDesired(prompt: string, completion: string, selected?: string): Promise<string | undefined> {
  const box = vscode.window.createInputBox();
  box.title = 'Neuron Patch: Repair Completion at Cursor';
  box.prompt = `The model completes this with "${visibleEdges(completion)}". What should it be? (␣ is a space, ⇥ a tab)`;
  box.value = visibleEdges(selected ?? completion);
  box.placeholder = 'the text the model should produce here';
  box.ignoreFocusOut = true;
  const validate = (): void => {
    const text = fromVisible(box.value);
    const word = gluesOnto(prompt, text, completion);
    if (text === '') box.validationMessage = 'Type the text the model should complete here.';
    else if (word !== undefined)
      box.validationMessage = {
        message: `"${visibleEdges(text)}" would glue onto "${cut(word)}" (the editor would show "${cut(word)}${cut(text)}"). Enter offers "${visibleEdges(` ${text}`)}" instead.`,
        severity: vscode.InputBoxValidationSeverity.Warning,
      };
    else box.validationMessage = undefined;
  };
  validate();
  const typed = await new Promise<string | undefined>((resolve) => {
    box.onDidChangeValue(validate);
    box.onDidAccept(() => {
      const text = fromVisible(box.value);
      if (text === '') return;
      resolve(text);
      box.hide();
    });
    box.onDidHide(() => resolve(undefined));
    box.show();
  });
  box.dispose();
  if (typed === undefined) return undefined;
  const word = gluesOnto(prompt, typed, completion);
  if (word === undefined) return typed;
  const spaced = ` ${typed}`;
  const pick = await vscode.window.showQuickPick(
    [
      { label: `Use ${visibleEdges(spaced)}`, description: 'with a space before it', detail: `The editor shows "${cut(word)} ${cut(typed)}".`, text: spaced },
      { label: `Keep ${visibleEdges(typed)} as typed`, description: `glued onto "${cut(word)}"`, detail: `The editor shows "${cut(word)}${cut(typed)}".`, text: typed },
    ],
    { title: `Neuron Patch: "${visibleEdges(typed)}" glues onto "${cut(word)}"`, placeHolder: 'Teach the model the spaced version?', ignoreFocusOut: true },
  );
  return pick?.text;
}

function cut(s: string, n = 40): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
