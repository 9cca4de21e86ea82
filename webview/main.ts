// The repair panel: what the repair changed and why, and the buttons to keep it or not.
// Plain DOM plus @vscode-elements/elements; state comes from the extension as typed messages
// (src/vscode/panel/messages.ts) and is kept with setState so a hidden panel comes back as it was.
import '@vscode-elements/elements/dist/vscode-badge/index.js';
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-collapsible/index.js';
import '@vscode-elements/elements/dist/vscode-icon/index.js';
import '@vscode-elements/elements/dist/vscode-progress-ring/index.js';
import type { ExtensionToWebview, PanelState, WebviewAction, WebviewToExtension } from '../src/vscode/panel/messages';
import { sideEffectLine } from '../src/engine/repair/sideEffectText';
import { REPAIR_METHODS, type RepairMethod, type RepairResult, type TokenScore } from '../src/engine/types';
import { diffWords, type DiffPart } from './diff';

interface VsCodeApi {
  postMessage(m: WebviewToExtension): void;
  getState(): unknown;
  setState(s: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const app = document.getElementById('app') as HTMLElement;
let state: PanelState | undefined;

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

/** Whitespace made visible in token texts. */
function tok(text: string): HTMLElement {
  return h('code', { class: 'tok' }, text.replace(/ /g, '␣').replace(/\n/g, '⏎').replace(/\t/g, '⇥') || '∅');
}

function diffLine(parts: DiffPart[], testId: string): HTMLElement {
  const el = h('code', { class: 'completion', 'data-test': testId });
  for (const p of parts) el.append(p.kind === 'same' ? p.text : h('span', { class: p.kind }, p.text));
  if (parts.length === 0) el.append(h('span', { class: 'muted' }, '(empty)'));
  return el;
}

const pct = (x: number): string => (x > 0 && x < 1e-4 ? `${(100 * x).toExponential(1)}%` : `${(100 * x).toFixed(x < 0.01 ? 2 : 1)}%`);
const num = (x: number | null, digits = 3): string => (x === null ? 'n/a' : x.toFixed(digits));

function scores(list: TokenScore[]): HTMLElement {
  const el = h('span', { class: 'scores' });
  list.slice(0, 5).forEach((s, i) => {
    if (i) el.append(' ');
    el.append(tok(s.text));
  });
  if (!list.length) el.append(h('span', { class: 'muted' }, '—'));
  return el;
}

function section(title: string, id: string, open: boolean, ...body: Child[]): HTMLElement {
  return h('vscode-collapsible', { heading: title, id, open }, h('div', { class: 'section' }, ...body));
}

function table(testId: string, caption: string, head: string[], rows: Child[][]): HTMLElement {
  return h(
    'table',
    { 'data-test': testId },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, ...head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c))))),
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
      h('dd', {}, diffLine(d.a, 'before')),
      h('dt', {}, 'After'),
      h('dd', {}, diffLine(d.b, 'after')),
      h('dt', {}, 'Desired'),
      h('dd', {}, h('code', { class: 'completion', 'data-test': 'desired' }, r.trace.desired)),
    ),
  );
}

function positionsSection(r: RepairResult): HTMLElement {
  const rows = r.positions.map((p) => [
    String(p.index),
    tok(p.text),
    `${pct(p.before.prob)} (rank ${p.before.rank})`,
    h('span', { class: p.after.rank === 1 ? 'good' : 'bad' }, `${pct(p.after.prob)} (rank ${p.after.rank})`),
  ]);
  return section(
    `Desired token at each failing position (${r.positions.length})`,
    'positions',
    true,
    table('positions', 'Probability and rank of the desired token, before and after the patch', ['#', 'Token', 'Before', 'After'], rows),
  );
}

