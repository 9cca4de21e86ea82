// Hosts the repair panel: one webview with a strict CSP (nonce, no remote resources, local roots limited to the
// extension's dist/webview and media), typed messages both ways, and every incoming message validated.
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import type { RepairMethod, RepairResult } from '../../engine/types';
import { exportPatchedModel } from '../commands/exportModel';
import type { Ctx } from '../ctx';
import { errorMessage, firstLine } from '../model';
import { runRepair, type RepairRequest } from '../repairFlow';
import { isWebviewMessage, otherMethod, type ExtensionToWebview, type PanelState, type WebviewToExtension } from './messages';

export class RepairPanel implements vscode.Disposable {
  static readonly viewType = 'neuronpatch.repair';
  private state: PanelState;
  private readonly disposables: vscode.Disposable[] = [];

  private constructor(
    private readonly ctx: Ctx,
    private readonly panel: vscode.WebviewPanel,
    private request: RepairRequest,
    result: RepairResult,
  ) {
    this.state = this.initialState(result);
    panel.webview.html = html(panel.webview, ctx.extension.extensionUri);
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m: unknown) => this.receive(m)),
      panel.onDidDispose(() => this.dispose()),
    );
  }

  /** Shows a repair result, in the open panel or a new one. */
  static show(ctx: Ctx, request: RepairRequest, result: RepairResult): RepairPanel {
    if (ctx.panel) {
      ctx.panel.request = request;
      ctx.panel.state = ctx.panel.initialState(result);
      ctx.panel.panel.reveal(vscode.ViewColumn.Beside, false);
      ctx.panel.post({ type: 'show', state: ctx.panel.state });
      return ctx.panel;
    }
    const root = ctx.extension.extensionUri;
    const panel = vscode.window.createWebviewPanel(
      RepairPanel.viewType,
      'Neuron Patch: Repair',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: false },
      {
        enableScripts: true,
        enableCommandUris: false,
        enableFindWidget: true,
        retainContextWhenHidden: false,
        localResourceRoots: [vscode.Uri.joinPath(root, 'dist', 'webview'), vscode.Uri.joinPath(root, 'media')],
      },
    );
    panel.iconPath = vscode.Uri.joinPath(root, 'media', 'icon.svg');
    ctx.panel = new RepairPanel(ctx, panel, request, result);
    return ctx.panel;
  }

  /** What the panel shows now (tests read it). */
  get current(): PanelState {
    return this.state;
  }

  private initialState(result: RepairResult): PanelState {
    const info = this.ctx.models.ready?.info;
    return {
      model: { name: info?.name ?? '?', layers: info?.layers ?? 0, neurons: info?.neurons ?? 0, hash: info?.hash ?? '' },
      result,
      source: this.request.source,
      status: 'pending',
      busy: null,
      error: null,
      exportedTo: null,
    };
  }

  private post(m: ExtensionToWebview): void {
    void this.panel.webview.postMessage(m);
  }

  private update(patch: Partial<PanelState>): void {
    this.state = { ...this.state, ...patch };
    this.post({ type: 'show', state: this.state });
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
      this.post({ type: 'show', state: this.state });
      return;
    }
    const patch = this.state.result.patch;
    if (m.patchId !== patch.id) {
      this.ctx.log.warn(`panel: ignored '${m.action}' for patch ${m.patchId}: the panel shows ${patch.id}`);
      return;
    }
    if (this.state.busy) {
      this.ctx.log.warn(`panel: ignored '${m.action}' while ${this.state.busy}`);
      return;
    }
    try {
      switch (m.action) {
        case 'apply':
          return await this.apply();
        case 'discard':
          return this.discard();
        case 'otherMethod':
          return await this.tryOtherMethod(m.method);
        case 'export':
          return await this.export();
      }
    } catch (e) {
      const message = errorMessage(e);
      this.ctx.log.error(`panel: ${m.action}: ${message}`);
      this.update({ busy: null, error: firstLine(message) });
      void vscode.window.showErrorMessage(`Neuron Patch: ${firstLine(message)}`);
    }
  }

  private async apply(): Promise<void> {
    const { result, status } = this.state;
    if (status !== 'pending') throw new Error(`This repair is already ${status}.`);
    if (!result.success) throw new Error('This repair did not reach the desired text; it cannot be applied.');
    this.update({ busy: 'Applying…', error: null });
    await this.ctx.patches.add({ ...result.patch, enabled: true });
    this.ctx.edits.clear();
    this.update({ busy: null, status: 'applied' });
    void vscode.window.showInformationMessage(
      `Neuron Patch: patch applied (${result.patch.edits.length + (result.patch.added?.length ?? 0)} neurons); completions now use it.`,
    );
  }

  private discard(): void {
    if (this.state.status !== 'pending') throw new Error(`This repair is already ${this.state.status}.`);
    this.ctx.log.info(`panel: discarded repair ${this.state.result.patch.id}`);
    this.update({ status: 'discarded' });
    this.panel.dispose();
  }

  private async tryOtherMethod(asked?: RepairMethod): Promise<void> {
    if (this.state.status !== 'pending') throw new Error(`This repair is already ${this.state.status}.`);
    const method = asked ?? otherMethod(this.state.result.method);
    if (this.state.result.fallback && method === 'minimal') throw new Error('The minimal method was tried first and fell back to the joint one.');
    this.update({ busy: `Repairing with the ${method} method…`, error: null });
    const result = await runRepair(this.ctx, { ...this.request, method });
    if (!result) {
      this.update({ busy: null });
      return;
    }
    this.request = { ...this.request, method };
    this.state = this.initialState(result);
    this.post({ type: 'show', state: this.state });
  }

  private async export(): Promise<void> {
    const extra = this.state.status === 'pending' && this.state.result.success ? [this.state.result.patch] : [];
    this.update({ busy: 'Exporting the patched model…', error: null });
    const out = await exportPatchedModel(this.ctx, extra);
    this.update({ busy: null, exportedTo: out ?? this.state.exportedTo });
  }

  dispose(): void {
    if (this.ctx.panel === this) this.ctx.panel = undefined;
    for (const d of this.disposables) d.dispose();
    this.disposables.length = 0;
    this.panel.dispose();
  }
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
