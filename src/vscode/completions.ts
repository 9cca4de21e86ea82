// Inline completions from the local model, with the active patches applied: debounced, cancelled (the
// CancellationToken becomes the engine's AbortSignal) when the user types on, one generation at a time,
// never blocking the extension host (the engine runs onnxruntime asynchronously).
import * as vscode from 'vscode';
import type { Ctx } from './ctx';
import { errorMessage } from './model';
import { cutAtDedent, openBlock } from './multiline';
import { abortSignal, atLineEnd, inDocumentEol, promptAt, sleep } from './prompt';
import { COMPLETION_LANE } from './worker/protocol';

export interface AcceptedCompletion {
  uri: string;
  line: number;
  character: number;
  text: string;
}

export class CompletionProvider implements vscode.InlineCompletionItemProvider {
  private readonly cache = new Map<string, string>();
  private inflight: AbortController | undefined;
  /** The last suggestion handed to VS Code, for "Repair This Suggestion". */
  private shown: { uri: string; version: number; offset: number; text: string } | undefined;

  constructor(private readonly ctx: Ctx) {}

  async provideInlineCompletionItems(
    doc: vscode.TextDocument,
    pos: vscode.Position,
    _context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const { config, models, patches, log } = this.ctx;
    if (!config.inlineCompletionsEnabled || !atLineEnd(doc, pos)) return undefined;
    const prompt = promptAt(doc, pos);
    const block = config.multilineCompletions ? openBlock(prompt.slice(-2000)) : undefined;
    const key = `${doc.uri.toString()}@${doc.version}:${doc.offsetAt(pos)}:${patches.version}:${config.maxNewTokens}:${block ? 'block' : 'line'}`;
    let text = this.cache.get(key);
    if (text === undefined) {
      if (!(await sleep(config.debounceMs, token))) return undefined;
      const model = await models.get({ quiet: true });
      if (!model || token.isCancellationRequested) return undefined;
      await patches.settled();
      this.inflight?.abort();
      const mine = new AbortController();
      this.inflight = mine;
      const cancel = abortSignal(token);
      cancel.signal.addEventListener('abort', () => mine.abort());
      try {
        const out = await model.generate(prompt, {
          maxNewTokens: config.maxNewTokens,
          multiline: !!block,
          patches: patches.active(),
          signal: mine.signal,
          // Only the tokens typed since the last request run; a newer request cancels this one in the engine.
          reusePrefix: true,
          lane: COMPLETION_LANE,
        });
        text = inDocumentEol(doc, block ? cutAtDedent(block, out.completion) : out.completion);
        log.info(
          `completion ${vscode.workspace.asRelativePath(doc.uri)}:${pos.line + 1}:${pos.character + 1} ` +
            `(${patches.active().length} patches, ${Math.round(out.ms)} ms): ${JSON.stringify(text)}`,
        );
        if (out.notice) log.info(out.notice);
        this.remember(key, text);
      } catch (e) {
        if (!mine.signal.aborted) log.warn(`completion failed: ${errorMessage(e)}`);
        return undefined;
      } finally {
        cancel.dispose();
        if (this.inflight === mine) this.inflight = undefined;
      }
    }
    if (!text.trim() || token.isCancellationRequested) return undefined;
    this.shown = { uri: doc.uri.toString(), version: doc.version, offset: doc.offsetAt(pos), text };
    const accepted: AcceptedCompletion = { uri: doc.uri.toString(), line: pos.line, character: pos.character, text };
    const item = new vscode.InlineCompletionItem(text, new vscode.Range(pos, pos), {
      command: 'neuronpatch.completionAccepted',
      title: 'Completion accepted',
      arguments: [accepted],
    });
    return [item];
  }

  /** The suggestion last shown at this position of this version of the document, if any. */
  shownAt(doc: vscode.TextDocument, pos: vscode.Position): string | undefined {
    const s = this.shown;
    return s && s.uri === doc.uri.toString() && s.version === doc.version && s.offset === doc.offsetAt(pos) ? s.text : undefined;
  }

  /** The completion the model gives at a position now (no debounce, no cache): for the repair command. */
  async completeNow(doc: vscode.TextDocument, pos: vscode.Position, signal?: AbortSignal): Promise<string> {
    const model = await this.ctx.models.require();
    await this.ctx.patches.settled();
    const out = await model.generate(promptAt(doc, pos), {
      maxNewTokens: this.ctx.config.maxNewTokens,
      patches: this.ctx.patches.active(),
      signal,
    });
    return inDocumentEol(doc, out.completion);
  }

  private remember(key: string, text: string): void {
    this.cache.set(key, text);
    if (this.cache.size > 50) this.cache.delete(this.cache.keys().next().value as string);
  }
}
