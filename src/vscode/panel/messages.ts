// The messages between the extension and the repair panel's webview, in both directions.
// Imported by the extension (src/vscode/panel/panel.ts) and by the webview bundle (webview/main.ts):
// plain types plus one runtime validator; type-only imports of the domain, so the webview stays free of node code.
import { type ModelInfo, type Patch, REPAIR_METHODS, type RepairMethod, type RepairResult } from '../../engine/types';

/** One step of a repair as the user reads it ("tracing the neurons behind the completion"), with its time. */
export interface PhaseTime {
  name: string;
  ms: number;
}

/** Where a running repair is: the phase in plain words, a count where the phase has one, when it started. */
export interface RepairProgress {
  phase: string;
  done?: number;
  total?: number;
  /** Date.now() when the repair started (the webview shows the wall time going up). */
  startedAt: number;
}

/** An earlier patch the new one breaks, as the panel names it. */
export interface PanelConflict {
  patchId: string;
  /** The earlier patch's desired text (its label). */
  desired: string;
  /** What its case completes with under the new patch. */
  got: string;
  /** Where it was made (`sample.py:2:11`), when known. */
  source?: string;
}

/** What the panel shows: one repair, while it runs, before it is applied or after; or a saved patch (read-only). */
export interface PanelState {
  model: Pick<ModelInfo, 'name' | 'layers' | 'neurons' | 'hash'>;
  /** Identifies the run (the patch id once there is a result): the webview's actions name it. */
  runId: string;
  /** The repair's result; null while it runs. */
  result: RepairResult | null;
  /** A saved patch shown from the Patches view: its case and neurons, read-only. */
  saved: Patch | null;
  /** Where the prompt came from, for the header ("demo.py:12:8"). */
  source: string;
  /** The document and line the prompt ends on, to run the repair again after a window reload. */
  origin: { uri: string; line: number } | null;
  /** The desired text asked for (shown while the repair runs). */
  desired: string;
  method: RepairMethod;
  /**
   * 'running': the repair is under way; 'pending': not applied yet; 'applied': saved to the patch file (shown as
   * disabled when its patch is turned off); 'discarded' by the user; 'failed': the repair stopped with an error
   * (or the window reloaded while it ran), before there was anything to apply or discard.
   */
  status: 'running' | 'pending' | 'applied' | 'discarded' | 'failed' | 'saved';
  /** An applied repair whose patch is now disabled in the patch file (the eye icon in the Patches view). */
  disabled?: boolean;
  /** Progress of the running repair. */
  progress: RepairProgress | null;
  /** Wall time of the finished repair, from the command to the result, and its phases in order. */
  timing: { totalMs: number; phases: PhaseTime[] } | null;
  /** Earlier patches the result breaks (the reason it is not a success). */
  conflicts: PanelConflict[];
  /** Share of workspace completions a patch may change before the panel warns and Apply asks to confirm. */
  warnAbove: number;
  /** Apply was pressed on a patch with side effects past the threshold: the panel asks to confirm. */
  confirming: boolean;
  /** A step in flight (applying, re-running with the other method, exporting), shown as progress. */
  busy: string | null;
  /** Last error from an action, shown in the panel. */
  error: string | null;
  /** Set after a successful export: the folder written. */
  exportedTo: string | null;
}

export type ExtensionToWebview =
  /** `scrollY`: a position to restore (px from the top), sent when the webview (re)loads: shown again, or after a reload. */
  | { type: 'show'; state: PanelState; scrollY?: number }
  | { type: 'progress'; progress: RepairProgress }
  | { type: 'busy'; what: string | null }
  | { type: 'error'; message: string };

export type WebviewAction =
  | 'apply'
  | 'confirmApply'
  | 'cancelConfirm'
  | 'discard'
  | 'otherMethod'
  | 'export'
  | 'cancel'
  | 'disableConflict'
  | 'replaceConflict'
  | 'reveal';

export type WebviewToExtension =
  | { type: 'ready' }
  /** The panel's scroll position (px from the top) for the run it shows, sent a few times a second at most. */
  | { type: 'scroll'; runId: string; y: number }
  | { type: 'action'; action: WebviewAction; patchId: string; method?: RepairMethod };

