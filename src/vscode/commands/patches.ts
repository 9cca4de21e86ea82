// Commands on patches, from the Patches view (item argument), the palette (a quick pick) or tests (an id).
import * as vscode from 'vscode';
import type { Patch } from '../../engine/types';
import type { CommandFactory, Ctx } from '../ctx';
import type { PatchItem } from '../patchTree';

type PatchArg = PatchItem | string | undefined;

async function pickPatch(ctx: Ctx, arg: PatchArg, filter: (p: Patch) => boolean, verb: string): Promise<Patch | undefined> {
  if (typeof arg === 'string') {
    const p = ctx.patches.list().find((x) => x.id === arg);
    if (!p) throw new Error(`No patch with id ${arg}.`);
    return p;
  }
  if (arg?.patch) return arg.patch;
  const candidates = ctx.patches.list().filter(filter);
  if (candidates.length === 0) {
    void vscode.window.showInformationMessage(`Neuron Patch: no patch to ${verb}.`);
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    candidates.map((p) => ({ label: p.case.desired, description: `${p.method} · ${p.edits.length} neurons`, detail: p.id, p })),
    { title: `Neuron Patch: ${verb} a patch` },
  );
  return picked?.p;
}

export const enablePatch: CommandFactory = (ctx) => async (arg: PatchArg) => {
  const p = await pickPatch(ctx, arg, (x) => !x.enabled, 'enable');
  if (p) await ctx.patches.setEnabled(p.id, true);
};

export const disablePatch: CommandFactory = (ctx) => async (arg: PatchArg) => {
  const p = await pickPatch(ctx, arg, (x) => x.enabled, 'disable');
  if (p) await ctx.patches.setEnabled(p.id, false);
};

export const deletePatch: CommandFactory = (ctx) => async (arg: PatchArg, opts?: { confirm?: boolean }) => {
  const p = await pickPatch(ctx, arg, () => true, 'delete');
  if (!p) return;
  if (opts?.confirm !== false) {
    const ok = await vscode.window.showWarningMessage(
      `Delete the patch that makes the model complete ${JSON.stringify(p.case.desired)}?`,
      { modal: true },
      'Delete',
    );
    if (ok !== 'Delete') return;
  }
  await ctx.patches.remove(p.id);
};

export const revealPatchFile: CommandFactory = (ctx) => async () => {
  const s = ctx.patches.current;
  if (s.kind === 'invalid') return ctx.patches.reportInvalid();
  const file = ctx.patches.file;
  if (!file) throw new Error('Open a folder: the patch file lives in the workspace.');
  try {
    await vscode.workspace.fs.stat(vscode.Uri.file(file));
  } catch {
    throw new Error(`There is no patch file yet (${file}): it is written when you apply the first patch.`);
  }
  await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: false });
  await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(file));
};

export const showPatches: CommandFactory = () => () =>
  vscode.commands.executeCommand('neuronpatch.patches.focus');