function neuronsSection(r: RepairResult): HTMLElement {
  const rows = r.neurons.map((n) => [
    h('code', { title: n.added ? `added by this patch; activation ${n.activation?.toFixed(3) ?? 'n/a'} at the first failing token` : '' }, `L${n.layer}.N${n.neuron}`, n.added ? ' (added)' : ''),
    num(n.attribution),
    num(n.ablationEffect),
    scores(n.promotesBefore),
    scores(n.promotesAfter),
  ]);
  return section(
    `Edited neurons (${r.neurons.length})`,
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

function tracedSection(r: RepairResult): HTMLElement | null {
  const at = r.trace.at;
  if (!at?.neurons.length) return null;
  const edited = new Set(r.neurons.map((n) => `${n.layer}.${n.neuron}`));
  const rows = at.neurons.map((n) => [
    h('code', {}, `L${n.layer}.N${n.neuron}`, n.added ? ' (added)' : edited.has(`${n.layer}.${n.neuron}`) ? ' ✎' : ''),
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
    h('code', {}, c.before),
    h('code', {}, c.after),
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
      h('li', {}, 'Specificity (regression lines unchanged): ', h('strong', {}, r.specificity === null ? 'n/a' : pct(r.specificity))),
      h('li', {}, 'Next token unchanged: ', h('strong', {}, r.nextTokenSpecificity == null ? 'n/a' : pct(r.nextTokenSpecificity))),
      h('li', {}, 'Mean KL on regression prompts: ', h('strong', {}, r.meanKl === null ? 'n/a' : r.meanKl.toExponential(2))),
      h('li', {}, 'Generalization: ', h('strong', {}, r.generalization === null ? 'n/a' : pct(r.generalization))),
      h('li', {}, `Repair time: ${Math.round(r.ms)} ms (one generation: ${Math.round(r.generationMs)} ms)`),
    ),
    rows.length
      ? table('changed', 'Regression completions that changed', ['Prompt (last line)', 'Before', 'After'], rows)
      : h('p', { class: 'muted', 'data-test': 'changed' }, 'No regression completion changed.'),
  );
}

function capitalised(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function send(action: WebviewAction, method?: RepairMethod): void {
  if (!state) return;
  vscode.postMessage({ type: 'action', action, patchId: state.result.patch.id, ...(method ? { method } : {}) });
}

function toolbar(s: PanelState): HTMLElement {
  const r = s.result;
  const pending = s.status === 'pending';
  const idle = !s.busy;
  // Every other method; after a fallback the minimal method has already been tried: asking again would end the same way.
  const others = REPAIR_METHODS.filter((m) => m !== r.method && !(r.fallback && m === 'minimal'));
  const canTryOther = pending && idle;
  return h(
    'div',
    { class: 'toolbar', role: 'toolbar', 'aria-label': 'Repair actions' },
    h('vscode-button', { id: 'apply', icon: 'check', disabled: !(pending && r.success && idle), onclick: () => send('apply') }, 'Apply'),
    h('vscode-button', { id: 'discard', icon: 'discard', secondary: true, disabled: !(pending && idle), onclick: () => send('discard') }, 'Discard'),
    ...others.map((m, i) => h(
      'vscode-button',
      { id: i === 0 ? 'other-method' : `other-method-${m}`, icon: 'refresh', secondary: true, disabled: !canTryOther, onclick: () => send('otherMethod', m) },
      `Try the ${m} method`,
    )),
    h('vscode-button', { id: 'export', icon: 'package', secondary: true, disabled: !idle, onclick: () => send('export') }, 'Export patched model'),
    s.busy ? h('span', { class: 'busy' }, h('vscode-progress-ring', {}), s.busy) : null,
  );
}

function header(s: PanelState): HTMLElement {
  const r = s.result;
  const status =
    s.status === 'applied' ? 'Applied' : s.status === 'discarded' ? 'Discarded' : r.success ? 'Ready to apply' : 'Did not reach the desired text';
  return h(
    'header',
    {},
    h(
      'h1',
      {},
      h('vscode-icon', { name: r.success ? 'pass' : 'error', class: r.success ? 'good' : 'bad' }),
      ` Repair at ${s.source}`,
    ),
    // The first line: side effects in plain words, and any line the user had right that the repair breaks.
    r.sideEffects
      ? h('p', { class: 'side-effects-line', 'data-test': 'side-effects-line' },
        `${capitalised(sideEffectLine(r.sideEffects, 'of your completions'))}.`,
        ...(r.sideEffects.broken.length
          ? [' Breaks: ', ...r.sideEffects.broken.map((b, i) => h('code', {}, `${i ? ', ' : ''}${b.desired}`))]
          : []))
      : null,
    h(
      'p',
      { class: 'summary' },
      h('vscode-badge', { 'data-test': 'status' }, status),
      ` ${r.method} method · ${r.neurons.length} neuron${r.neurons.length === 1 ? '' : 's'} · ${r.failingTokens} failing token${r.failingTokens === 1 ? '' : 's'} · model ${s.model.name}`,
    ),
    r.fallback ? h('p', { class: 'muted', 'data-test': 'fallback' }, r.fallback) : null,
    s.error ? h('p', { class: 'error', role: 'alert' }, s.error) : null,
    s.exportedTo ? h('p', { class: 'muted' }, `Exported to ${s.exportedTo}`) : null,
  );
}

function render(s: PanelState): void {
  const focusedId = (document.activeElement as HTMLElement | null)?.id;
  state = s;
  vscode.setState(s);
  const r = s.result;
  const optional = (e: HTMLElement | null): HTMLElement[] => (e ? [e] : []);
  app.replaceChildren(
    header(s),
    toolbar(s),
    completionSection(r),
    positionsSection(r),
    neuronsSection(r),
    ...optional(tracedSection(r)),
    ...optional(layersSection(r)),
    sideEffectsSection(r),
  );
  app.dataset.status = s.status;
  app.dataset.busy = s.busy ? 'true' : 'false';
  if (focusedId) document.getElementById(focusedId)?.focus();
}

function isExtensionMessage(m: unknown): m is ExtensionToWebview {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

window.addEventListener('message', (e: MessageEvent<unknown>) => {
  const m = e.data;
  if (!isExtensionMessage(m)) return;
  if (m.type === 'show') render(m.state);
  else if (m.type === 'busy' && state) render({ ...state, busy: m.what });
  else if (m.type === 'error' && state) render({ ...state, error: m.message, busy: null });
});

// Keyboard: Alt+A applies, Alt+D discards, Alt+M tries the other method (the buttons are also in the tab order).
window.addEventListener('keydown', (e) => {
  if (!e.altKey || !state || state.busy) return;
  const key = e.key.toLowerCase();
  const action: WebviewAction | undefined = key === 'a' ? 'apply' : key === 'd' ? 'discard' : key === 'm' ? 'otherMethod' : undefined;
  if (!action) return;
  e.preventDefault();
  const button = document.getElementById(action === 'otherMethod' ? 'other-method' : action);
  if (button && !button.hasAttribute('disabled')) send(action);
});

const saved = vscode.getState() as PanelState | undefined;
if (saved && typeof saved === 'object' && 'result' in saved) render(saved);
vscode.postMessage({ type: 'ready' });
