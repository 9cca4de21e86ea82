// The repair panel: what the repair changed and why, and the buttons to keep it or not.
// Plain DOM plus @vscode-elements/elements; state comes from the extension as typed messages
// (src/vscode/panel/messages.ts) and is kept with setState (scroll position included) so a hidden panel, or one
// restored after a window reload, comes back as it was.
import '@vscode-elements/elements/dist/vscode-badge/index.js';
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-collapsible/index.js';
import '@vscode-elements/elements/dist/vscode-icon/index.js';
import {
  changedShare,
  visibleWhitespace,
  type ExtensionToWebview,
  type PanelState,
  type RepairProgress,
  type WebviewAction,
  type WebviewToExtension,
} from '../src/vscode/panel/messages';
import { sideEffectLine as measuredLine } from '../src/engine/repair/sideEffectText';
import { type Patch, REPAIR_METHODS, type RepairMethod, type RepairResult, type TokenScore } from '../src/engine/types';
import { diffWords, type DiffPart } from './diff';
import { neuronName, patchNeuronNames } from '../src/engine/neuronName';

interface VsCodeApi {
  postMessage(m: WebviewToExtension): void;
  getState(): unknown;
  setState(s: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

/** What the webview keeps across a hide or a window reload. */
interface Kept {
  state: PanelState;
  scrollY: number;
}

const vscode = acquireVsCodeApi();
const app = document.getElementById('app') as HTMLElement;
let state: PanelState | undefined;
let scrollY = 0;
let ticker: number | undefined;
/** A scroll position being restored after a reload (undefined once it is done or the user scrolled). */
let restoreY: number | undefined;

type Child = Node | string | null | undefined | false;

/** A tiny element builder: attributes (strings, booleans, listeners) and children. */
function h(tag: string, attrs: Record<string, string | number | boolean | EventListener | undefined> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** Whitespace made visible in token texts (␣ ⇥ ⏎; ∅ for an empty token). */
function tok(text: string): HTMLElement {
  return h('code', { class: 'tok', title: JSON.stringify(text) }, visibleWhitespace(text));
}

/** A text with its leading and trailing whitespace (and tabs) shown as ␣ ⇥ marks, the rest as it is. */
function edgesVisible(text: string, lead: boolean, trail: boolean): Child[] {
  const out: Child[] = [];
  const head = lead ? /^[ \t]*/.exec(text)![0] : '';
  const rest = text.slice(head.length);
  const tail = trail ? /[ \t]*$/.exec(rest)![0] : '';
  const mark = (s: string): HTMLElement => h('span', { class: 'ws', 'aria-label': s.length === 1 ? (s === '\t' ? 'tab' : 'space') : `${s.length} spaces` }, s.replace(/ /g, '␣').replace(/\t/g, '⇥'));
  if (head) out.push(mark(head));
  const middle = rest.slice(0, rest.length - tail.length);
  middle.split(/(\t)/).forEach((p) => out.push(p === '\t' ? mark('\t') : p));
  if (tail) out.push(mark(tail));
  return out;
}

function diffLine(parts: DiffPart[], testId: string, raw: string): HTMLElement {
  const el = h('code', { class: 'completion', 'data-test': testId, 'data-text': raw });
  parts.forEach((p, i) => {
    const shown = edgesVisible(p.text, i === 0, i === parts.length - 1);
    if (p.kind === 'same') el.append(...(shown.filter(Boolean) as (Node | string)[]));
    else el.append(h('span', { class: p.kind }, ...shown));
  });
  if (parts.length === 0) el.append(emptyCompletion());
  return el;
}

function plainLine(text: string, testId: string): HTMLElement {
  return h('code', { class: 'completion', 'data-test': testId, 'data-text': text }, ...(text ? edgesVisible(text, true, true) : [emptyCompletion()]));
}

/** What an empty completion shows as (the model stopped at once), muted, instead of a blank cell. */
function emptyCompletion(): HTMLElement {
  return h('span', { class: 'muted empty', 'data-test': 'empty' }, '(empty completion)');
}

const pct = (x: number): string => (x > 0 && x < 1e-4 ? `${(100 * x).toExponential(1)} %` : `${(100 * x).toFixed(x < 0.01 ? 2 : 1)} %`);
const num = (x: number | null, digits = 3): string => (x === null ? 'n/a' : x.toFixed(digits));
const secs = (ms: number): string => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
/** Elapsed time while running, in whole seconds (it changes once a second). */
const elapsedText = (ms: number): string => `${Math.floor(ms / 1000)} s`;

function scores(list: TokenScore[]): HTMLElement {
  const el = h('span', { class: 'scores' });
  list.slice(0, 5).forEach((s) => el.append(tok(s.text)));
  if (!list.length) el.append(h('span', { class: 'muted' }, '—'));
  return el;
}

function section(title: string, id: string, open: boolean, ...body: Child[]): HTMLElement {
  return h('vscode-collapsible', { heading: title, id, open }, h('div', { class: 'section' }, ...body));
}

/** A table in a scroll box that the keyboard can reach (Tab to it, arrows scroll) when it is wider than the panel. */
function table(testId: string, caption: string, head: string[], rows: Child[][]): HTMLElement {
  return h(
    'div',
    { class: 'table-scroll', tabindex: 0, role: 'region', 'aria-label': caption, 'data-test': `${testId}-scroll` },
    h(
      'table',
      { 'data-test': testId },
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, ...head.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c))))),
    ),
  );
}

