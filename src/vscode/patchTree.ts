// The Patches view: one row per patch, labelled with its desired text (whitespace visible: ␣ ⇥) and the file:line it
// was made at. One enable control per row (an eye to disable, a closed eye to enable; Space on the focused row does
// the same), a wrench icon on active patches. Clicking a row opens the patch read-only in the repair panel. While
// the model does not load, the patches of the file stay listed, marked as not applied; so do patches held back by
// workspace trust (from the repository: the eye accepts them; Restricted Mode).
import { patchNeuronNames } from '../engine/neuronName';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { validatePatchFile } from '../engine/patches/validate';
import type { Patch } from '../engine/types';
import type { Ctx } from './ctx';
import { visibleEdges, visibleWhitespace } from './panel/messages';
import type { Provenance } from './trustPolicy';

/** What the Patches view says of a patch held back (see trustPolicy.ts). */
const HELD: Partial<Record<Provenance, string>> = {
  repository: 'from the repository, not applied: the eye accepts it',
  restricted: 'not applied in Restricted Mode',
};

export class PatchItem extends vscode.TreeItem {
  constructor(
    readonly patch: Patch,
    /** The model is not loaded: the patch is listed from the file but not applied. */
    readonly unloaded = false,
    /** Held back by workspace trust: from the repository (accepted by enabling it), or Restricted Mode. */
    held: Provenance = 'applied',
  ) {
    super(label(patch), vscode.TreeItemCollapsibleState.None);
    this.id = patch.id;
    const m = patch.metrics;
    const spec = m.specificity === null ? '' : ` · ${pct(1 - m.specificity)} of checked completions changed`;
    const where = patch.case.source ? `${patch.case.source} · ` : '';
    const neurons = patch.edits.length + (patch.added?.length ?? 0);
    this.description = unloaded
      ? `${where}not applied: the model did not load`
      : `${where}${patch.enabled ? '' : 'disabled · '}${patch.method} · ${neurons} neuron${neurons === 1 ? '' : 's'}${spec}`;
    this.contextValue = unloaded ? 'unloaded' : patch.enabled ? 'patch.enabled' : 'patch.disabled';
    this.iconPath = new vscode.ThemeIcon(unloaded ? 'warning' : patch.enabled ? 'wrench' : 'circle-slash');
    const heldText = HELD[held];
    if (heldText && !unloaded) {
      this.description = `${where}${heldText}`;
      this.contextValue = held === 'repository' ? 'patch.held' : 'patch.restricted';
      this.iconPath = new vscode.ThemeIcon('shield');
    }
    this.command = { command: 'neuronpatch.openPatch', title: 'Open Patch', arguments: [patch.id] };
    this.accessibilityInformation = {
      label: `Patch ${label(patch)}, ${unloaded ? 'not applied' : patch.enabled ? 'enabled' : 'disabled'}, ${this.description}. Space toggles it.`,
    };
    const md = new vscode.MarkdownString();
    md.appendMarkdown(`**Patch** \`${patch.id}\` (${patch.method}, ${new Date(patch.createdAt).toLocaleString()})`);
    if (patch.case.source) md.appendMarkdown(` made at \`${inline(patch.case.source)}\``);
    md.appendMarkdown(`\n\nPrompt ends with:\n`);
    md.appendCodeblock(tail(patch.case.prompt, 200), '');
    md.appendMarkdown(`Before: \`${inline(patch.case.before)}\`  \nDesired: \`${inline(patch.case.desired)}\`  \n`);
    md.appendMarkdown(`After: \`${inline(patch.case.after)}\`\n\n`);
    md.appendMarkdown(
      `Neurons: ${patchNeuronNames(patch).join(', ') || 'none'}  \n` +
        `Failing tokens: ${m.failingTokens} · specificity ${m.specificity === null ? 'n/a' : pct(m.specificity)} · ` +
        `mean KL ${m.meanKl === null ? 'n/a' : m.meanKl.toExponential(2)} · repair time ${secsOf(m.repairMs)} (tracing, solving and confirming; the repair panel's wall time also counts checking your workspace's completions)`,
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
    });
    this.disposables.push(
      this.view,
      // Showing the view is a reason to load the model: the patch file is bound to it.
      this.view.onDidChangeVisibility((e) => {
        if (e.visible && ctx.models.current.kind === 'idle') void ctx.models.get({ quiet: true });
      }),
      ctx.patches.onDidChange(() => this.refresh()),
      ctx.models.onDidChange(() => this.refresh()),
    );
    this.refresh();
  }

  /** The patch of the focused (or else the first selected) row: what Space toggles. */
  focused(): Patch | undefined {
    return this.view.selection[0]?.patch;
  }

  refresh(): void {
    const s = this.ctx.patches.current;
    const m = this.ctx.models.current;
    if (s.kind === 'invalid') {
      this.view.message = `The patch file is invalid (line ${s.at.line + 1}): ${s.message.split('\n')[0].replace(/\.$/, '')}. Nothing is written to it until you fix it.`;
    } else if (s.kind === 'ready' && s.displaced) {
      this.view.message = `Patches of this model: ${vscode.workspace.asRelativePath(s.file)} (${vscode.workspace.asRelativePath(s.displaced.named)} holds those of ${JSON.stringify(s.displaced.model)}).`;
    } else if (m.kind === 'failed') {
      this.view.message = `The model did not load, so these patches are not applied: ${m.message.split('\n')[0]}`;
    } else if (m.kind === 'loading') {
      this.view.message = 'Loading the model…';
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
    const listed = this.ctx.patches.list();
    if (listed.length || this.ctx.models.current.kind !== 'failed') return listed.map((p) => new PatchItem(p, false, this.ctx.patches.provenance(p)));
    return patchesOnDisk(this.ctx.patches.file).map((p) => new PatchItem(p, true));
  }

  dispose(): void {
    this.changed.dispose();
    for (const d of this.disposables) d.dispose();
  }
}

/** The patches a patch file holds, read without a model (for listing while the model does not load); [] if none. */
export function patchesOnDisk(file: string | null): Patch[] {
  if (!file) return [];
  try {
    return validatePatchFile(JSON.parse(fs.readFileSync(file, 'utf8'))).patches;
  } catch {
    return [];
  }
}

/** The row's label: the desired text with its edge whitespace visible (␣ ⇥) and newlines as ⏎, cut to 48 characters. */
export function label(p: Patch): string {
  const desired = p.case.desired.trim() === '' ? visibleWhitespace(p.case.desired) : visibleEdges(p.case.desired).replace(/\r?\n/g, '⏎');
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

/** "58 ms", "2.1 s": the repair panel's way of writing a time. */
function secsOf(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
