// One repair, from a prompt and a desired text to the panel: regression prompts from the workspace, the engine's
// repair under a cancellable progress notification, then the result in the panel, not applied. Nothing is written
// before the user presses Apply, so a cancelled repair leaves nothing behind.
import * as vscode from 'vscode';
import { repair } from './worker/client';
import type { RepairMethod, RepairResult } from '../engine/types';
import type { Ctx } from './ctx';
import { errorMessage } from './model';
import { RepairPanel } from './panel/panel';

export interface RepairRequest {
  doc: vscode.TextDocument;
  /** The line the prompt ends on (left out of the regression prompts). */
  line: number;
  prompt: string;
  desired: string;
  method: RepairMethod;
  /** `file.py:12:8`, shown in the panel. */
  source: string;
}

/**
 * Runs the repair; undefined when the user cancelled it (the notification's Cancel, or `cancel` from the
 * caller). Errors are thrown.
 */
export async function runRepair(ctx: Ctx, req: RepairRequest, cancel?: vscode.CancellationToken, onProgress?: (message: string) => void): Promise<RepairResult | undefined> {
  const model = await ctx.models.require();
  await ctx.patches.settled();
  return vscode.window.withProgress(
    {
      location: vscode.ProgressLocation.Notification,
      title: `Neuron Patch: repairing (${req.method})`,
      cancellable: true,
    },
    async (progress, token) => {
      const ac = new AbortController();
      const sub = token.onCancellationRequested(() => ac.abort());
      const sub2 = cancel?.onCancellationRequested(() => ac.abort());
      if (cancel?.isCancellationRequested) ac.abort();
      const say = (message: string): void => {
        ctx.log.info(`repair: ${message}`);
        progress.report({ message });
        onProgress?.(message);
      };
      try {
        say('sampling regression prompts from the workspace…');
        const regression = await ctx.regression.sample(req.doc, req.line, ctx.config.regressionSampleSize);
        if (ac.signal.aborted) throw new Error('cancelled');
        const active = ctx.patches.active();
        const regressionBefore = regression.length ? await ctx.regressionLines.get(model, regression, active, ac.signal) : undefined;
        say('reading the guard set (completions you kept, workspace lines the model gets right)…');
        const guard = await ctx.guard.lines(model, regression, ac.signal);
        say(`tracing and solving (${regression.length} regression prompts, ${guard.length} guard lines)…`);
        const result = await repair(
          model,
          { prompt: req.prompt, desired: req.desired },
          { method: req.method, regression, regressionBefore, active, signal: ac.signal, onProgress: say, maxNewTokens: ctx.config.maxNewTokens,
            margin: ctx.config.repairMargin, guard },
        );
        ctx.log.info(
          `repair ${result.success ? 'succeeded' : 'failed'} (${result.method}) in ${Math.round(result.ms)} ms: ` +
            `${JSON.stringify(result.before)} → ${JSON.stringify(result.after)}, ${result.neurons.length} neurons, ` +
            `specificity ${result.specificity ?? 'n/a'}`,
        );
        return result;
      } catch (e) {
        if (ac.signal.aborted) {
          ctx.log.info('repair cancelled: nothing was changed');
          void vscode.window.showInformationMessage('Neuron Patch: repair cancelled; nothing was changed.');
          return undefined;
        }
        throw new Error(`The repair failed: ${errorMessage(e)}`);
      } finally {
        sub.dispose();
        sub2?.dispose();
      }
    },
  );
}

/** Runs the repair and shows it in the panel. */
export async function repairAndShow(
  ctx: Ctx,
  req: RepairRequest,
  cancel?: vscode.CancellationToken,
  onProgress?: (message: string) => void,
): Promise<void> {
  if (req.desired === '') throw new Error('The desired text is empty.');
  const result = await runRepair(ctx, req, cancel, onProgress);
  if (!result) return;
  if (result.failingTokens === 0) {
    void vscode.window.showInformationMessage(
      `Neuron Patch: the model already completes this with ${JSON.stringify(req.desired)}; nothing to repair.`,
    );
    return;
  }
  RepairPanel.show(ctx, req, result);
  if (!result.success) {
    void vscode.window.showWarningMessage(
      `Neuron Patch: the ${result.method} repair did not reach the desired text (it gives ${JSON.stringify(result.after)}). ` +
        'See the panel; you can try the other method.',
    );
  }
}