function completionSection(r: RepairResult): HTMLElement {
  const d = diffWords(r.before, r.after);
  const promptTail = r.trace.prompt.split('\n').slice(-3).join('\n');
  return section(
    'Completion',
    'completion',
    true,
    h('pre', { class: 'prompt', 'aria-label': 'End of the prompt' }, promptTail, h('span', { class: 'cursor' }, '▍')),
    h(
      'dl',
      { class: 'completions' },
      h('dt', {}, 'Before'),
      h('dd', {}, diffLine(d.a, 'before', r.before)),
      h('dt', {}, 'After'),
      h('dd', {}, diffLine(d.b, 'after', r.after)),
      h('dt', {}, 'Desired'),
      h('dd', {}, plainLine(r.trace.desired, 'desired')),
    ),
    h('p', { class: 'muted legend' }, '␣ marks a space and ⇥ a tab at the start or end of a completion.'),
  );
}

function positionsSection(r: RepairResult): HTMLElement {
  const rows = r.positions.map((p) => [
    String(p.index),
    tok(p.text),
    `${pct(p.before.prob)} (rank ${p.before.rank})`,
    h('span', { class: p.after.rank === 1 ? 'good' : 'bad' }, p.after.rank === 1 ? '✓ ' : '✗ ', `${pct(p.after.prob)} (rank ${p.after.rank})`),
  ]);
  return section(
    `Desired token at each failing position (${r.positions.length})`,
    'positions',
    true,
    table('positions', 'Probability and rank of the desired token, before and after the patch', ['#', 'Token', 'Before', 'After'], rows),
  );
}

function neuronsSection(r: RepairResult, m: number): HTMLElement {
  const rows = r.neurons.map((n) => [
    h('code', { title: n.added ? `added by this patch; activation ${n.activation?.toFixed(3) ?? 'n/a'} at the first failing token` : '' }, neuronName(n, m), n.added ? ' (added)' : ''),
    num(n.attribution),
    num(n.ablationEffect),
    scores(n.promotesBefore),
    scores(n.promotesAfter),
  ]);
  // A keyed repair adds neurons (and may edit none): the title says which kind the table lists.
  const added = r.neurons.filter((n) => n.added).length;
  const edited = r.neurons.length - added;
  const title = !added ? `Edited neurons (${edited})` : !edited ? `Added neurons (${added})` : `Neurons (${edited} edited, ${added} added)`;
  return section(
    title,
    'neurons',
    true,
    table(
      'neurons',
      'Neurons edited by the patch: direct attribution on the logit gap (desired − model), ablation effect, and the logit lens of the value vector: the tokens it promotes before and after the edit',
      ['Neuron', 'Attribution', 'Ablation effect', 'Promotes (before)', 'Promotes (after)'],
      rows,
    ),
  );
}

