// Remembers the last ghost-text suggestion the user accepted, follows it through edits, and offers a CodeLens
// "Repair the model from this edit" once the accepted text has been changed, as a one-line case (editCase.ts): the
// line the user changed is the desired text, the prompt everything before it (the suggestion's lines above it
// included), and the lens sits on that line.
import * as vscode from 'vscode';
import type { AcceptedCompletion } from './completions';
import { editCase, isNoCase } from './editCase';
import { inDocumentEol } from './prompt';

export interface TrackedEdit {
  uri: string;
  /** Offset of the accepted suggestion's start, kept up to date through edits before it. */
  offset: number;
  accepted: string;
  /** Lines the suggestion spans (the edited text is taken over the same number of lines). */
  lines: number;
}

export class EditTracker implements vscode.CodeLensProvider, vscode.Disposable {
  private tracked: TrackedEdit | undefined;
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor() {
    this.disposables.push(
      vscode.workspace.onDidChangeTextDocument((e) => this.onChange(e)),
      vscode.workspace.onDidCloseTextDocument((d) => {
        if (d.uri.toString() === this.tracked?.uri) this.clear();
      }),
    );
  }

  accepted(a: AcceptedCompletion): void {
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === a.uri);
    if (!doc) return;
    this.tracked = {
      uri: a.uri,
      offset: doc.offsetAt(new vscode.Position(a.line, a.character)),
      accepted: a.text,
      lines: a.text.split('\n').length,
    };
    this.changed.fire();
  }

  get current(): TrackedEdit | undefined {
    return this.tracked;
  }

  clear(): void {
    if (!this.tracked) return;
    this.tracked = undefined;
    this.changed.fire();
  }

  /**
   * The repair case the edit makes, when the suggestion now differs from what was accepted: `start` is where the
   * prompt ends (the suggestion's start, or the start of the text of a later line the user changed), `desired` the
   * user's text from there to the end of that line. `{ reason }` when the edit makes no case (the line was emptied).
   */
  edited(doc: vscode.TextDocument): { start: vscode.Position; desired: string } | { start: vscode.Position; reason: string } | undefined {
    const t = this.tracked;
    if (!t || doc.uri.toString() !== t.uri) return undefined;
    const start = doc.positionAt(t.offset);
    const lastLine = Math.min(doc.lineCount - 1, start.line + t.lines - 1);
    const text = doc.getText(new vscode.Range(start, doc.lineAt(lastLine).range.end));
    if (!text.trim()) return undefined;
    const c = editCase(t.accepted, text);
    if (!c) return undefined;
    if (isNoCase(c)) return { start, reason: c.reason };
    // editCase counts LF text; the document's offsets count its own line breaks.
    const kept = inDocumentEol(doc, text.replace(/\r\n/g, '\n').slice(0, c.promptChars));
    return { start: doc.positionAt(t.offset + kept.length), desired: c.desired };
  }

  private onChange(e: vscode.TextDocumentChangeEvent): void {
    const t = this.tracked;
    if (!t || e.document.uri.toString() !== t.uri || e.contentChanges.length === 0) return;
    for (const c of e.contentChanges) {
      const end = c.rangeOffset + c.rangeLength;
      if (end <= t.offset) {
        t.offset += c.text.length - c.rangeLength;
      } else if (c.rangeOffset < t.offset) {
        // An edit across the suggestion's start: the prompt it was made for is gone.
        this.clear();
        return;
      }
    }
    this.changed.fire();
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const e = this.edited(doc);
    if (!e) return [];
    const range = new vscode.Range(e.start.line, 0, e.start.line, 0);
    return [
      new vscode.CodeLens(range, {
        title: '$(wrench) Repair the model from this edit',
        tooltip: 'desired' in e ? `Teach the model to complete this line with ${JSON.stringify(e.desired)}` : e.reason,
        command: 'neuronpatch.repairFromEdit',
      }),
      new vscode.CodeLens(range, { title: 'Dismiss', command: 'neuronpatch.dismissEdit' }),
    ];
  }

  dispose(): void {
    this.changed.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
