// Hosts the repair panel: one webview with a strict CSP (nonce, no remote resources, local roots limited to the
// extension's dist/webview and media), typed messages both ways, and every incoming message validated.
// The panel opens when a repair starts (its progress, with Cancel), shows the result, and survives a window
// reload through its serializer. What it shows and its scroll position are also kept in the workspace's state
// (written within a second of each change): VS Code saves a webview's own state with the editors only every minute
// and on the way out, which a reload in the browser (code-server) can cut short, bringing back an older state.
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import type { Patch, RepairMethod, RepairResult } from '../../engine/types';
import { exportPatchedModel } from '../commands/exportModel';
import type { Ctx } from '../ctx';
import { errorMessage, firstLine, oneLine } from '../model';
import { type RepairRequest, runRepair, type TimedResult } from '../repairFlow';
import {
  changedShare,
  isWebviewMessage,
  otherMethod,
  type ExtensionToWebview,
  type PanelConflict,
  type PanelState,
  type RepairProgress,
  type WebviewToExtension,
} from './messages';

export class RepairPanel implements vscode.Disposable {
  static readonly viewType = 'neuronpatch.repair';
  private state: PanelState;
  private request: RepairRequest | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly cancelRequested = new vscode.EventEmitter<void>();
  /** Fired when the user presses Cancel in the panel (or closes it) while a repair runs. */
  readonly onCancel = this.cancelRequested.event;
  private disposed = false;
  /** The webview's scroll position (px) for the run shown, as it last reported it. */
  private scrollY = 0;
  private recordTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly ctx: Ctx,
    private readonly panel: vscode.WebviewPanel,
    state: PanelState,
  ) {
    this.state = state;
    panel.webview.html = html(panel.webview, ctx.extension.extensionUri);
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m: unknown) => this.receive(m)),
      panel.onDidDispose(() => {
        // Closed by the user (our own dispose() removes this listener first): nothing to bring back.
        if (!this.disposed) void forgetRecord(ctx);
        this.dispose();
      }),
      this.cancelRequested,
      ctx.patches.onDidChange(() => this.syncWithStore()),
    );
  }

  /**
   * The patch file decides whether the shown repair is applied: Undo from the notification, a delete in the Patches
   * view, or a panel restored after a reload (whose kept state may be older than the file) all show as they are.
   */
  private syncWithStore(): void {
    const s = this.state;
    if (s.status === 'saved' && s.saved) {
      const now = this.ctx.patches.list().find((p) => p.id === s.saved!.id);
      if (now && now.enabled !== s.saved.enabled) this.update({ saved: now });
      return;
    }
    if (!s.result || this.ctx.patches.current.kind !== 'ready' || s.busy) return;
    const inFile = this.ctx.patches.list().find((p) => p.id === s.result!.patch.id);
    if (s.status === 'pending' && inFile) this.update({ status: 'applied', confirming: false, disabled: !inFile.enabled });
    else if (s.status === 'applied' && !inFile) this.update({ status: 'pending', disabled: false });
    else if (s.status === 'applied' && inFile && !inFile.enabled !== !!s.disabled) this.update({ disabled: !inFile.enabled });
  }

  private static create(ctx: Ctx, state: PanelState): RepairPanel {
    if (ctx.panel) {
      ctx.panel.state = state;
      ctx.panel.scrollY = 0;
      ctx.panel.scheduleRecord();
      ctx.panel.panel.reveal(vscode.ViewColumn.Beside, true);
      ctx.panel.post({ type: 'show', state });
      return ctx.panel;
    }
    const root = ctx.extension.extensionUri;
    const panel = vscode.window.createWebviewPanel(
      RepairPanel.viewType,
      'Neuron Patch: Repair',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      panelOptions(root),
    );
    panel.iconPath = vscode.Uri.joinPath(root, 'media', 'icon.svg');
    ctx.panel = new RepairPanel(ctx, panel, state);
    return ctx.panel;
  }

  /** Opens the panel (or takes over the open one) for a repair that starts now: it shows progress and Cancel. */
  static start(ctx: Ctx, request: RepairRequest): RepairPanel {
    const p = RepairPanel.create(ctx, RepairPanel.runningState(ctx, request));
    p.request = request;
    return p;
  }

  /** Shows a saved patch (from the Patches view), read-only: its case, neurons and side effects. */
  static showSaved(ctx: Ctx, patch: Patch): RepairPanel {
    const s = RepairPanel.baseState(ctx);
    const p = RepairPanel.create(ctx, {
      ...s, runId: patch.id, saved: patch, status: 'saved', source: patch.case.source ?? '', desired: patch.case.desired, method: patch.method,
    });
    p.request = undefined;
    return p;
  }

  /**
   * Brings back a panel after a window reload: from the workspace's record of the panel when there is one (the
   * newest), else from the state VS Code kept for its webview (`saved`).
   */
  static revive(ctx: Ctx, panel: vscode.WebviewPanel, saved: unknown): void {
    panel.webview.options = panelOptions(ctx.extension.extensionUri);
    const record = readRecord(ctx);
    const state = revivedState(ctx, record?.state ?? saved);
    ctx.panel?.dispose();
    ctx.panel = new RepairPanel(ctx, panel, state);
    if (record && record.state.runId === state.runId) ctx.panel.scrollY = record.scrollY;
    ctx.log.info(`panel: restored after a reload (${state.status}${record ? `, from the workspace's record, scroll ${Math.round(record.scrollY)} px` : ''})`);
    ctx.panel.syncWithStore();
    // The patch file opens once the model is loaded: a restored panel is a reason to load it.
    void ctx.models.get({ quiet: true });
  }

  private static baseState(ctx: Ctx): Omit<PanelState, 'runId' | 'source' | 'desired' | 'method' | 'status'> {
    const info = ctx.models.ready?.info;
    return {
      model: { name: info?.name ?? '?', layers: info?.layers ?? 0, neurons: info?.neurons ?? 0, hash: info?.hash ?? '' },
      result: null,
      saved: null,
      origin: null,
      progress: null,
      timing: null,
      conflicts: [],
      warnAbove: ctx.config.warnChangedShare,
      confirming: false,
      busy: null,
      error: null,
      exportedTo: null,
    };
  }

  private static runningState(ctx: Ctx, request: RepairRequest): PanelState {
    return {
      ...RepairPanel.baseState(ctx),
      runId: `run-${Date.now().toString(36)}`,
      source: request.source,
      origin: { uri: request.doc.uri.toString(), line: request.line },
      desired: request.desired,
      method: request.method,
      status: 'running',
      progress: { phase: 'starting', startedAt: Date.now() },
    };
  }

  /** What the panel shows now (tests read it). */
  get current(): PanelState {
    return this.state;
  }

  progress(p: RepairProgress): void {
    if (this.state.status !== 'running') return;
    this.state = { ...this.state, progress: p };
    this.post({ type: 'progress', progress: p });
  }

  failed(message: string): void {
    if (this.disposed) return;
    // Nothing was made, so nothing was discarded: the badge says the repair failed.
    this.update({ status: this.state.result ? this.state.status : 'failed', progress: null, busy: null, error: firstLine(message) });
  }

  /** The repair was cancelled (or had nothing to do): a panel that showed nothing else closes. */
  cancelled(): void {
    if (this.disposed) return;
    if (this.state.status === 'running') this.dispose();
  }

  finished(request: RepairRequest, done: TimedResult): void {
    if (this.disposed) return;
    this.request = request;
    const { result, timing } = done;
    this.state = {
      ...this.state,
      runId: result.patch.id,
      result,
      method: result.method,
      desired: request.desired,
      status: 'pending',
      progress: null,
      timing,
      conflicts: this.conflictsOf(result),
      confirming: false,
      busy: null,
      error: null,
    };
    this.post({ type: 'show', state: this.state });
  }

  private conflictsOf(r: RepairResult): PanelConflict[] {
    return (r.conflicts ?? []).map((c) => {
      const p = this.ctx.patches.list().find((x) => x.id === c.patchId);
      return { ...c, ...(p?.case.source ? { source: p.case.source } : {}) };
    });
  }

  private post(m: ExtensionToWebview): void {
    if (!this.disposed) void this.panel.webview.postMessage(m);
  }

  private update(patch: Partial<PanelState>): void {
    this.state = { ...this.state, ...patch };
    this.scheduleRecord();
    this.post({ type: 'show', state: this.state });
  }

  /** Writes the panel's record (state and scroll) to the workspace's state a moment after the last change. */
  private scheduleRecord(): void {
    if (this.disposed) return;
    if (this.recordTimer) clearTimeout(this.recordTimer);
    this.recordTimer = setTimeout(() => this.writeRecord(), RECORD_DELAY_MS);
  }

  private writeRecord(): void {
    if (this.recordTimer) clearTimeout(this.recordTimer);
    this.recordTimer = undefined;
    const record: PanelRecord = { state: this.state, scrollY: this.scrollY };
    this.ctx.extension.workspaceState.update(RECORD_KEY, record).then(undefined, (e: unknown) => this.ctx.log.warn(`panel: could not keep its state: ${errorMessage(e)}`));
  }

  /** Every message from the webview goes through here: wrong shapes and stale ids are ignored and logged. */
  async receive(m: unknown): Promise<void> {
    if (!isWebviewMessage(m)) {
      this.ctx.log.warn(`panel: ignored a malformed message from the webview: ${safeJson(m)}`);
      return;
    }
    await this.handle(m);
  }

  private async handle(m: WebviewToExtension): Promise<void> {
    if (m.type === 'ready') {
      // The webview (re)loads: a new panel, one shown again after it was hidden (its page is rebuilt), or one brought
      // back after a reload. It is sent the last position it reported, which its own copy may lack.
      const scrollY = this.scrollY;
      this.post({ type: 'show', state: this.state, ...(scrollY > 0 ? { scrollY } : {}) });
      this.scheduleRecord();
      return;
    }
    if (m.type === 'scroll') {
      if (m.runId === this.state.runId && m.y !== this.scrollY) {
        this.scrollY = m.y;
        this.scheduleRecord();
      }
      return;
    }
    if (m.patchId !== this.state.runId) {
      this.ctx.log.warn(`panel: ignored '${m.action}' for ${m.patchId}: the panel shows ${this.state.runId}`);
      return;
    }
    if (m.action === 'cancel') {
      if (this.state.status === 'running' || this.state.busy) this.cancelRequested.fire();
      return;
    }
    if (m.action === 'reveal') return this.revealSource();
    if (this.state.busy || this.state.status === 'running') {
      this.ctx.log.warn(`panel: ignored '${m.action}' while ${this.state.busy ?? 'the repair runs'}`);
      return;
    }
    try {
      switch (m.action) {
        case 'apply':
          return await this.apply(false);
        case 'confirmApply':
          return await this.apply(true);
        case 'cancelConfirm':
          return this.update({ confirming: false });
        case 'discard':
          return this.discard();
        case 'otherMethod':
          return await this.rerun('other', m.method);
        case 'disableConflict':
          return await this.resolveConflict('disable');
        case 'replaceConflict':
          return await this.resolveConflict('replace');
        case 'export':
          return await this.export();
      }
    } catch (e) {
      const message = errorMessage(e);
      this.ctx.log.error(`panel: ${m.action}: ${message}`);
      // The message and the engine's hint (its next line), said once each, in the panel and in the toast.
      this.update({ busy: null, error: oneLine(message) });
      void vscode.window.showErrorMessage(`Neuron Patch: ${oneLine(message)}`, 'Show Log').then((c) => {
        if (c) this.ctx.log.show(true);
      });
    }
  }

  /** Past the threshold, Apply first asks (in the panel) and applies on confirmApply. */
  private async apply(confirmed: boolean): Promise<void> {
    const { result, status } = this.state;
    if (!result) throw new Error('There is no repair to apply.');
    if (status !== 'pending') throw new Error(`This repair is already ${status}.`);
    if (!result.success) throw new Error('This repair did not reach the desired text; it cannot be applied.');
    if (!confirmed && changedShare(result) > this.state.warnAbove) {
      this.update({ confirming: true });
      return;
    }
    this.update({ busy: 'Applying…', error: null, confirming: false });
    const patch: Patch = { ...result.patch, enabled: true, case: { ...result.patch.case, source: this.state.source } };
    await this.ctx.patches.add(patch);
    this.ctx.edits.clear();
    this.update({ busy: null, status: 'applied', disabled: false });
    void vscode.window
      .showInformationMessage(
        `Neuron Patch: patch applied (${neuronCount(result.patch)}); completions now use it.`,
        'Undo',
        'Show Patches',
      )
      .then(async (choice) => {
        if (choice === 'Undo') await this.undoApply(patch.id);
        else if (choice === 'Show Patches') await vscode.commands.executeCommand('neuronpatch.showPatches');
      });
  }

  /** Removes the patch just applied; the panel (if it still shows it) can apply it again. */
  async undoApply(id: string): Promise<void> {
    await this.ctx.patches.remove(id);
    this.ctx.log.info(`panel: undid applying patch ${id}`);
    if (!this.disposed && this.state.result?.patch.id === id && this.state.status !== 'pending') this.update({ status: 'pending' });
  }

  private discard(): void {
    if (this.state.status !== 'pending') throw new Error(`This repair is already ${this.state.status}.`);
    this.ctx.log.info(`panel: discarded repair ${this.state.runId}`);
    this.update({ status: 'discarded' });
    void forgetRecord(this.ctx);
    this.dispose();
  }

  /** The request to run again: the one this panel ran, or one rebuilt from the state after a reload. */
  private async requestAgain(): Promise<RepairRequest> {
    if (this.request) return this.request;
    const o = this.state.origin;
    const r = this.state.result;
    if (!o || !r) throw new Error('This panel does not hold a repair to run again.');
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(o.uri));
    return { doc, line: o.line, prompt: r.trace.prompt, desired: r.trace.desired, method: r.method, source: this.state.source };
  }

  /** Runs the repair again in this panel (another method, or after an earlier patch was set aside). */
  private async rerun(which: 'same' | 'other', asked?: RepairMethod): Promise<void> {
    const prev = this.state;
    const base = await this.requestAgain();
    const method = which === 'other' ? asked ?? (prev.result ? otherMethod(prev.result.method) : base.method) : base.method;
    if (which === 'other' && prev.result?.fallback && method === 'minimal') throw new Error('The minimal method was tried first and fell back to the joint one.');
    const req = { ...base, method };
    this.request = req;
    this.state = { ...RepairPanel.runningState(this.ctx, req), exportedTo: prev.exportedTo };
    this.post({ type: 'show', state: this.state });
    const cts = new vscode.CancellationTokenSource();
    const sub = this.onCancel(() => cts.cancel());
    try {
      const done = await runRepair(this.ctx, req, { cancel: cts.token, report: (p) => this.progress(p) });
      if (!done) {
        // Cancelled: back to what the panel showed.
        this.state = { ...prev, busy: null };
        this.post({ type: 'show', state: this.state });
        return;
      }
      this.finished(req, done);
    } catch (e) {
      this.state = { ...prev, busy: null, error: firstLine(errorMessage(e)) };
      this.post({ type: 'show', state: this.state });
    } finally {
      sub.dispose();
      cts.dispose();
    }
  }

  /** The earlier patch the repair breaks: disabled (kept in the file) or deleted, then the repair runs again. */
  private async resolveConflict(how: 'disable' | 'replace'): Promise<void> {
    const c = this.state.conflicts[0];
    if (!c) throw new Error('This repair does not conflict with an earlier patch.');
    if (how === 'disable') await this.ctx.patches.setEnabled(c.patchId, false);
    else await this.ctx.patches.remove(c.patchId);
    this.ctx.log.info(`panel: ${how === 'disable' ? 'disabled' : 'deleted'} conflicting patch ${c.patchId}; repairing again`);
    await this.rerun('same');
  }

  private async revealSource(): Promise<void> {
    const src = this.state.saved?.case.source ?? this.state.source;
    const m = /^(.*):(\d+):(\d+)$/.exec(src);
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    if (!m || !ws) throw new Error('This patch does not say where it was made.');
    const uri = vscode.Uri.joinPath(ws, m[1]);
    const pos = new vscode.Position(Number(m[2]) - 1, Number(m[3]) - 1);
    await vscode.window.showTextDocument(uri, { selection: new vscode.Range(pos, pos), viewColumn: vscode.ViewColumn.One });
  }

  private async export(): Promise<void> {
    const r = this.state.result;
    const extra = this.state.status === 'pending' && r?.success ? [r.patch] : [];
    // While the dialog is open the panel says so (not "exporting" before a folder is chosen).
    this.update({ busy: 'Choosing a folder for the patched model…', error: null });
    const out = await exportPatchedModel(this.ctx, extra, undefined, () => this.update({ busy: 'Exporting the patched model…' }));
    this.update({ busy: null, exportedTo: out ?? this.state.exportedTo });
  }

  dispose(): void {
    if (this.disposed) return;
    if (this.state.status === 'running') this.cancelRequested.fire();
    // Kept as it is (a window reload disposes the panel too); a pending change is written now.
    if (this.recordTimer) this.writeRecord();
    this.disposed = true;
    if (this.ctx.panel === this) this.ctx.panel = undefined;
    for (const d of this.disposables) d.dispose();
    this.disposables.length = 0;
    this.panel.dispose();
  }
}