function tracedSection(r: RepairResult, m: number): HTMLElement | null {
  const at = r.trace.at;
  if (!at?.neurons.length) return null;
  const edited = new Set(r.neurons.map((n) => `${n.layer}.${n.neuron}`));
  const rows = at.neurons.map((n) => [
    h('code', {}, neuronName(n, m), n.added ? ' (added)' : edited.has(`${n.layer}.${n.neuron}`) ? ' ✎' : ''),
    num(n.activation),
    num(n.attribution),
    num(n.ablationEffect),
    scores(n.promotes),
    scores(n.suppresses),
  ]);
  return section(
    `Traced neurons at the first failing position (${at.neurons.length})`,
    'traced',
    false,
    h(
      'p',
      { class: 'muted' },
      'At ',
      tok(at.position.prefix.slice(-24)),
      ' the model prefers ',
      tok(at.position.model.text),
      ` (${pct(at.position.model.prob)}) to `,
      tok(at.position.desired.text),
      ` (${pct(at.position.desired.prob)}, rank ${at.position.desired.rank}). ✎ marks the neurons the patch edits.`,
    ),
    table(
      'traced',
      'Neurons ranked by their direct attribution on the logit gap, with the logit lens of their value vectors',
      ['Neuron', 'Activation', 'Attribution', 'Ablation effect', 'Promotes', 'Suppresses'],
      rows,
    ),
  );
}

function layersSection(r: RepairResult): HTMLElement | null {
  const layers = r.trace.at?.layers ?? [];
  if (!layers.length) return null;
  const max = Math.max(1e-9, ...layers.map((l) => Math.abs(l.effect)));
  const chart = h('div', { class: 'bars', role: 'list', 'data-test': 'layers', 'aria-label': 'Layer occlusion' });
  for (const l of [...layers].sort((a, b) => a.layer - b.layer)) {
    const bar = h('div', { class: `bar ${l.effect < 0 ? 'neg' : 'pos'}` });
    bar.style.width = `${(100 * Math.abs(l.effect)) / max}%`;
    chart.append(
      h(
        'div',
        { class: 'row', role: 'listitem', 'aria-label': `Layer ${l.layer}: ${l.effect.toFixed(3)}` },
        h('span', { class: 'label' }, `L${l.layer}`),
        h('div', { class: 'track' }, bar),
        h('span', { class: 'value' }, l.effect.toFixed(3)),
      ),
    );
  }
  return section(
    'Layer occlusion',
    'layers',
    true,
    h('p', { class: 'muted' }, 'Change of the desired token’s log-probability with each layer’s FFN silenced.'),
    chart,
  );
}

function sideEffectsSection(r: RepairResult): HTMLElement {
  const rows = r.changed.map((c) => [
    h('code', { class: 'prompt-tail' }, c.prompt.split('\n').pop() ?? ''),
    plainLine(c.before, 'changed-before'),
    plainLine(c.after, 'changed-after'),
  ]);
  return section(
    'Side effects',
    'side-effects',
    true,
    h(
      'ul',
      { class: 'metrics', 'data-test': 'metrics' },
      ...(r.sideEffects ? [
        h('li', {}, 'Token locality (teacher-forced, regression continuations): ', h('strong', {}, r.sideEffects.tokenLocality === null ? 'n/a' : pct(r.sideEffects.tokenLocality))),
        h('li', {}, 'Correct lines kept (your completions, workspace lines): ', h('strong', {}, r.sideEffects.kept ? `${r.sideEffects.kept.kept}/${r.sideEffects.kept.of}` : 'n/a')),
        h('li', {}, 'Held-out loss change: ', h('strong', {}, r.sideEffects.heldOutLoss ? `${r.sideEffects.heldOutLoss.change >= 0 ? '+' : ''}${(100 * r.sideEffects.heldOutLoss.change).toFixed(3)} %` : 'n/a')),
      ] : []),
      ...(r.layerChoice ? [h('li', {}, `Added neurons: ${r.layerChoice}`)] : []),
      h('li', {}, 'Specificity (workspace completions unchanged): ', h('strong', {}, r.specificity === null ? 'n/a' : pct(r.specificity))),
      h('li', {}, 'Next token unchanged: ', h('strong', {}, r.nextTokenSpecificity == null ? 'n/a' : pct(r.nextTokenSpecificity))),
      h('li', {}, 'Mean KL on those prompts: ', h('strong', {}, r.meanKl === null ? 'n/a' : r.meanKl.toExponential(2))),
      h('li', {}, 'Generalization: ', h('strong', {}, r.generalization === null ? 'n/a' : pct(r.generalization))),
    ),
    rows.length
      ? table('changed', 'Completions from your workspace that the patch changes', ['Prompt (last line)', 'Before', 'After'], rows)
      : h('p', { class: 'muted', 'data-test': 'changed' }, 'No completion from your workspace changed.'),
  );
}

