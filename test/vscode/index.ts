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
import { fromVisible, gluesOnto, isWebviewMessage, visibleEdges } from '../../src/vscode/panel/messages';
import { PatchItem, label } from '../../src/vscode/patchTree';
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
  let keptPatchFile = '';
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
        assert(isWebviewMessage({ type: 'scroll', runId: 'p1', y: 812.5 }), 'scroll');
        for (const bad of [
          { type: 'scroll', runId: 'p1', y: -1 },
          { type: 'scroll', runId: 'p1', y: Number.NaN },
          { type: 'scroll', runId: '', y: 10 },
          { type: 'scroll', runId: 'p1', y: '10' },
          { type: 'scroll', y: 10 },
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
      name: 'repairs at the cursor into the panel (wall time and phases in plain words); Apply through a checked message writes the patch file',
      timeoutMs: 300_000,
      fn: async () => {
        await openSample();
        assert(!fs.existsSync(ctx.config.patchFile!), 'no patch file before the first Apply');
        // Cold, as a first repair: the regression lines are not known yet. The same case and regression set are
        // written for the runner, which times the CLI on them (the extension's wall time beside the CLI's).
        ctx.regressionLines.clear();
        const doc0 = (await openSample()).document;
        const regression = await ctx.regression.sample(doc0, doc0.lineCount - 1, ctx.config.regressionSampleSize);
        fs.writeFileSync(path.join(ws, '.e2e-regression.jsonl'), regression.map((p) => JSON.stringify({ prompt: p })).join('\n') + '\n');
        const phases: string[] = [];
        const started = Date.now();
        const running = vscode.commands.executeCommand('neuronpatch.repairAtCursor', { desired: kase.desired });
        // The panel opens at once, showing the repair's progress with a Cancel button.
        const early = await waitFor(() => ctx.panel, 'the panel to open while the repair runs', 10_000);
        assertEqual(early.current.status, 'running', 'status while the repair runs');
        const seenPhases = setInterval(() => {
          const ph = ctx.panel?.current.progress?.phase;
          if (ph && !phases.includes(ph)) phases.push(ph);
        }, 20);
        await running;
        clearInterval(seenPhases);
        const wall = Date.now() - started;
        const panel = ctx.panel;
        assert(panel, 'the repair panel is open');
        const r = panel.current.result;
        assert(r, 'a result in the panel');
        assert(r.success, `the repair succeeded (after: ${JSON.stringify(r.after)})`);
        assertEqual(r.before, before, 'before in the panel');
        assertEqual(r.after, kase.desired, 'after in the panel');
        assert(r.neurons.length > 0, 'edited neurons listed');
        assert(r.positions.length > 0, 'failing positions listed');
        assertEqual(panel.current.status, 'pending', 'nothing applied yet');
        const t = panel.current.timing;
        assert(t && t.totalMs > r.ms, `the panel shows the wall time (${t?.totalMs} ms), not only the solve (${Math.round(r.ms)} ms)`);
        const names = t.phases.map((p) => p.name);
        for (const want of [/^checking \d+ completions from your workspace$/, /^tracing/, /^choosing and editing neurons$/, /^checking that \d+ completions/])
          assert(names.some((n) => want.test(n)), `phase ${want} in ${JSON.stringify(names)}`);
        fs.writeFileSync(
          path.join(ws, '.e2e-timing.json'),
          JSON.stringify({ wallMs: wall, panelMs: t.totalMs, phases: t.phases, solveMs: Math.round(r.ms), regression: regression.length, method: r.method, seen: phases }, null, 2),
        );
        patchId = r.patch.id;
        // Wrong shapes and stale ids change nothing.
        await panel.receive({ type: 'action', action: 'apply' });
        await panel.receive({ type: 'action', action: 'apply', patchId: 'not-this-one' });
        await panel.receive({ type: 'action', action: 'apply', patchId, evil: '1' });
        assertEqual(panel.current.status, 'pending', 'status after malformed messages');
        assert(!fs.existsSync(ctx.config.patchFile!), 'malformed messages wrote nothing');
        await panel.receive({ type: 'action', action: 'apply', patchId });
        if (panel.current.confirming) await panel.receive({ type: 'action', action: 'confirmApply', patchId });
        assertEqual(panel.current.status, 'applied', 'status after Apply');
        const file = patchFile();
        assertEqual(file.patches.map((p) => [p.id, p.enabled, p.case.desired]), [[patchId, true, kase.desired]], 'patch file');
        assertEqual(ctx.patches.active().length, 1, 'active patches');
        const doc = (await openSample()).document;
        assertEqual(await complete(doc), kase.desired, 'completion with the patch');
        // The eye icon in the Patches view (disablePatch) reaches the open panel: not "Applied" while the patch is off.
        await vscode.commands.executeCommand('neuronpatch.disablePatch', patchId);
        await waitFor(() => (panel.current.status === 'applied' && panel.current.disabled === true) || undefined, 'the panel to show the patch disabled');
        await vscode.commands.executeCommand('neuronpatch.enablePatch', patchId);
        await waitFor(() => (panel.current.status === 'applied' && panel.current.disabled === false) || undefined, 'the panel to show the patch enabled again');
        panel.dispose();
      },
    },
    {
      name: 'item 1: whitespace is visible and a desired text that glues onto the word before the cursor is caught',
      fn: async () => {
        assertEqual(visibleEdges(' a + b'), '␣a + b', 'leading space shown');
        assertEqual(visibleEdges('\ta b '), '⇥a b␣', 'tab and trailing space shown, inner space kept');
        assertEqual(fromVisible('␣a + b'), ' a + b', 'read back');
        assertEqual(gluesOnto('def add(a, b):\n    return', 'a + b', ' _type(a, b)'), 'return', 'glues onto return');
        assertEqual(gluesOnto('def add(a, b):\n    return', ' a + b', ' _type(a, b)'), undefined, 'the spaced text does not glue');
        assertEqual(gluesOnto('    retu', 'rn x', 'rn None'), undefined, 'a word the model itself continues is not a glue');
        const p = ctx.patches.list().find((x) => x.id === patchId)!;
        assertEqual(label(p), visibleEdges(kase.desired), 'the Patches view labels the patch with its whitespace');
        assert(/^sample\.py:\d+:\d+$/.test(p.case.source ?? ''), `the patch records where it was made (${p.case.source})`);
        const item = new PatchItem(p);
        assert(String(item.description).startsWith(p.case.source!), `the row says where it was made (${item.description})`);
      },
    },
    {
      name: 'item 2: a repair that breaks an earlier patch says which; "Disable it and retry" and "Replace it" repair without it',
      timeoutMs: 300_000,
      fn: async () => {
        await openSample();
        const other = kase.desired.replace(/\+/, '-') === kase.desired ? `${kase.desired}0` : kase.desired.replace(/\+/, '-');
        // The minimal method edits existing neurons, so a second patch for the same prompt breaks the first.
        await vscode.commands.executeCommand('neuronpatch.repairAtCursor', { desired: other, method: 'minimal' });
        const panel = ctx.panel;
        assert(panel?.current.result, 'a result in the panel');
        const s = panel.current;
        assert(!s.result!.success, 'not a success: it breaks the earlier patch');
        assertEqual(s.conflicts.map((c) => [c.patchId, c.desired]), [[patchId, kase.desired]], 'the conflicting patch is named');
        assert(/^sample\.py:/.test(s.conflicts[0].source ?? ''), 'with where it was made');
        await panel.receive({ type: 'action', action: 'disableConflict', patchId: s.runId });
        assertEqual(patchFile().patches.find((p) => p.id === patchId)?.enabled, false, 'the earlier patch is disabled, kept in the file');
        const again = ctx.panel!.current;
        assert(again.result && again.status === 'pending', `the repair ran again (${again.status})`);
        assertEqual(again.conflicts, [], 'no conflict without the earlier patch');
        assert(again.result.success, `the retry succeeds (after ${JSON.stringify(again.result.after)})`);
        ctx.panel!.dispose();
        await ctx.patches.setEnabled(patchId, true);
        // "Replace it": the earlier patch is deleted and the repair runs again without it.
        const kept = fs.readFileSync(ctx.config.patchFile!, 'utf8');
        await vscode.commands.executeCommand('neuronpatch.repairAtCursor', { desired: other, method: 'minimal' });
        const p2 = ctx.panel!;
        assertEqual(p2.current.conflicts.map((c) => c.patchId), [patchId], 'the conflict again');
        await p2.receive({ type: 'action', action: 'replaceConflict', patchId: p2.current.runId });
        assert(!patchFile().patches.some((p) => p.id === patchId), 'Replace it deletes the earlier patch');
        assert(ctx.panel!.current.result?.success, 'and the repair without it succeeds');
        ctx.panel!.dispose();
        fs.writeFileSync(ctx.config.patchFile!, kept);
        await ctx.patches.reopen();
        assertEqual(ctx.patches.active().map((p) => p.id), [patchId], 'the earlier patch is back for the tests that follow');
      },
    },
    {
      name: 'item 3: past the side-effect threshold the panel warns and Apply asks to confirm',
      timeoutMs: 300_000,
      fn: async () => {
        const np = vscode.workspace.getConfiguration('neuronpatch');
        await ctx.patches.setEnabled(patchId, false);
        await np.update('repair.sideEffectWarning', 0, vscode.ConfigurationTarget.Workspace);
        // The same function elsewhere in the workspace: its completion is one the patch changes.
        const same = path.join(ws, 'pkg', 'arith_same.py');
        fs.writeFileSync(same, `${kase.prompt}${kase.desired}\n`);
        const sampleDoc = (await openSample()).document;
        const sampled = () => ctx.regression.sample(sampleDoc, sampleDoc.lineCount - 1, ctx.config.regressionSampleSize);
        try {
          await waitFor(async () => (await sampled()).some((p) => p.endsWith(kase.prompt)), 'the new file among the sampled prompts');
          await openSample();
          // Minimal: an edited neuron changes the same function's completion in pkg/arith_same.py.
          await vscode.commands.executeCommand('neuronpatch.repairAtCursor', { desired: kase.desired, method: 'minimal' });
          const panel = ctx.panel!;
          const r = panel.current.result!;
          assert(r.success, 'the repair succeeded');
          // pkg/arith.py holds the same function: its completion changes with the patch.
          assert(r.changed.length > 0, `the patch changes some workspace completion (specificity ${r.specificity})`);
          assertEqual(panel.current.warnAbove, 0, 'threshold from the setting');
          const id = panel.current.runId;
          await panel.receive({ type: 'action', action: 'apply', patchId: id });
          assertEqual([panel.current.status, panel.current.confirming], ['pending', true], 'Apply asks first');
          assert(!patchFile().patches.some((p) => p.id === id), 'nothing written before the confirmation');
          await panel.receive({ type: 'action', action: 'cancelConfirm', patchId: id });
          assertEqual(panel.current.confirming, false, 'the question can be dismissed');
          await panel.receive({ type: 'action', action: 'apply', patchId: id });
          await panel.receive({ type: 'action', action: 'confirmApply', patchId: id });
          assertEqual(panel.current.status, 'applied', 'applied after the confirmation');
          await panel.undoApply(id);
          assert(!patchFile().patches.some((p) => p.id === id), 'Undo removes it');
          assertEqual(panel.current.status, 'pending', 'and the panel can apply it again');
          panel.dispose();
        } finally {
          fs.rmSync(same, { force: true });
          await waitFor(async () => !(await sampled()).some((p) => p.endsWith(kase.prompt)), 'the file gone from the sampled prompts').catch(() => undefined);
          await np.update('repair.sideEffectWarning', undefined, vscode.ConfigurationTarget.Workspace);
          await ctx.patches.setEnabled(patchId, true);
        }
      },
    },
    {
      name: 'item 5: a completion asked for during a repair comes back before the repair ends',
      timeoutMs: 300_000,
      fn: async () => {
        const doc = (await openSample()).document;
        await ctx.patches.setEnabled(patchId, false);
        ctx.regressionLines.clear();
        try {
          let repairDone = 0;
          let asked = false;
          let result: { text?: string; ms: number; at: number } | undefined;
          const ask = (): void => {
            if (asked) return;
            asked = true;
            const t0 = Date.now();
            // A new document version each time would miss the cache: use the provider as VS Code does.
            void complete(doc).then((text) => (result = { text, ms: Date.now() - t0, at: Date.now() }));
          };
          const running = vscode.commands.executeCommand('neuronpatch.repairAtCursor', {
            desired: kase.desired,
            // Asked as the repair's first engine work begins: the keyed repair of the demo case spends ≈ 0.3 s
            // after tracing begins, less than a debounced completion takes, so asking there raced its end.
            onProgress: (m: string) => {
              if (/^checking \d+ completions from your workspace/.test(m)) ask();
            },
          }).then(() => (repairDone = Date.now()));
          await running;
          const got = await waitFor(() => result, 'the completion');
          assert(asked, 'the completion was asked for during the repair');
          fs.writeFileSync(path.join(ws, '.e2e-preempt.json'), JSON.stringify({ completionMs: got.ms, beforeRepairEnd: repairDone - got.at }));
          assert(got.at <= repairDone, `the completion came back ${got.at - repairDone} ms after the repair ended`);
          assertEqual(got.text, before, 'and it is the model\'s completion without the disabled patch');
          ctx.panel?.dispose();
        } finally {
          await ctx.patches.setEnabled(patchId, true);
        }
      },
    },
    {
      name: 'item 6: Cancel from the panel ends the repair within 1 s and leaves nothing behind',
      timeoutMs: 300_000,
      fn: async () => {
        await openSample();
        const text = fs.readFileSync(ctx.config.patchFile!, 'utf8');
        const times: Record<string, number> = {};
        for (const at of [/^checking \d+ completions/, /^tracing the neurons/, /^measuring side effects/]) {
          ctx.regressionLines.clear();
          let pressed = 0;
          ctx.lastCancel = undefined;
          const running = vscode.commands.executeCommand('neuronpatch.repairAtCursor', {
            desired: `${kase.desired} # cancelled`,
            method: 'minimal',
            onProgress: (m: string) => {
              if (!pressed && at.test(m) && ctx.panel) {
                pressed = Date.now();
                void ctx.panel.receive({ type: 'action', action: 'cancel', patchId: ctx.panel.current.runId });
              }
            },
          });
          await running;
          const ms = Date.now() - pressed;
          times[at.source] = pressed ? ms : -1;
          assert(pressed, `the repair reached ${at}`);
          assert(ms <= 1000, `cancelled ${ms} ms after Cancel at ${at}`);
          assertEqual(ctx.panel, undefined, 'the panel it opened is closed');
          // The engine stops at its next check of the signal: how long after Cancel its work went on.
          const engine = (await waitFor(() => (ctx.lastCancel?.engineStoppedMs === undefined ? undefined : { ms: ctx.lastCancel.engineStoppedMs }), 'the engine to stop', 30_000)).ms;
          times[`${at.source} (engine)`] = engine;
          assert(engine <= 1000, `the engine stopped ${engine} ms after Cancel at ${at}`);
        }
        fs.writeFileSync(path.join(ws, '.e2e-cancel.json'), JSON.stringify(times));
        assertEqual(fs.readFileSync(ctx.config.patchFile!, 'utf8'), text, 'patch file unchanged');
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
        keptPatchFile = good;
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
        const taken = ctx.edits.edited(doc);
        assertEqual(taken && 'desired' in taken ? taken.desired : undefined, 'edited_text(2)', 'desired text taken from the edit');
        await vscode.commands.executeCommand('neuronpatch.dismissEdit');
        assertEqual(ctx.edits.current, undefined, 'dismissed');
        await vscode.commands.executeCommand('workbench.action.files.revert');
        assertEqual(doc.getText(), kase.prompt, 'sample.py reverted');
      },
    },
    {
      name: 'an edited multi-line suggestion is repaired from the line the user edited (the lens sits there, the engine takes the case)',
      timeoutMs: 300_000,
      fn: async () => {
        const editor = await openSample();
        const doc = editor.document;
        await editor.edit((e) => e.insert(doc.lineAt(doc.lineCount - 1).range.end, '\n\ndef mul(x, y):'));
        const at = doc.lineAt(doc.lineCount - 1).range.end;
        // The user's steps: a multi-line suggestion accepted after the header, then its second line edited.
        const accepted = '\n    return x.shape[0]';
        await editor.edit((e) => e.insert(at, accepted));
        await vscode.commands.executeCommand('neuronpatch.completionAccepted', { uri: doc.uri.toString(), line: at.line, character: at.character, text: accepted });
        const last = doc.lineAt(doc.lineCount - 1);
        await editor.edit((e) => e.replace(new vscode.Range(last.range.start.translate(0, '    return x'.length), last.range.end), ' * y'));
        const lens = await waitFor(async () => {
          const ls = (await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', doc.uri)) ?? [];
          return ls.find((l) => l.command?.command === 'neuronpatch.repairFromEdit');
        }, 'the repair lens');
        assertEqual(lens.range.start.line, at.line + 1, 'the lens sits on the edited line');
        const taken = ctx.edits.edited(doc);
        assert(taken && 'desired' in taken, `a case from the edit: ${JSON.stringify(taken)}`);
        assertEqual(taken.desired, 'return x * y', "the desired text: the user's edited line");
        assertEqual(doc.getText(new vscode.Range(new vscode.Position(at.line + 1, 0), taken.start)), '    ', "the prompt runs to the start of the line's text");
        await vscode.commands.executeCommand('neuronpatch.repairFromEdit');
        const panel = ctx.panel;
        // Either a result to apply, or (when the model already writes it) no panel: never a failure.
        if (panel) {
          assertEqual(panel.current.error, null, 'no error in the panel');
          assert(panel.current.result && panel.current.status === 'pending', `a result to apply (status ${panel.current.status})`);
          await panel.receive({ type: 'action', action: 'discard', patchId: panel.current.runId });
          panel.dispose();
        }
        await vscode.commands.executeCommand('neuronpatch.dismissEdit');
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
        // Item 11: empty states switch commands off through `when` clauses instead of failing.
        await waitFor(() => ctx.contextKeys.get('hasPatches') === false, 'hasPatches to be false');
        assertEqual(ctx.contextKeys.get('hasActivePatches'), false, 'hasActivePatches');
        const menus = extension.packageJSON.contributes.menus as Record<string, { command: string; when?: string }[]>;
        const palette = (c: string) => menus.commandPalette.find((m) => m.command === c)?.when;
        assertEqual(palette('neuronpatch.exportModel'), 'neuronpatch.hasActivePatches', 'Export hidden without an active patch');
        assertEqual(palette('neuronpatch.revealPatchFile'), 'neuronpatch.hasPatchFile', 'Reveal hidden without a patch file');
        assertEqual(palette('neuronpatch.repairFromEdit'), 'neuronpatch.hasEditedSuggestion', 'Repair from edit hidden without an edit');
        assertEqual(palette('neuronpatch.showPatches'), 'false', 'one command to show the patches in the palette: the view\'s own');
      },
    },
    {
      name: 'a model folder that does not load leaves the extension up, says why, and recovers',
      timeoutMs: 180_000,
      fn: async () => {
        const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-not-a-model-'));
        fs.writeFileSync(path.join(bad, 'config.json'), '{ "model_type": "llama" }');
        const np = vscode.workspace.getConfiguration('neuronpatch');
        // The patch file still holds a patch (written back here): it stays listed while the model fails.
        fs.writeFileSync(ctx.config.patchFile!, keptPatchFile);
        await np.update('modelFolder', bad, vscode.ConfigurationTarget.Workspace);
        try {
          const failed = await waitFor(() => {
            const s = ctx.models.current;
            return s.kind === 'failed' ? s : undefined;
          }, 'the load to fail', 60_000);
          assertEqual(failed.folder, bad, 'the folder named in the failure');
          const rows = ctx.patchTree!.getChildren();
          assert(rows.length === 1 && rows[0].unloaded, `the patch stays listed, marked (${rows.map((r) => r.description).join('; ')})`);
          assert(/not applied/.test(String(rows[0].description)), 'marked as not applied');
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
        assertEqual(await complete(doc), kase.desired, 'completions are back, with the patch the file holds');
      },
    },
    {
      name: 'switching to another model keeps both models\' patches: the demo\'s file is left as it is, the other model\'s go beside it',
      timeoutMs: 180_000,
      fn: async () => {
        const named = ctx.config.patchFile!;
        fs.writeFileSync(named, keptPatchFile);
        const np = vscode.workspace.getConfiguration('neuronpatch');
        await np.update('modelFolder', path.join(extension.extensionPath, 'models', 'demo-gpt2'), vscode.ConfigurationTarget.Workspace);
        try {
          await waitFor(() => (ctx.models.current.kind === 'ready' && ctx.models.current.model.info.name !== 'demo' ? true : undefined), 'the other model to load', 120_000);
          const s = await waitFor(() => {
            const p = ctx.patches.current;
            return p.kind === 'ready' && p.displaced ? p : undefined;
          }, 'the other model\'s patch file', 30_000);
          assert(s.file !== named && path.dirname(s.file) === path.dirname(named) && /^patches\..+-[0-9a-f]{8}\.json$/.test(path.basename(s.file)), `a sibling for the model (${s.file})`);
          assertEqual(s.displaced?.model, 'demo', 'names whose the named file is');
          assertEqual(fs.readFileSync(named, 'utf8'), keptPatchFile, 'the demo\'s file is untouched');
          assertEqual(ctx.patches.list().length, 0, 'no demo patch is listed for the other model');
        } finally {
          await np.update('modelFolder', undefined, vscode.ConfigurationTarget.Workspace);
        }
        await waitFor(() => (ctx.models.current.kind === 'ready' && ctx.models.current.model.info.name === 'demo' ? true : undefined), 'the demo model to load again', 120_000);
        await waitFor(() => (ctx.patches.current.kind === 'ready' && ctx.patches.current.file === named && ctx.patches.list().length === 1 ? true : undefined), 'the demo\'s patch file again', 30_000);
      },
    },
    {
      name: 'item 16: after a line ending in ":" completions span the block and stop at its dedent; off, they end with the line',
      timeoutMs: 120_000,
      fn: async () => {
        const doc = await vscode.workspace.openTextDocument({ language: 'python', content: 'class Point:\n    def __init__(self, x, y):' });
        await vscode.window.showTextDocument(doc);
        const multi = await complete(doc);
        assert(multi && multi.includes('\n'), `a multi-line completion (${JSON.stringify(multi)})`);
        for (const line of multi.split('\n').slice(1)) assert(line.trim() === '' || /^ {5,}/.test(line), `line ${JSON.stringify(line)} stays in the block`);
        const model = await ctx.models.require();
        const raw = (await model.generate(doc.getText(), { maxNewTokens: ctx.config.maxNewTokens, multiline: true })).completion;
        assert(raw.startsWith(multi), 'the completion is the start of what the model writes');
        const np = vscode.workspace.getConfiguration('neuronpatch');
        await np.update('inlineCompletions.multiline', false, vscode.ConfigurationTarget.Workspace);
        try {
          await waitFor(() => !ctx.config.multilineCompletions, 'the setting off');
          const single = await complete(doc);
          assert(!single?.includes('\n'), `one line with the setting off (${JSON.stringify(single)})`);
        } finally {
          await np.update('inlineCompletions.multiline', undefined, vscode.ConfigurationTarget.Workspace);
        }
        await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
      },
    },
    {
      name: 'item 17: the status-bar menu turns completions off and on; keybindings for repair and the toggle',
      timeoutMs: 60_000,
      fn: async () => {
        const labels = await vscode.commands.executeCommand<string[]>('neuronpatch.statusMenu', { pick: 'Turn Inline Completions Off' });
        for (const want of ['Turn Inline Completions Off', 'Pick Model Folder…', 'Show Patches', 'Show Log'])
          assert(labels?.includes(want), `menu offers ${want} (${labels?.join(', ')})`);
        await waitFor(() => ctx.config.inlineCompletionsEnabled === false, 'completions off');
        const doc = (await openSample()).document;
        assertEqual(await complete(doc), undefined, 'no completion while off');
        await vscode.commands.executeCommand('neuronpatch.toggleCompletions');
        await waitFor(() => ctx.config.inlineCompletionsEnabled === true, 'completions on again');
        await vscode.workspace.getConfiguration('neuronpatch').update('inlineCompletions.enabled', undefined, vscode.ConfigurationTarget.Global);
        const keys = extension.packageJSON.contributes.keybindings as { command: string; key: string }[];
        for (const c of ['neuronpatch.repairAtCursor', 'neuronpatch.repairSuggestion', 'neuronpatch.toggleCompletions', 'neuronpatch.togglePatch'])
          assert(keys.some((k) => k.command === c), `a keybinding for ${c}`);
      },
    },
    {
      name: 'item 18: the suggestion on screen is remembered for "Repair This Suggestion"',
      timeoutMs: 60_000,
      fn: async () => {
        const editor = await openSample();
        const shown = await complete(editor.document);
        assertEqual(ctx.completions.shownAt(editor.document, editor.selection.active), shown, 'the shown suggestion');
        const all = new Set(await vscode.commands.getCommands(true));
        assert(all.has('neuronpatch.repairSuggestion'), 'the command is registered');
      },
    },
    {
      name: 'item 19: the walkthrough opens the demo, and each step names a command that exists',
      timeoutMs: 60_000,
      fn: async () => {
        const w = (extension.packageJSON.contributes.walkthroughs as { steps: { id: string; description: string; media: { markdown?: string } }[] }[])[0];
        assertEqual(w.steps.map((s) => s.id), ['openDemo', 'seeCompletion', 'repair', 'apply', 'revert'], 'steps');
        const all = new Set(await vscode.commands.getCommands(true));
        for (const step of w.steps) {
          for (const m of step.description.matchAll(/\(command:([\w.]+)\)/g)) assert(all.has(m[1]), `step ${step.id}: command ${m[1]} exists`);
          if (step.media.markdown) assert(fs.existsSync(path.join(extension.extensionPath, step.media.markdown)), `${step.media.markdown} exists`);
        }
        const file = await vscode.commands.executeCommand<string>('neuronpatch.openDemo');
        assertEqual(path.basename(file ?? ''), 'neuronpatch-demo.py', 'demo file');
        assertEqual(vscode.window.activeTextEditor?.document.uri.fsPath, file, 'opened');
        fs.rmSync(file!, { force: true });
        await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
      },
    },
    {
      name: 'item 15: neuronpatch.modelFolder can be set in the User settings',
      fn: async () => {
        const p = extension.packageJSON.contributes.configuration.properties['neuronpatch.modelFolder'] as { scope?: string };
        assert(!p.scope || ['window', 'resource', 'application'].includes(p.scope), `scope ${p.scope} is shown in the User tab`);
      },
    },
  ]);
}