/** The workspace-state key of the panel's record, and how long after a change it is written (ms). */
const RECORD_KEY = 'neuronpatch.panel';
const RECORD_DELAY_MS = 250;

/** What the workspace keeps of the open panel: what it shows and where it is scrolled (px from the top). */
interface PanelRecord {
  state: PanelState;
  scrollY: number;
}

/** The panel's record in the workspace's state, checked; undefined when there is none or it is malformed. */
function readRecord(ctx: Ctx): PanelRecord | undefined {
  const r = ctx.extension.workspaceState.get<unknown>(RECORD_KEY);
  if (!r || typeof r !== 'object') return undefined;
  const { state, scrollY } = r as Partial<PanelRecord>;
  if (!state || typeof state !== 'object' || typeof state.runId !== 'string' || !('status' in state)) return undefined;
  return { state, scrollY: typeof scrollY === 'number' && Number.isFinite(scrollY) && scrollY >= 0 ? scrollY : 0 };
}

function forgetRecord(ctx: Ctx): Thenable<void> {
  return ctx.extension.workspaceState.update(RECORD_KEY, undefined);
}

/** "3 neurons" (edited and added ones together). */
function neuronCount(p: Patch): string {
  const n = p.edits.length + (p.added?.length ?? 0);
  return `${n} neuron${n === 1 ? '' : 's'}`;
}