function send(action: WebviewAction, method?: RepairMethod): void {
  if (!state) return;
  vscode.postMessage({ type: 'action', action, patchId: state.runId, ...(method ? { method } : {}) });
}

/** Keyboard shortcuts of the panel, shown in tooltips and announced through aria-keyshortcuts. */
const shortcuts: Partial<Record<WebviewAction, string>> = {
  apply: 'Alt+A',
  discard: 'Alt+D',
  otherMethod: 'Alt+M',
  cancel: 'Escape',
};

function button(id: string, action: WebviewAction, label: string, tip: string, opts: { icon?: string; secondary?: boolean; disabled?: boolean; method?: RepairMethod } = {}): HTMLElement {
  // Alt+M tries the first other method; the others have no shortcut.
  const keys = action === 'otherMethod' && id !== 'other-method' ? undefined : shortcuts[action];
  return h(
    'vscode-button',
    {
      id,
      icon: opts.icon,
      secondary: opts.secondary,
      disabled: opts.disabled,
      title: keys ? `${tip} (${keys})` : tip,
      'aria-keyshortcuts': keys,
      onclick: () => send(action, opts.method),
    },
    label,
  );
}

const harmful = (s: PanelState): boolean => !!s.result && s.result.success && changedShare(s.result) > s.warnAbove;

function toolbar(s: PanelState): HTMLElement | null {
  const r = s.result;
  if (!r) return null;
  const pending = s.status === 'pending';
  const idle = !s.busy;
  // Every other method; after a fallback the minimal method has already been tried: asking again would end the same way.
  const others = REPAIR_METHODS.filter((m) => m !== r.method && !(r.fallback && m === 'minimal'));
  const canTryOther = pending && idle;
  return h(
    'div',
    { class: 'toolbar', role: 'toolbar', 'aria-label': 'Repair actions' },
    button('apply', 'apply', harmful(s) ? 'Apply…' : 'Apply', harmful(s) ? 'Apply the patch (asks first: it changes many completions)' : 'Apply the patch: completions use it at once', {
      icon: 'check', secondary: harmful(s), disabled: !(pending && r.success && idle && !s.confirming),
    }),
    button('discard', 'discard', 'Discard', 'Discard this repair and close the panel', { icon: 'discard', secondary: true, disabled: !(pending && idle) }),
    ...others.map((m, i) =>
      button(i === 0 ? 'other-method' : `other-method-${m}`, 'otherMethod', `Try the ${m} method`, `Repair again with the ${m} method`, {
        icon: 'refresh', secondary: true, disabled: !canTryOther, method: m,
      })),
    button('export', 'export', 'Export patched model', 'Write a copy of the model with the patches baked in', { icon: 'package', secondary: true, disabled: !idle }),
    s.busy ? h('span', { class: 'busy' }, h('vscode-icon', { name: 'watch' }), s.busy) : null,
  );
}

