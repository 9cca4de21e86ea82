// Ctx owns the extension's long-lived objects; commands are factories over it.
import * as vscode from 'vscode';
import { CompletionProvider } from './completions';
import { Config } from './config';
import { EditTracker } from './edits';
import { GuardRecorder } from './guard';
import { ModelHost, errorMessage, oneLine } from './model';
import type { RepairPanel } from './panel/panel';
import { PatchHost } from './patches';
import { PatchTrust } from './trust';
import type { PatchTree } from './patchTree';
import { RegressionSampler } from './regression';
import { RegressionLines } from './regressionLines';

export type CommandFactory = (ctx: Ctx) => (...args: any[]) => unknown;

export class Ctx implements vscode.Disposable {
  readonly config: Config;
  readonly log: vscode.LogOutputChannel;
  readonly models: ModelHost;
  readonly patches: PatchHost;
  readonly regression: RegressionSampler;
  /** The regression prompts' lines before a repair, while the active patches stay the same. */
  readonly regressionLines = new RegressionLines();
  readonly completions: CompletionProvider;
  readonly edits: EditTracker;
  /** The user's accepted, unedited completions per model: the guard set a repair is checked against. */
  readonly guard: GuardRecorder;
  /** The repair panel while it is open (one at a time). */
  panel: RepairPanel | undefined;
  /** The Patches view (Space toggles its focused row). */
  patchTree: PatchTree | undefined;
  /** The last cancelled repair: how long after Cancel the engine's work stopped (set once it has). */
  lastCancel: { engineStoppedMs?: number } | undefined;
  /** The context keys as last set, by name without the `neuronpatch.` prefix. */
  contextKeys = new Map<string, unknown>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(readonly extension: vscode.ExtensionContext) {
    this.config = new Config(extension.extensionPath);
    this.log = this.own(vscode.window.createOutputChannel('Neuron Patch', { log: true }));
    this.models = this.own(new ModelHost(this.config, this.log));
    this.patches = this.own(new PatchHost(this.config, this.models, this.log, new PatchTrust(extension.globalState)));
    this.regression = this.own(new RegressionSampler(this.log));
    this.completions = new CompletionProvider(this);
    this.edits = this.own(new EditTracker());
    this.guard = this.own(new GuardRecorder(this.config, this.log));
  }

  own<T extends vscode.Disposable>(d: T): T {
    this.disposables.push(d);
    return d;
  }

  /** Registers `neuronpatch.NAME`; errors thrown by the handler are logged and shown, never swallowed. */
  registerCommand(name: string, factory: CommandFactory): void {
    const handler = factory(this);
    this.own(
      vscode.commands.registerCommand(`neuronpatch.${name}`, async (...args: unknown[]) => {
        try {
          return await handler(...args);
        } catch (e) {
          const message = errorMessage(e);
          this.log.error(`${name}: ${message}`);
          // The message and its hint (the engine puts the hint on the next line), each said once.
          void vscode.window.showErrorMessage(`Neuron Patch: ${oneLine(message)}`, 'Show Log').then((c) => {
            if (c) this.log.show(true);
          });
          return undefined;
        }
      }),
    );
  }

  dispose(): void {
    this.panel?.dispose();
    for (const d of this.disposables.reverse()) d.dispose();
  }
}
