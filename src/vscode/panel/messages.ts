// The messages between the extension and the repair panel's webview, in both directions.
// Imported by the extension (src/vscode/panel/panel.ts) and by the webview bundle (webview/main.ts):
// plain types plus one runtime validator; type-only imports of the domain, so the webview stays free of node code.
import { type ModelInfo, REPAIR_METHODS, type RepairMethod, type RepairResult } from '../../engine/types';

/** What the panel shows: one repair, before it is applied or after. */
export interface PanelState {
  model: Pick<ModelInfo, 'name' | 'layers' | 'neurons' | 'hash'>;
  result: RepairResult;
  /** Where the prompt came from, for the header ("demo.py:12:8"). */
  source: string;
  /** 'pending': not applied yet; 'applied': saved to the patch file; 'discarded'. */
  status: 'pending' | 'applied' | 'discarded';
  /** A step in flight (applying, re-running with the other method, exporting), shown as progress. */
  busy: string | null;
  /** Last error from an action, shown in the panel. */
  error: string | null;
  /** Set after a successful export: the folder written. */
  exportedTo: string | null;
}

export type ExtensionToWebview =
  | { type: 'show'; state: PanelState }
  | { type: 'busy'; what: string | null }
  | { type: 'error'; message: string };

export type WebviewAction = 'apply' | 'discard' | 'otherMethod' | 'export';

export type WebviewToExtension =
  | { type: 'ready' }
  | { type: 'action'; action: WebviewAction; patchId: string; method?: RepairMethod };

const actions: readonly WebviewAction[] = ['apply', 'discard', 'otherMethod', 'export'];

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