function statusText(s: PanelState): { text: string; kind: 'good' | 'warn' | 'bad' | 'plain' } {
  const r = s.result;
  if (s.status === 'running') return { text: 'Repairing…', kind: 'plain' };
  if (s.status === 'saved') return { text: s.saved?.enabled ? 'Saved patch · enabled' : 'Saved patch · disabled', kind: 'plain' };
  if (s.status === 'applied') return s.disabled ? { text: 'Saved patch · disabled', kind: 'plain' } : { text: 'Applied', kind: 'good' };
  if (s.status === 'discarded') return { text: 'Discarded', kind: 'plain' };
  if (s.status === 'failed') return { text: 'Failed', kind: 'bad' };
  if (!r) return { text: '', kind: 'plain' };
  if (s.conflicts.length) return { text: 'Breaks an earlier patch', kind: 'bad' };
  if (!r.success) return { text: 'Did not reach the desired text', kind: 'bad' };
  if (harmful(s)) return { text: 'Ready, with side effects: check before applying', kind: 'warn' };
  return { text: 'Ready to apply', kind: 'good' };
}

/** The side effects in one line, at the top: how many workspace completions change, and the next token. */
function sideEffectLine(s: PanelState): HTMLElement | null {
  const r = s.result;
  if (!r) return null;
  if (r.specificity === null)
    return h('p', { class: 'effects muted', 'data-test': 'effects' }, 'Side effects were not checked (no completions from your workspace to check).');
  const total = Math.round(r.changed.length / Math.max(1e-9, 1 - r.specificity)) || 0;
  const n = r.changed.length;
  const checked = n ? `${n} of ${total}` : 'none of the';
  const next = r.nextTokenSpecificity == null ? '' : `; the next token changes on ${pct(1 - r.nextTokenSpecificity)}`;
  const warn = harmful(s);
  return h(
    'p',
    { class: `effects ${warn ? 'warning' : ''}`, 'data-test': 'effects', role: warn ? 'alert' : undefined },
    h('vscode-icon', { name: warn ? 'warning' : 'info' }),
    ` Changes ${checked} completions checked from your workspace (${pct(changedShare(r))})${next}`,
    r.sideEffects ? `; ${measuredLine(r.sideEffects, 'of your completions')}.` : '.',
    ...(r.sideEffects?.broken.length ? [' Breaks: ', ...r.sideEffects.broken.map((b, i) => h('code', {}, `${i ? ', ' : ''}${b.desired}`))] : []),
    warn ? ` That is more than the ${pct(s.warnAbove)} the setting allows without asking.` : '',
  );
}

function conflictBox(s: PanelState): HTMLElement | null {
  const c = s.conflicts[0];
  if (!c || s.status !== 'pending') return null;
  const more = s.conflicts.length > 1 ? ` (and ${s.conflicts.length - 1} more)` : '';
  return h(
    'div',
    { class: 'conflict', role: 'alert', 'data-test': 'conflict' },
    h(
      'p',
      {},
      h('strong', {}, 'This repair breaks an earlier patch. '),
      'With it, the patch for ',
      tok(c.desired),
      c.source ? ` (made at ${c.source})` : '',
      ' would complete ',
      tok(c.got),
      ` instead${more}. The two cannot hold together, so this repair is not applied.`,
    ),
    h(
      'div',
      { class: 'toolbar-inline' },
      button('disable-conflict', 'disableConflict', 'Disable it and retry', 'Disable the earlier patch (it stays in the patch file) and repair again', { icon: 'eye-closed', disabled: !!s.busy }),
      button('replace-conflict', 'replaceConflict', 'Replace it', 'Delete the earlier patch and repair again without it', { icon: 'replace', secondary: true, disabled: !!s.busy }),
    ),
  );
}

function confirmBox(s: PanelState): HTMLElement | null {
  if (!s.confirming || !s.result) return null;
  return h(
    'div',
    { class: 'confirm', role: 'alertdialog', 'aria-label': 'Apply a patch with side effects?', 'data-test': 'confirm' },
    h('p', {}, h('strong', {}, 'Apply anyway? '), `This patch changes ${pct(changedShare(s.result))} of the completions checked from your workspace. Other code may start completing differently.`),
    h(
      'div',
      { class: 'toolbar-inline' },
      button('confirm-apply', 'confirmApply', 'Apply anyway', 'Apply the patch despite its side effects', { icon: 'warning' }),
      button('cancel-confirm', 'cancelConfirm', 'Do not apply', 'Keep the patch unapplied', { secondary: true }),
    ),
  );
}

