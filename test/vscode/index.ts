// The extension-host suite (extensionTestsPath): commands, settings, completions, the repair panel and the patch
// store, against the real VS Code API and the real demo model. Runs under code-server (test/e2e/run.mjs --suite)
// and under @vscode/test-electron (test/vscode/electron.mjs). The workspace holds sample.py (the prompt of a
// case the demo model gets wrong) and .e2e-case.json ({ file, prompt, desired, before }).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Api } from '../../src/vscode/extension';
import type { Ctx } from '../../src/vscode/ctx';
import { isWebviewMessage } from '../../src/vscode/panel/messages';
import { assert, assertEqual, runTests, waitFor } from './harness';

const EXT_ID = 'neuronpatch.neuronpatch';

interface E2eCase {
  file: string;
  prompt: string;
  desired: string;
  /** The demo model's completion of the prompt (from the CLI), when the runner computed it. */
  before?: string;
}

function workspace(): string {
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  if (!ws) throw new Error('the suite needs a folder open (the runner opens the prepared workspace)');
  return ws;
}

export async function run(): Promise<void> {
  let ctx!: Ctx;
  let extension!: vscode.Extension<Api>;
  const ws = workspace();
  const kase = JSON.parse(fs.readFileSync(path.join(ws, '.e2e-case.json'), 'utf8')) as E2eCase;
  const sample = vscode.Uri.file(path.join(ws, kase.file));
  let patchId = '';
  let before = kase.before ?? '';

  const complete = async (doc: vscode.TextDocument, token = new vscode.CancellationTokenSource().token): Promise<string | undefined> => {
    const pos = doc.lineAt(doc.lineCount - 1).range.end;
    const items = await ctx.completions.provideInlineCompletionItems(
      doc,
      pos,
      { triggerKind: vscode.InlineCompletionTriggerKind.Invoke, selectedCompletionInfo: undefined },
      token,
    );
    const t = items?.[0]?.insertText;
    return typeof t === 'string' ? t : t?.value;
  };
  const patchFile = (): { patches: { id: string; enabled: boolean; case: { desired: string } }[] } =>
    JSON.parse(fs.readFileSync(ctx.config.patchFile!, 'utf8'));
  const openSample = async (): Promise<vscode.TextEditor> => {
    const editor = await vscode.window.showTextDocument(sample, { preview: false });
    const end = editor.document.lineAt(editor.document.lineCount - 1).range.end;
    editor.selection = new vscode.Selection(end, end);
    return editor;
  };

  await runTests([
    {
      name: 'activates and hands out its context',
      fn: async () => {
        const ext = vscode.extensions.getExtension<Api>(EXT_ID);
        assert(ext, `extension ${EXT_ID} is installed`);
        extension = ext;
        const api = await ext.activate();
        assert(api?.ctx, 'activate() returns { ctx }');
        ctx = api.ctx;
      },
    },
    {
      name: 'registers every contributed command',
      fn: async () => {
        const all = new Set(await vscode.commands.getCommands(true));
        const contributed = (extension.packageJSON.contributes.commands as { command: string }[]).map((c) => c.command);
        assert(contributed.length >= 10, 'package.json contributes the commands');
        const missing = contributed.filter((c) => !all.has(c));
        assertEqual(missing, [], 'contributed commands that are not registered');
        assert(all.has('neuronpatch.patches.focus'), 'the Patches view is contributed');
      },
    },
    {
      name: 'reads every setting through Config: defaults, then changes',
      fn: async () => {
        const props = extension.packageJSON.contributes.configuration.properties as Record<
          string,
          { default: unknown; description?: string; markdownDescription?: string }
        >;
        const cfg = vscode.workspace.getConfiguration();
        for (const [key, p] of Object.entries(props)) {
          assert((p.description ?? p.markdownDescription ?? '').length > 20, `${key} has a description`);
          assertEqual(cfg.inspect(key)?.defaultValue, p.default, `default of ${key}`);
        }
        const c = ctx.config;
        assertEqual(c.modelFolder, path.join(extension.extensionPath, 'models', 'demo'), 'model folder (empty = demo)');
        assertEqual(c.patchFile, path.join(ws, '.neuronpatch', 'patches.json'), 'patch file');
        assertEqual(c.inlineCompletionsEnabled, true, 'inline completions on');
        assertEqual([c.maxNewTokens, c.debounceMs, c.repairMethod, c.regressionSampleSize], [24, 250, 'keyed', 32], 'defaults');
        const np = vscode.workspace.getConfiguration('neuronpatch');
        await np.update('maxNewTokens', 7, vscode.ConfigurationTarget.Workspace);
        await np.update('repair.method', 'joint', vscode.ConfigurationTarget.Workspace);
        await np.update('patchFile', 'elsewhere/p.json', vscode.ConfigurationTarget.Workspace);
        try {
          await waitFor(() => c.maxNewTokens === 7, 'maxNewTokens = 7');
          assertEqual(c.repairMethod, 'joint', 'repair method after the change');
          assertEqual(c.patchFile, path.join(ws, 'elsewhere', 'p.json'), 'relative patch file resolved in the workspace');
        } finally {
          await np.update('maxNewTokens', undefined, vscode.ConfigurationTarget.Workspace);
          await np.update('repair.method', undefined, vscode.ConfigurationTarget.Workspace);
          await np.update('patchFile', undefined, vscode.ConfigurationTarget.Workspace);
        }
        await waitFor(() => c.maxNewTokens === 24 && c.patchFile === path.join(ws, '.neuronpatch', 'patches.json'), 'settings back to defaults');
      },
    },
    {
      name: 'completes Python at the cursor from the demo model; a cancelled request gives nothing',
      timeoutMs: 180_000,
      fn: async () => {
        const doc = (await openSample()).document;
        assertEqual(doc.languageId, 'python', 'language of sample.py');
        const cancelled = new vscode.CancellationTokenSource();
        cancelled.cancel();
        assertEqual(await complete(doc, cancelled.token), undefined, 'completion with a cancelled token');
        const text = await complete(doc);
        assert(text && text.trim(), `an inline completion (got ${JSON.stringify(text)})`);
        const model = await ctx.models.require();
        const direct = await model.generate(doc.getText(), { maxNewTokens: ctx.config.maxNewTokens });
        assertEqual(text, direct.completion, 'the provider gives what the engine generates');
        if (kase.before) assertEqual(text, kase.before, 'the completion the CLI gave');
        before = text;
        assert(text !== kase.desired, 'the case is one the model gets wrong');
        assertEqual(ctx.models.current.kind, 'ready', 'model state');
      },
    },
    {
      name: 'validates webview messages by shape',
      fn: async () => {
        assert(isWebviewMessage({ type: 'ready' }), 'ready');
        assert(isWebviewMessage({ type: 'action', action: 'apply', patchId: 'p1' }), 'apply');
        for (const bad of [
          null,
          'apply',
          [],
          { type: 'action', action: 'apply' },
          { type: 'action', action: 'rm', patchId: 'p1' },
          { type: 'action', action: 'apply', patchId: 3 },
          { type: 'action', action: 'apply', patchId: 'p1', extra: true },
          { type: 'ready', x: 1 },
          { type: 'eval', code: '1' },
        ])
          assert(!isWebviewMessage(bad), `rejects ${JSON.stringify(bad)}`);
      },
    },
    {
      name: 'repairs at the cursor into the panel; Apply through a checked message writes the patch file',
      timeoutMs: 300_000,
      fn: async () => {
        await openSample();
        assert(!fs.existsSync(ctx.config.patchFile!), 'no patch file before the first Apply');
        await vscode.commands.executeCommand('neuronpatch.repairAtCursor', { desired: kase.desired });
        const panel = ctx.panel;
        assert(panel, 'the repair panel is open');
        const r = panel.current.result;
        assert(r.success, `the repair succeeded (after: ${JSON.stringify(r.after)})`);
        assertEqual(r.before, before, 'before in the panel');
        assertEqual(r.after, kase.desired, 'after in the panel');
        assert(r.neurons.length > 0, 'edited neurons listed');
        assert(r.positions.length > 0, 'failing positions listed');
        assertEqual(panel.current.status, 'pending', 'nothing applied yet');
        patchId = r.patch.id;
        // Wrong shapes and stale ids change nothing.
        await panel.receive({ type: 'action', action: 'apply' });
        await panel.receive({ type: 'action', action: 'apply', patchId: 'not-this-one' });
        await panel.receive({ type: 'action', action: 'apply', patchId, evil: '1' });
        assertEqual(panel.current.status, 'pending', 'status after malformed messages');
        assert(!fs.existsSync(ctx.config.patchFile!), 'malformed messages wrote nothing');
        await panel.receive({ type: 'action', action: 'apply', patchId });
        assertEqual(panel.current.status, 'applied', 'status after Apply');
        const file = patchFile();
        assertEqual(file.patches.map((p) => [p.id, p.enabled, p.case.desired]), [[patchId, true, kase.desired]], 'patch file');
        assertEqual(ctx.patches.active().length, 1, 'active patches');
        const doc = (await openSample()).document;
        assertEqual(await complete(doc), kase.desired, 'completion with the patch');
        panel.dispose();
      },
    },
    {
      name: 'a repair cancelled midway leaves nothing behind',
      timeoutMs: 180_000,
      fn: async () => {
        await openSample();
        const file = ctx.config.patchFile!;
        const text = fs.readFileSync(file, 'utf8');
        const cts = new vscode.CancellationTokenSource();
        const seen: string[] = [];
        await vscode.commands.executeCommand('neuronpatch.repairAtCursor', {
          desired: `${kase.desired} # another`,
          cancel: cts.token,
          onProgress: (m: string) => {
            seen.push(m);
            if (/^tracing/.test(m)) cts.cancel();
          },
        });
        assert(seen.some((m) => /^tracing/.test(m)), `the repair got as far as tracing (${JSON.stringify(seen)})`);
        assert(!seen.some((m) => /^confirming/.test(m)), 'and stopped before confirming');
        assertEqual(ctx.panel, undefined, 'no panel after a cancelled repair');
        assertEqual(fs.readFileSync(file, 'utf8'), text, 'patch file after a cancelled repair');
        assertEqual(ctx.patches.active().map((p) => p.id), [patchId], 'active patches after a cancelled repair');
      },
    },
    {
      name: 'exports the patched model into a new folder',
      timeoutMs: 120_000,
      fn: async () => {
        const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-export-')), 'patched');
        const written = await vscode.commands.executeCommand<string>('neuronpatch.exportModel', { outDir: out });
        assertEqual(written, out, 'the folder exported to');
        const files = fs.readdirSync(out);
        for (const f of ['config.json', 'tokenizer.json']) assert(files.includes(f), `${f} in the export (${files.join(', ')})`);
        assert(files.some((f) => f.endsWith('.onnx')) || fs.existsSync(path.join(out, 'onnx')), 'an ONNX file in the export');
        fs.rmSync(path.dirname(out), { recursive: true, force: true });
      },
    },
    {
      name: 'disables and enables the patch live through the commands',
      timeoutMs: 120_000,
      fn: async () => {
        const doc = (await openSample()).document;
        await vscode.commands.executeCommand('neuronpatch.disablePatch', patchId);
        assertEqual(patchFile().patches[0].enabled, false, 'enabled in the file after disabling');
        assertEqual(await complete(doc), before, 'completion with the patch disabled');
        await vscode.commands.executeCommand('neuronpatch.enablePatch', patchId);
        assertEqual(patchFile().patches[0].enabled, true, 'enabled in the file after enabling');
        assertEqual(await complete(doc), kase.desired, 'completion with the patch enabled again');
      },
    },
    {
      name: 'an invalid patch file is shown at the problem and never overwritten',
      timeoutMs: 60_000,
      fn: async () => {
        const file = ctx.config.patchFile!;
        const good = fs.readFileSync(file, 'utf8');
        const lines = good.split('\n');
        lines.splice(3, 0, '  this is not json,');
        const broken = lines.join('\n');
        fs.writeFileSync(file, broken);
        await ctx.patches.reopen();
        const s = ctx.patches.current;
        assert(s.kind === 'invalid', `patch state is invalid (is ${s.kind})`);
        assertEqual(s.at.line, 3, 'line of the problem (0-based)');
        const editor = await waitFor(
          () => (vscode.window.activeTextEditor?.document.uri.fsPath === file ? vscode.window.activeTextEditor : undefined),
          'the patch file opened in an editor',
        );
        assertEqual(editor.selection.active.line, 3, 'cursor on the problem');
        let refused = false;
        await ctx.patches.setEnabled(patchId, false).catch(() => (refused = true));
        assert(refused, 'changes are refused while the file is invalid');
        await vscode.commands.executeCommand('neuronpatch.disablePatch', patchId);
        assertEqual(fs.readFileSync(file, 'utf8'), broken, 'the invalid file is left byte for byte');
        assertEqual(ctx.patches.active().length, 0, 'no patch applied from an invalid file');
        fs.writeFileSync(file, good);
        await ctx.patches.reopen();
        assertEqual(ctx.patches.current.kind, 'ready', 'state after fixing the file');
        assertEqual(ctx.patches.active().length, 1, 'the patch is back');
        await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
      },
    },
    {
      name: 'a patch that came with the repository is listed as such and applied only once accepted',
      timeoutMs: 60_000,
      fn: async () => {
        const file = ctx.config.patchFile!;
        const good = fs.readFileSync(file, 'utf8');
        const shipped = JSON.parse(good) as { patches: { id: string; edits: { delta: number[] }[] }[] };
        // Another program (a git pull) adds a patch this machine never made: the same neurons, other deltas.
        const foreign = { ...shipped.patches[0], id: 'from-the-repository', edits: shipped.patches[0].edits.map((e) => ({ ...e, delta: e.delta.map((x) => -x) })) };
        fs.writeFileSync(file, JSON.stringify({ ...shipped, patches: [...shipped.patches, foreign] }, null, 2));
        await ctx.patches.reopen({ reveal: false });
        assertEqual(ctx.patches.list().map((p) => p.id), [patchId, 'from-the-repository'], 'both listed');
        assertEqual(ctx.patches.active().map((p) => p.id), [patchId], 'only the patch made here is applied');
        assertEqual(ctx.patches.provenance(ctx.patches.list()[1]), 'repository', 'listed as from the repository');
        await ctx.patches.acceptRepositoryPatches(['from-the-repository']);
        assertEqual(ctx.patches.active().map((p) => p.id), [patchId, 'from-the-repository'], 'applied once accepted');
        await ctx.patches.remove('from-the-repository');
        assertEqual(ctx.patches.active().map((p) => p.id), [patchId], 'back to the patch made here');
      },
    },
    {
      name: 'offers "Repair the model from this edit" after an accepted suggestion is edited',
      fn: async () => {
        const editor = await openSample();
        const doc = editor.document;
        const start = doc.lineAt(doc.lineCount - 1).range.end;
        const accepted = 'accepted_text(1)';
        await editor.edit((e) => e.insert(start, accepted));
        await vscode.commands.executeCommand('neuronpatch.completionAccepted', {
          uri: doc.uri.toString(),
          line: start.line,
          character: start.character,
          text: accepted,
        });
        const none = (await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', doc.uri)) ?? [];
        assert(!none.some((l) => l.command?.command === 'neuronpatch.repairFromEdit'), 'no lens while the suggestion is unedited');
        const startOffset = doc.offsetAt(start);
        await editor.edit((e) =>
          e.replace(new vscode.Range(doc.positionAt(startOffset), doc.positionAt(startOffset + accepted.length)), 'edited_text(2)'),
        );
        const lenses = await waitFor(async () => {
          const ls = (await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', doc.uri)) ?? [];
          return ls.find((l) => l.command?.command === 'neuronpatch.repairFromEdit') ? ls : undefined;
        }, 'the repair lens');
        const lens = lenses.find((l) => l.command?.command === 'neuronpatch.repairFromEdit')!;
        assertEqual(lens.command?.title, '$(wrench) Repair the model from this edit', 'lens title');
        assertEqual(ctx.edits.edited(doc)?.desired, 'edited_text(2)', 'desired text taken from the edit');
        await vscode.commands.executeCommand('neuronpatch.dismissEdit');
        assertEqual(ctx.edits.current, undefined, 'dismissed');
        await vscode.commands.executeCommand('workbench.action.files.revert');
        assertEqual(doc.getText(), kase.prompt, 'sample.py reverted');
      },
    },
    {
      name: 'deletes the patch; the file and the completion follow',
      timeoutMs: 60_000,
      fn: async () => {
        const doc = (await openSample()).document;
        await vscode.commands.executeCommand('neuronpatch.deletePatch', patchId, { confirm: false });
        assertEqual(patchFile().patches.length, 0, 'patches in the file after deleting');
        assertEqual(await complete(doc), before, 'completion without the patch');
      },
    },
    {
      name: 'a model folder that does not load leaves the extension up, says why, and recovers',
      timeoutMs: 180_000,
      fn: async () => {
        const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-not-a-model-'));
        fs.writeFileSync(path.join(bad, 'config.json'), '{ "model_type": "llama" }');
        const np = vscode.workspace.getConfiguration('neuronpatch');
        await np.update('modelFolder', bad, vscode.ConfigurationTarget.Workspace);
        try {
          const failed = await waitFor(() => {
            const s = ctx.models.current;
            return s.kind === 'failed' ? s : undefined;
          }, 'the load to fail', 60_000);
          assertEqual(failed.folder, bad, 'the folder named in the failure');
          assert(failed.message.length > 10, `an explanation (${failed.message})`);
          const doc = (await openSample()).document;
          assertEqual(await complete(doc), undefined, 'no completion without a model');
          const all = new Set(await vscode.commands.getCommands(true));
          assert(all.has('neuronpatch.repairAtCursor'), 'commands still registered');
        } finally {
          await np.update('modelFolder', undefined, vscode.ConfigurationTarget.Workspace);
          fs.rmSync(bad, { recursive: true, force: true });
        }
        await waitFor(() => ctx.models.current.kind === 'ready', 'the demo model to load again', 120_000);
        const doc = (await openSample()).document;
        assertEqual(await complete(doc), before, 'completions are back');
      },
    },
  ]);
}