const actions: readonly WebviewAction[] = [
  'apply', 'confirmApply', 'cancelConfirm', 'discard', 'otherMethod', 'export', 'cancel', 'disableConflict', 'replaceConflict', 'reveal',
];

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Exact-shape check of a message from the webview: known type, required fields of the right type, no extra keys. */
export function isWebviewMessage(x: unknown): x is WebviewToExtension {
  if (!isRecord(x)) return false;
  const keys = Object.keys(x).sort().join(',');
  switch (x.type) {
    case 'ready':
      return keys === 'type';
    case 'scroll':
      return (
        keys === 'runId,type,y' &&
        typeof x.runId === 'string' &&
        x.runId.length > 0 &&
        x.runId.length < 200 &&
        typeof x.y === 'number' &&
        Number.isFinite(x.y) &&
        x.y >= 0 &&
        x.y < 1e7
      );
    case 'action':
      return (
        (keys === 'action,patchId,type' ||
          (keys === 'action,method,patchId,type' && x.action === 'otherMethod' && (REPAIR_METHODS as readonly unknown[]).includes(x.method))) &&
        typeof x.action === 'string' &&
        (actions as readonly string[]).includes(x.action) &&
        typeof x.patchId === 'string' &&
        x.patchId.length > 0 &&
        x.patchId.length < 200
      );
    default:
      return false;
  }
}

export function otherMethod(m: RepairMethod): RepairMethod {
  return otherMethods(m)[0];
}

/** The methods the panel offers besides the one shown, in the order of REPAIR_METHODS. */
export function otherMethods(m: RepairMethod): RepairMethod[] {
  return REPAIR_METHODS.filter((x) => x !== m);
}

/**
 * Whitespace made visible: every space ␣, tab ⇥, newline ⏎ (followed by the line break where `breaks`), and an
 * empty text as ∅. For token chips, labels and the desired text, where a leading space changes what the model
 * is taught.
 */
export function visibleWhitespace(text: string, opts: { breaks?: boolean } = {}): string {
  if (text === '') return '∅';
  return text.replace(/ /g, '␣').replace(/\t/g, '⇥').replace(/\r?\n/g, opts.breaks ? '⏎\n' : '⏎');
}

/**
 * Only the leading and trailing whitespace made visible (␣, ⇥): for texts a person edits, where inner spaces read
 * better as spaces but an edge space is the one that cannot be seen.
 */
export function visibleEdges(text: string): string {
  const lead = /^[ \t]*/.exec(text)![0];
  const rest = text.slice(lead.length);
  const trail = /[ \t]*$/.exec(rest)![0];
  const mark = (s: string): string => s.replace(/ /g, '␣').replace(/\t/g, '⇥');
  return mark(lead) + rest.slice(0, rest.length - trail.length) + mark(trail);
}

/** Reads a text typed with visible whitespace back: ␣ is a space, ⇥ a tab, ⏎ a newline. */
export function fromVisible(text: string): string {
  return text.replace(/␣/g, ' ').replace(/⇥/g, '\t').replace(/⏎\n?/g, '\n');
}

/**
 * The desired text would glue onto the word before the cursor ("return" + "a + b" → "returna + b"): the prompt
 * ends in a word character, the desired text starts with one, and the model's own completion (when given) did not
 * continue that word itself (a cursor in the middle of a word is meant to be continued). Returns the word it would
 * glue onto, or undefined.
 */
export function gluesOnto(prompt: string, desired: string, completion?: string): string | undefined {
  const word = /[\p{L}\p{N}_]/u;
  if (!word.test(desired.charAt(0))) return undefined;
  if (completion !== undefined && word.test(completion.charAt(0))) return undefined;
  const m = /[\p{L}\p{N}_]+$/u.exec(prompt);
  return m ? m[0] : undefined;
}

/** The share of checked workspace completions a result changes (0 when none were checked). */
export function changedShare(r: Pick<RepairResult, 'specificity'>): number {
  return r.specificity === null ? 0 : 1 - r.specificity;
}