function progressRow(p: RepairProgress): HTMLElement {
  const elapsed = h('span', { class: 'elapsed', 'data-test': 'elapsed' }, elapsedText(Date.now() - p.startedAt));
  const count = p.total ? `: ${p.done ?? 0}/${p.total}` : '';
  // No spinner: an animation repaints the panel 60 times a second, which (in software rendering) takes CPU from
  // the repair itself. The phase, the count and a bar that moves when the count does say enough.
  return h(
    'div',
    { class: 'running', 'data-test': 'progress', role: 'status' },
    h('vscode-icon', { name: 'watch' }),
    h('span', { class: 'phase', 'data-test': 'phase' }, `${p.phase}${count}`),
    p.total ? h('progress', { max: p.total, value: p.done ?? 0, 'aria-label': p.phase }) : null,
    elapsed,
    button('cancel', 'cancel', 'Cancel', 'Stop the repair; nothing is changed', { icon: 'close', secondary: true }),
  );
}

function timingLine(s: PanelState): HTMLElement | null {
  const t = s.timing;
  if (!t) return null;
  return h(
    'p',
    { class: 'muted timing', 'data-test': 'timing' },
    `The repair took ${secs(t.totalMs)}`,
    t.phases.length ? `: ${t.phases.map((p) => `${p.name} ${secs(p.ms)}`).join(' · ')}.` : '.',
    // The engine's own time (the figure the Patches view's tooltip shows) is part of it: named, so the two agree.
    s.result ? ` Of it, tracing, solving and confirming took ${secs(s.result.patch.metrics.repairMs)} (the patch's repair time).` : '',
  );
}

function header(s: PanelState): HTMLElement {
  const r = s.result;
  const st = statusText(s);
  const icon = st.kind === 'good' ? 'pass' : st.kind === 'warn' ? 'warning' : st.kind === 'bad' ? 'error' : 'circle-large-outline';
  const method = r?.method ?? s.method;
  const details = r
    ? ` ${method} method · ${r.neurons.length} neuron${r.neurons.length === 1 ? '' : 's'} · ${r.failingTokens} failing token${r.failingTokens === 1 ? '' : 's'} · model ${s.model.name}`
    : ` ${method} method · model ${s.model.name}`;
  return h(
    'header',
    {},
    h('h1', {}, h('vscode-icon', { name: icon, class: st.kind }), s.saved ? ' Patch ' : ' Repair ', s.source ? `at ${s.source}` : ''),
    h('p', { class: 'summary' }, h('vscode-badge', { 'data-test': 'status', class: st.kind }, st.text), details),
    sideEffectLine(s),
    s.status === 'running' || s.saved ? h('p', { class: 'desired-line' }, 'Desired: ', plainLine(s.desired, 'desired-running')) : null,
    s.progress && s.status === 'running' ? progressRow(s.progress) : null,
    r?.fallback ? h('p', { class: 'muted', 'data-test': 'fallback' }, r.fallback) : null,
    conflictBox(s),
    confirmBox(s),
    s.error ? h('p', { class: 'error', role: 'alert' }, s.error) : null,
    s.exportedTo ? h('p', { class: 'muted' }, `Exported to ${s.exportedTo}`) : null,
    timingLine(s),
  );
}

