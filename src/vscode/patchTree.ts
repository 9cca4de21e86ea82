// The Patches view: one item per patch with its case and metrics; the checkbox enables or disables it live.
import * as vscode from 'vscode';
import type { Patch } from '../engine/types';
import type { Ctx } from './ctx';
import type { Provenance } from './trustPolicy';
import { errorMessage } from './model';

/** What the Patches view says of a patch held back (see trustPolicy.ts). */
const HELD: Partial<Record<Provenance, string>> = {
  repository: 'from the repository, not applied: check to accept',
  restricted: 'not applied in Restricted Mode',
};

export class PatchItem extends vscode.TreeItem {
  constructor(readonly patch: Patch, held: Provenance = 'applied') {
    super(label(patch), vscode.TreeItemCollapsibleState.None);
    this.id = patch.id;
    const m = patch.metrics;
    const spec = m.specificity === null ? '' : ` · specificity ${pct(m.specificity)}`;
    this.description = `${HELD[held] ? `${HELD[held]} · ` : ''}${patch.method} · ${patch.edits.length} neuron${patch.edits.length === 1 ? '' : 's'}${spec}`;
    if (HELD[held]) {
      this.contextValue = 'patch.held';
      this.checkboxState = { state: vscode.TreeItemCheckboxState.Unchecked, tooltip: HELD[held] };
      this.iconPath = new vscode.ThemeIcon('shield');
      this.accessibilityInformation = { label: `Patch ${label(patch)}, ${HELD[held]}` };
      this.tooltip = `Patch ${patch.id}: ${HELD[held]}.`;
      return;
    }
    this.contextValue = patch.enabled ? 'patch.enabled' : 'patch.disabled';
    this.checkboxState = patch.enabled
      ? { state: vscode.TreeItemCheckboxState.Checked, tooltip: 'Active: click to disable' }
      : { state: vscode.TreeItemCheckboxState.Unchecked, tooltip: 'Disabled: click to enable' };
    this.iconPath = new vscode.ThemeIcon(patch.enabled ? 'wrench' : 'circle-slash');
    this.accessibilityInformation = {
      label: `Patch ${label(patch)}, ${patch.enabled ? 'enabled' : 'disabled'}, ${this.description}`,
    };
    const md = new vscode.MarkdownString();
    md.appendMarkdown(`**Patch** \`${patch.id}\` (${patch.method}, ${new Date(patch.createdAt).toLocaleString()})\n\n`);
    md.appendMarkdown(`Prompt ends with:\n`);
    md.appendCodeblock(tail(patch.case.prompt, 200), '');
    md.appendMarkdown(`Before: \`${inline(patch.case.before)}\`  \nDesired: \`${inline(patch.case.desired)}\`  \n`);
    md.appendMarkdown(`After: \`${inline(patch.case.after)}\`\n\n`);
    md.appendMarkdown(
      `Neurons: ${patch.edits.map((e) => `L${e.layer}.N${e.neuron}`).join(', ')}  \n` +
        `Failing tokens: ${m.failingTokens} · specificity ${m.specificity === null ? 'n/a' : pct(m.specificity)} · ` +
        `mean KL ${m.meanKl === null ? 'n/a' : m.meanKl.toExponential(2)} · repair ${Math.round(m.repairMs)} ms`,
    );
    this.tooltip = md;
  }
}

export class PatchTree implements vscode.TreeDataProvider<PatchItem>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.changed.event;
  readonly view: vscode.TreeView<PatchItem>;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly ctx: Ctx) {
    this.view = vscode.window.createTreeView('neuronpatch.patches', {
      treeDataProvider: this,
      showCollapseAll: false,
      manageCheckboxStateManually: true,
    });
    this.disposables.push(
      this.view,
      this.view.onDidChangeCheckboxState((e) => this.onCheckbox(e)),
      // Showing the view is a reason to load the model: the patch file is bound to it.
      this.view.onDidChangeVisibility((e) => {
        if (e.visible && ctx.models.current.kind === 'idle') void ctx.models.get({ quiet: true });
      }),
      ctx.patches.onDidChange(() => this.refresh()),
      ctx.models.onDidChange(() => this.refresh()),
    );
    this.refresh();
  }

  private async onCheckbox(e: vscode.TreeCheckboxChangeEvent<PatchItem>): Promise<void> {
    for (const [item, state] of e.items) {
      try {
        await this.ctx.patches.setEnabled(item.patch.id, state === vscode.TreeItemCheckboxState.Checked);
      } catch (err) {
        void vscode.window.showErrorMessage(`Neuron Patch: ${errorMessage(err)}`);
        this.refresh();
      }
    }
  }

  refresh(): void {
    const s = this.ctx.patches.current;
    const m = this.ctx.models.current;
    if (s.kind === 'invalid') {
      this.view.message = `The patch file is invalid (line ${s.at.line + 1}): ${s.message.split('\n')[0]}. It is left untouched until you fix it.`;
    } else if (m.kind === 'failed') {
      this.view.message = `The model did not load: ${m.message.split('\n')[0]}`;
    } else if (m.kind === 'loading') {
      this.view.message = 'Loading the model…';
    } else if (s.kind === 'none' && m.kind === 'ready') {
      this.view.message = s.reason;
    } else {
      this.view.message = undefined;
    }
    const n = this.ctx.patches.list().length;
    this.view.description = n ? `${this.ctx.patches.active().length}/${n} active` : undefined;
    this.changed.fire();
  }

  getTreeItem(item: PatchItem): vscode.TreeItem {
    return item;
  }

  getChildren(item?: PatchItem): PatchItem[] {
    if (item) return [];
    return this.ctx.patches.list().map((p) => new PatchItem(p, this.ctx.patches.provenance(p)));
  }

  dispose(): void {
    this.changed.dispose();
    for (const d of this.disposables) d.dispose();
  }
}

function label(p: Patch): string {
  const desired = p.case.desired.trim() || JSON.stringify(p.case.desired);
  return desired.length > 48 ? `${desired.slice(0, 47)}…` : desired;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(0)}%`;
}

function tail(s: string, n: number): string {
  return s.length > n ? `…${s.slice(-n)}` : s;
}

function inline(s: string): string {
  return s.replace(/`/g, "'").replace(/\n/g, '⏎');
}
