// What the model sees at a position: the document's text before it, cut from the left to a bound
// (the engine cuts further to the context window and says so).
import * as vscode from 'vscode';

export const MAX_PROMPT_CHARS = 6000;

export function promptAt(doc: vscode.TextDocument, pos: vscode.Position): string {
  const end = doc.offsetAt(pos);
  const start = Math.max(0, end - MAX_PROMPT_CHARS);
  let text = doc.getText(new vscode.Range(doc.positionAt(start), pos));
  if (start > 0) {
    // Start at a line boundary so the model never sees half a line at the top.
    const nl = text.indexOf('\n');
    if (nl >= 0 && nl < text.length - 1) text = text.slice(nl + 1);
  }
  return text;
}

/**
 * A completion in the document's own line ending: the engine reads and writes LF (and gives a CRLF prompt's
 * completion back in CRLF), but a prompt of one line does not show the document's ending.
 */
export function inDocumentEol(doc: vscode.TextDocument, text: string): string {
  const lf = text.replace(/\r\n?/g, '\n');
  return doc.eol === vscode.EndOfLine.CRLF ? lf.replace(/\n/g, '\r\n') : lf;
}

/** `file.py:12:8` for headers and logs. */
export function describePosition(doc: vscode.TextDocument, pos: vscode.Position): string {
  return `${vscode.workspace.asRelativePath(doc.uri)}:${pos.line + 1}:${pos.character + 1}`;
}

/** Whether a completion makes sense here: nothing but whitespace or closing brackets after the cursor. */
export function atLineEnd(doc: vscode.TextDocument, pos: vscode.Position): boolean {
  const rest = doc.lineAt(pos.line).text.slice(pos.character);
  return /^[\s)\]}'"`;:,]*$/.test(rest);
}

export function abortSignal(token: vscode.CancellationToken): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  if (token.isCancellationRequested) ac.abort();
  const sub = token.onCancellationRequested(() => ac.abort());
  return { signal: ac.signal, dispose: () => sub.dispose() };
}

export function sleep(ms: number, token: vscode.CancellationToken): Promise<boolean> {
  return new Promise((resolve) => {
    if (token.isCancellationRequested) return resolve(false);
    const t = setTimeout(() => {
      sub.dispose();
      resolve(true);
    }, ms);
    const sub = token.onCancellationRequested(() => {
      clearTimeout(t);
      sub.dispose();
      resolve(false);
    });
  });
}