/** A saved patch: its case and neurons as the patch file holds them. */
function savedSections(p: Patch): HTMLElement[] {
  const d = diffWords(p.case.before, p.case.after);
  const m = p.metrics;
  const added = p.added ?? [];
  const names = patchNeuronNames({ edits: [], added });
  const norm = (v: number[]): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const made = h('p', { class: 'muted' }, `Made with the ${p.method} method on ${new Date(p.createdAt).toLocaleString()}; specificity ${m.specificity === null ? 'n/a' : pct(m.specificity)}, mean KL ${m.meanKl === null ? 'n/a' : m.meanKl.toExponential(2)}.`);
  return [
    h(
      'div',
      { class: 'toolbar', role: 'toolbar', 'aria-label': 'Patch actions' },
      p.case.source ? button('reveal', 'reveal', `Go to ${p.case.source}`, 'Open the file where this patch was made') : null,
    ),
    section(
      'Completion',
      'completion',
      true,
      h('pre', { class: 'prompt', 'aria-label': 'End of the prompt' }, p.case.prompt.split('\n').slice(-3).join('\n'), h('span', { class: 'cursor' }, '▍')),
      h(
        'dl',
        { class: 'completions' },
        h('dt', {}, 'Before'),
        h('dd', {}, diffLine(d.a, 'before', p.case.before)),
        h('dt', {}, 'After'),
        h('dd', {}, diffLine(d.b, 'after', p.case.after)),
      ),
    ),
    // A keyed patch adds neurons and may edit none: its added neurons are the main content, and no empty table.
    ...(p.edits.length || !added.length
      ? [section(
          `Edited neurons (${p.edits.length})`,
          'neurons',
          true,
          p.edits.length
            ? table('neurons', 'Neurons the patch edits, with the size of each value-vector change', ['Neuron', 'Change (L2 norm)'], p.edits.map((e) => [
                h('code', {}, `L${e.layer}.N${e.neuron}`),
                norm(e.delta).toFixed(3),
              ]))
            : h('p', { class: 'muted' }, 'This patch edits no neuron.'),
          added.length ? null : made,
        )]
      : []),
    ...(added.length
      ? [section(
          `Added neurons (${added.length})`,
          'added',
          true,
          table('added', 'Keyed neurons the patch adds: each fires only where its key matches the code it was made for (key · x̂ above the threshold), and then adds its value vector', ['Neuron', 'Threshold', 'Key (L2 norm)', 'Value (L2 norm)'], added.map((a, i) => [
            h('code', {}, names[i] ?? `L${a.layer}`),
            a.threshold.toFixed(3),
            norm(a.key).toFixed(3),
            norm(a.value).toFixed(3),
          ])),
          made,
        )]
      : []),
  ];
}

function render(s: PanelState): void {
  const focusedId = (document.activeElement as HTMLElement | null)?.id;
  const sameRun = state?.runId === s.runId;
  // Replacing the content shrinks the page for a moment and the browser clamps the scroll: keep it.
  const y = sameRun ? window.scrollY : 0;
  state = s;
  keep();
  const r = s.result;
  const optional = (e: HTMLElement | null): HTMLElement[] => (e ? [e] : []);
  app.replaceChildren(
    header(s),
    ...optional(toolbar(s)),
    ...(r
      ? [completionSection(r), positionsSection(r), neuronsSection(r, s.model.neurons), ...optional(tracedSection(r, s.model.neurons)), ...optional(layersSection(r)), sideEffectsSection(r)]
      : s.saved
        ? savedSections(s.saved)
        : []),
  );
  app.dataset.status = s.status;
  app.dataset.busy = s.busy ? 'true' : 'false';
  if (focusedId) document.getElementById(focusedId)?.focus({ preventScroll: true });
  window.scrollTo(0, restoreY ?? y);
  tick();
}

/** The wall time of a running repair goes up once a second (a repaint a second, no more). */
function tick(): void {
  if (ticker !== undefined) window.clearInterval(ticker);
  ticker = undefined;
  if (state?.status !== 'running' || !state.progress) return;
  ticker = window.setInterval(() => {
    const el = document.querySelector('[data-test="elapsed"]');
    if (el && state?.progress) el.textContent = elapsedText(Date.now() - state.progress.startedAt);
  }, 1000);
}

function showProgress(p: RepairProgress): void {
  if (!state || state.status !== 'running') return;
  state = { ...state, progress: p };
  keep();
  const row = document.querySelector('[data-test="progress"]');
  const hadFocus = document.activeElement?.id === 'cancel';
  if (row) row.replaceWith(progressRow(p));
  else render(state);
  if (hadFocus) document.getElementById('cancel')?.focus();
}