function panelOptions(root: vscode.Uri): vscode.WebviewPanelOptions & vscode.WebviewOptions {
  return {
    enableScripts: true,
    enableCommandUris: false,
    enableFindWidget: true,
    retainContextWhenHidden: false,
    localResourceRoots: [vscode.Uri.joinPath(root, 'dist', 'webview'), vscode.Uri.joinPath(root, 'media')],
  };
}

/** The state a reloaded webview kept, checked; a repair that was running when the window reloaded is over. */
function revivedState(ctx: Ctx, saved: unknown): PanelState {
  const s = (saved && typeof saved === 'object' && 'state' in saved ? (saved as { state: unknown }).state : saved) as PanelState | undefined;
  const info = ctx.models.ready?.info;
  const fallback: PanelState = {
    model: { name: info?.name ?? '?', layers: info?.layers ?? 0, neurons: info?.neurons ?? 0, hash: info?.hash ?? '' },
    runId: 'restored', result: null, saved: null, source: '', origin: null, desired: '', method: ctx.config.repairMethod, status: 'discarded',
    progress: null, timing: null, conflicts: [], warnAbove: ctx.config.warnChangedShare, confirming: false, busy: null,
    error: 'The window reloaded before this panel had anything to show.', exportedTo: null,
  };
  if (!s || typeof s !== 'object' || typeof s.runId !== 'string' || !('status' in s)) return fallback;
  if (s.status === 'running') return { ...s, status: 'failed', progress: null, busy: null, error: 'The window reloaded while the repair ran; run it again.' };
  return { ...s, busy: null, confirming: false };
}

function html(webview: vscode.Webview, root: vscode.Uri): string {
  const nonce = randomBytes(16).toString('base64');
  const asset = (...p: string[]): string => webview.asWebviewUri(vscode.Uri.joinPath(root, ...p)).toString();
  const csp = [
    "default-src 'none'",
    `img-src ${webview.cspSource} data:`,
    `font-src ${webview.cspSource}`,
    `style-src ${webview.cspSource} 'nonce-${nonce}'`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" nonce="${nonce}" href="${asset('dist', 'webview', 'codicon.css')}" id="vscode-codicon-stylesheet">
<link rel="stylesheet" nonce="${nonce}" href="${asset('media', 'panel.css')}">
<title>Neuron Patch: Repair</title>
</head>
<body>
<main id="app" aria-live="polite"><p class="loading">Loading…</p></main>
<script type="module" nonce="${nonce}" src="${asset('dist', 'webview', 'main.js')}"></script>
</body>
</html>`;
}

function safeJson(x: unknown): string {
  try {
    const s = JSON.stringify(x);
    return s === undefined ? String(x) : s.length > 300 ? `${s.slice(0, 300)}…` : s;
  } catch {
    return String(x);
  }
}
