// One repair, from a prompt and a desired text to the panel. The panel opens at once and shows the repair's phases
// in plain words, with counts where there are some ("checking 32 completions from your workspace: 12/32"), the
// wall time going up, and a Cancel button; then the result, not applied. Nothing is written before the user
// presses Apply, so a cancelled repair leaves nothing behind.
import * as vscode from 'vscode';
import { repair } from './worker/client';
import { SIDE_EFFECT_COUNT } from './worker/protocol';
import type { RepairMethod, RepairResult } from '../engine/types';
import type { Ctx } from './ctx';
import { errorMessage } from './model';
import type { PhaseTime, RepairProgress } from './panel/messages';
import { RepairPanel } from './panel/panel';
import { sideEffectStep } from './progressText';

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

/** A finished repair: the engine's result and the wall time the user waited, phase by phase. */
export interface TimedResult {
  result: RepairResult;
  timing: { totalMs: number; phases: PhaseTime[] };
}

export interface RunOptions {
  /** Cancels like the panel's Cancel button. */
  cancel?: vscode.CancellationToken;
  /** Each progress line (the engine's own words), for tests and the log. */
  onProgress?: (message: string) => void;
  /** The phase in plain words, for the panel. */
  report?: (p: RepairProgress) => void;
}

/** The engine's progress lines in the words the panel uses; undefined: the line stays in the current phase. */
export function phaseOf(line: string): string | undefined {
  if (/^generating the current completion/.test(line)) return 'completing at the cursor';
  if (/^tracing the neurons/.test(line)) return 'tracing the neurons behind the completion';
  if (/^reading the model's statistics on reference code/.test(line)) return 'reading how the model responds to your code';
  if (/^solving/.test(line)) return 'choosing and editing neurons';
  if (/^confirming/.test(line)) return 'confirming the new completion';
  if (/^analysing the patch/.test(line)) return 'summarising the edited neurons';
  if (/^keeping earlier fixes/.test(line)) return 'keeping your earlier fixes working';
  const fx = /^measuring side effects on (\d+)/.exec(line);
  if (fx) return `checking that ${fx[1]} completions from your workspace stay the same`;
  return undefined;
}

/**
 * Runs the repair; undefined when it was cancelled (the panel's or the notification's Cancel, or `cancel`): the
 * promise settles as soon as Cancel is pressed, and the engine stops at its next check. Errors are thrown.
 */
export async function runRepair(ctx: Ctx, req: RepairRequest, opts: RunOptions = {}): Promise<TimedResult | undefined> {
  const startedAt = Date.now();
  const model = await ctx.models.require();
  await ctx.patches.settled();
  const ac = new AbortController();
  const subs: vscode.Disposable[] = [];
  if (opts.cancel) {
    if (opts.cancel.isCancellationRequested) ac.abort();
    subs.push(opts.cancel.onCancellationRequested(() => ac.abort()));
  }
  const phases: PhaseTime[] = [];
  let phase = '';
  let phaseStart = startedAt;
  const enter = (name: string, done?: number, total?: number): void => {
    const now = Date.now();
    if (name !== phase) {
      if (phase) phases.push({ name: phase, ms: now - phaseStart });
      phase = name;
      phaseStart = now;
    }
    opts.report?.({ phase: name, done, total, startedAt });
  };
  // What the side-effect check covers (the engine's "measuring side effects on P … and G guard lines" line): its
  // count covers those and the loss measure's texts, shown step by step, each in its own items.
  let checking = { completions: 0, kept: 0 };
  const say = (message: string): void => {
    const count = SIDE_EFFECT_COUNT.exec(message);
    if (count) {
      const step = sideEffectStep(Number(count[1]), Number(count[2]), checking.completions, checking.kept);
      return enter(step.phase, step.done, step.total);
    }
    ctx.log.info(`repair: ${message}`);
    opts.onProgress?.(message);
    const fx = /^measuring side effects on (\d+) regression prompts and (\d+) guard lines/.exec(message);
    if (fx) checking = { completions: Number(fx[1]), kept: Number(fx[2]) };
    const p = phaseOf(message);
    if (p) enter(p);
  };
  const work = async (): Promise<RepairResult> => {
    say('sampling regression prompts from the workspace…');
    enter('finding completions in your workspace to check');
    const regression = await ctx.regression.sample(req.doc, req.line, ctx.config.regressionSampleSize);
    if (ac.signal.aborted) throw new Error('cancelled');
    const active = ctx.patches.active();
    let regressionBefore;
    if (regression.length) {
      const words = `checking ${regression.length} completions from your workspace`;
      say(`${words} (the model's lines before the repair)…`);
      enter(words, ctx.regressionLines.known(model, regression, active), regression.length);
      regressionBefore = await ctx.regressionLines.get(model, regression, active, ac.signal, (done, total) => enter(words, done, total));
    }
    say('reading the guard set (completions you kept, workspace lines the model gets right)…');
    enter('reading the completions you kept and the lines the model gets right');
    const guard = await ctx.guard.lines(model, regression, ac.signal);
    say(`tracing and solving (${regression.length} regression prompts, ${guard.length} guard lines)…`);
    return repair(
      model,
      { prompt: req.prompt, desired: req.desired },
      { method: req.method, regression, regressionBefore, active, signal: ac.signal, onProgress: say, maxNewTokens: ctx.config.maxNewTokens,
        margin: ctx.config.repairMargin, guard },
    );
  };
  const cancelled = new Promise<undefined>((resolve) => {
    if (ac.signal.aborted) resolve(undefined);
    ac.signal.addEventListener('abort', () => resolve(undefined));
  });
  const running = work();
  try {
    const result = await Promise.race([running, cancelled]);
    if (!result || ac.signal.aborted) {
      // The engine stops at its next checkpoint, or its process is ended (EngineWorker's hardCancelMs); the
      // promise settled the moment Cancel was pressed, so the time is read from the engine, not from it.
      const cancelledAt = Date.now();
      const restarts = model.restarts.cancel;
      const record = ctx.lastCancel = {} as { engineStoppedMs?: number };
      void running.catch(() => undefined);
      void model.whenCancelledStopped().then(() => {
        record.engineStoppedMs = Date.now() - cancelledAt;
        const ended = model.restarts.cancel > restarts ? ' (its engine process was ended, and loads the model again)' : '';
        ctx.log.info(`repair: the cancelled repair's engine work stopped ${record.engineStoppedMs} ms after Cancel${ended}`);
      });
      ctx.log.info('repair cancelled: nothing was changed');
      void vscode.window.showInformationMessage('Neuron Patch: repair cancelled; nothing was changed.');
      return undefined;
    }
    if (phase) phases.push({ name: phase, ms: Date.now() - phaseStart });
    const totalMs = Date.now() - startedAt;
    ctx.log.info(
      `repair ${result.success ? 'succeeded' : 'failed'} (${result.method}) in ${totalMs} ms wall (${phases.map((p) => `${p.name} ${p.ms} ms`).join(', ')}); ` +
        `engine's solve ${Math.round(result.ms)} ms: ${JSON.stringify(result.before)} → ${JSON.stringify(result.after)}, ${result.neurons.length} neurons, ` +
        `specificity ${result.specificity ?? 'n/a'}`,
    );
    return { result, timing: { totalMs, phases } };
  } catch (e) {
    if (ac.signal.aborted) return undefined;
    throw new Error(`The repair failed: ${errorMessage(e)}`);
  } finally {
    for (const s of subs) s.dispose();
  }
}

/**
 * Starts decoding the workspace completions a repair at this line will check, while the user types the desired
 * text: the repair then finds them known. `stop()` when the user gives up (the engine stops at its next check);
 * a repair that starts meanwhile waits for the batch in flight and reuses it.
 */
export function warmRegression(ctx: Ctx, doc: vscode.TextDocument, line: number): { stop(): void } {
  const ac = new AbortController();
  void (async () => {
    const model = ctx.models.ready;
    const n = ctx.config.regressionSampleSize;
    if (!model || n === 0) return;
    const prompts = await ctx.regression.sample(doc, line, n);
    if (ac.signal.aborted || !prompts.length) return;
    const started = Date.now();
    await ctx.regressionLines.get(model, prompts, ctx.patches.active(), ac.signal);
    ctx.log.info(`regression lines: ${prompts.length} decoded while the desired text was typed (${Date.now() - started} ms)`);
  })().catch(() => undefined);
  return { stop: () => ac.abort() };
}

/**
 * Runs the repair in the panel (opened at once, showing progress with a Cancel button) and shows the result
 * there. A cancelled repair closes the panel it opened.
 */
export async function repairAndShow(
  ctx: Ctx,
  req: RepairRequest,
  cancel?: vscode.CancellationToken,
  onProgress?: (message: string) => void,
): Promise<void> {
  if (req.desired === '') throw new Error('The desired text is empty.');
  const panel = RepairPanel.start(ctx, req);
  // A static status-bar message rather than a spinner: the panel shows the progress, and an animation costs CPU
  // the repair needs (measured in the e2e suite: the repair's own decoding ran slower beside spinning UI).
  let status = vscode.window.setStatusBarMessage('$(wrench) Neuron Patch: repairing…');
  const progress = {
    report: ({ message }: { message: string }): void => {
      status.dispose();
      status = vscode.window.setStatusBarMessage(`$(wrench) Neuron Patch: ${message}`);
    },
  };
  const done = await (async () => {
      const cts = new vscode.CancellationTokenSource();
      const subs = [panel.onCancel(() => cts.cancel()), ...(cancel ? [cancel.onCancellationRequested(() => cts.cancel())] : [])];
      if (cancel?.isCancellationRequested) cts.cancel();
      try {
        return await runRepair(ctx, req, {
          cancel: cts.token,
          onProgress,
          report: (p) => {
            panel.progress(p);
            progress.report({ message: p.total ? `${p.phase}: ${p.done}/${p.total}` : p.phase });
          },
        });
      } catch (e) {
        panel.failed(errorMessage(e));
        throw e;
      } finally {
        for (const s of subs) s.dispose();
        cts.dispose();
        status.dispose();
      }
  })();
  if (!done) {
    panel.cancelled();
    return;
  }
  const { result } = done;
  if (result.failingTokens === 0) {
    panel.cancelled();
    void vscode.window.showInformationMessage(
      `Neuron Patch: the model already completes this with ${JSON.stringify(req.desired)}; nothing to repair.`,
    );
    return;
  }
  panel.finished(req, done);
}