function keep(): void {
  if (state) vscode.setState({ state, scrollY } satisfies Kept);
}

function isExtensionMessage(m: unknown): m is ExtensionToWebview {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

window.addEventListener('message', (e: MessageEvent<unknown>) => {
  const m = e.data;
  if (!isExtensionMessage(m)) return;
  if (m.type === 'show') {
    // When the page (re)loads the extension sends the last position it was told (VS Code's copy of our state can be
    // older after a window reload, or missing).
    if (m.scrollY !== undefined) restoreScroll(m.scrollY);
    render(m.state);
  }
  else if (m.type === 'progress') showProgress(m.progress);
  else if (m.type === 'busy' && state) render({ ...state, busy: m.what });
  else if (m.type === 'error' && state) render({ ...state, error: m.message, busy: null });
});

let scrollTimer: number | undefined;
window.addEventListener('scroll', () => {
  // A hidden webview (display: none while VS Code reloads or moves it) scrolls to 0: not the user's position.
  if (restoreY !== undefined || document.visibilityState === 'hidden' || document.documentElement.clientHeight === 0) return;
  scrollY = window.scrollY;
  if (scrollTimer !== undefined) window.clearTimeout(scrollTimer);
  scrollTimer = window.setTimeout(keepScroll, 150);
});

/** Keeps the scroll position in the webview's state and tells the extension, which keeps it across a reload. */
function keepScroll(): void {
  keep();
  if (!state) return;
  const y = Math.max(0, Math.round(scrollY));
  vscode.postMessage({ type: 'scroll', runId: state.runId, y });
  // Said on the page for the end-to-end tests, which wait for it instead of sleeping.
  document.body.dataset.keptScroll = String(y);
}

let settleObserver: ResizeObserver | undefined;
/**
 * Scrolls to `y` through the next renders while the page lays out (collapsibles render late, a panel coming back
 * has no height for a moment): again whenever the body's size changes, until the position is reached, the user
 * scrolls (wheel or key), or ten seconds pass.
 */
function restoreScroll(y: number): void {
  restoreY = y;
  scrollY = y;
  settleObserver?.disconnect();
  const until = Date.now() + 10_000;
  const observer = new ResizeObserver(() => settle());
  settleObserver = observer;
  const settle = (): void => {
    if (restoreY === undefined || settleObserver !== observer) return;
    window.scrollTo(0, restoreY);
    if (Math.abs(window.scrollY - restoreY) < 2 || Date.now() > until) {
      restoreY = undefined;
      observer.disconnect();
      settleObserver = undefined;
      keepScroll();
    }
  };
  observer.observe(document.body);
  requestAnimationFrame(settle);
}
window.addEventListener('wheel', () => (restoreY = undefined));
window.addEventListener('keydown', () => (restoreY = undefined));

// Keyboard: Alt+A applies, Alt+D discards, Alt+M tries the other method, Escape cancels a running repair (the
// buttons are also in the tab order and say their shortcut in their tooltip and aria-keyshortcuts).
window.addEventListener('keydown', (e) => {
  if (!state) return;
  if (e.key === 'Escape' && state.status === 'running') {
    e.preventDefault();
    send('cancel');
    return;
  }
  if (!e.altKey || state.busy) return;
  const key = e.key.toLowerCase();
  const action: WebviewAction | undefined = key === 'a' ? 'apply' : key === 'd' ? 'discard' : key === 'm' ? 'otherMethod' : undefined;
  if (!action) return;
  e.preventDefault();
  const el = document.getElementById(action === 'otherMethod' ? 'other-method' : action);
  if (el && !el.hasAttribute('disabled')) send(action);
});

const saved = vscode.getState() as Partial<Kept> | undefined;
if (saved && typeof saved === 'object' && saved.state && typeof saved.state === 'object' && 'runId' in saved.state) {
  // Back after a hide or a window reload: the scroll position is restored through the first renders.
  restoreScroll(Number(saved.scrollY) || 0);
  render(saved.state);
}
vscode.postMessage({ type: 'ready' });
