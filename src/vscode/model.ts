// The model, loaded lazily on first use with a progress notification, reloaded when the setting changes. It runs
// in its own process (./worker): the extension host only sends requests to it, so decoding, tracing and solving
// never stall the editor, and a model too big for memory ends that process, not the editor.
// A folder that does not load leaves the extension up: the error is remembered (no retry on every keystroke),
// shown once with the way out (pick another folder, use the demo model, show the log).
import * as vscode from 'vscode';
import type { Config } from './config';
import { EngineWorker } from './worker/client';

/** The model as the extension sees it: the engine in its own process. */
export type Model = EngineWorker;

export type ModelState =
  | { kind: 'idle' }
  | { kind: 'loading'; folder: string }
  | { kind: 'ready'; folder: string; model: Model }
  | { kind: 'failed'; folder: string; message: string };

export class ModelHost implements vscode.Disposable {
  private state: ModelState = { kind: 'idle' };
  private loading: Promise<Model> | undefined;
  private generation = 0;
  private readonly changed = new vscode.EventEmitter<ModelState>();
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly config: Config,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  get current(): ModelState {
    return this.state;
  }

  /** The loaded model, or undefined without starting a load. */
  get ready(): Model | undefined {
    return this.state.kind === 'ready' ? this.state.model : undefined;
  }

  /**
   * The model, loading it if needed. `quiet`: a failed load earlier is not retried and undefined comes back
   * (what inline completions want); otherwise a failed folder is tried again and the error thrown.
   */
  async get(opts: { quiet?: boolean } = {}): Promise<Model | undefined> {
    if (this.state.kind === 'ready') return this.state.model;
    if (this.state.kind === 'failed' && opts.quiet) return undefined;
    try {
      return await (this.loading ?? this.load());
    } catch (e) {
      if (opts.quiet) return undefined;
      throw e;
    }
  }

  /** Like get(), but throws the load error as a message the user can act on. */
  async require(): Promise<Model> {
    const m = await this.get();
    if (!m) throw new Error('The model is not loaded.');
    return m;
  }

  private load(): Promise<Model> {
    const folder = this.config.modelFolder;
    const gen = ++this.generation;
    this.setState({ kind: 'loading', folder });
    this.log.info(`loading model from ${folder}`);
    const started = Date.now();
    const p = Promise.resolve(vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Neuron Patch: loading model ${shortName(folder)}…` },
      // The engine's own cache (NEURONPATCH_CACHE or ~/.cache/neuronpatch), shared with the CLI: instrumented
      // graphs are keyed by the model's hash, so one build serves both.
      () => EngineWorker.start(folder, { dtype: this.config.modelDtype, executionProvider: this.config.executionProvider, log: (line) => this.log.info(line) }),
    ));
    const loading = p.then(
      async (model) => {
        if (gen !== this.generation) {
          await model.dispose();
          throw new Error('The model folder changed while loading.');
        }
        this.loading = undefined;
        const i = model.info;
        this.log.info(
          `model ${i.name} loaded in ${Date.now() - started} ms: ${i.architecture}, ${i.layers} layers × ${i.neurons} neurons, ` +
            `width ${i.width}, vocabulary ${i.vocab}, hash ${i.hash.slice(0, 12)}`,
        );
        this.setState({ kind: 'ready', folder, model });
        return model;
      },
      (e: unknown) => {
        if (gen === this.generation) {
          this.loading = undefined;
          const message = errorMessage(e);
          this.log.error(`model folder ${folder} did not load: ${message}`);
          this.setState({ kind: 'failed', folder, message });
          void this.offerWayOut(folder, message);
        }
        throw e;
      },
    );
    this.loading = loading;
    return loading;
  }

  private async offerWayOut(folder: string, message: string): Promise<void> {
    const pick = 'Pick Another Folder…';
    const demo = 'Use the Demo Model';
    const log = 'Show Log';
    const items = folder === this.config.demoModelFolder ? [pick, log] : [pick, demo, log];
    const choice = await vscode.window.showErrorMessage(
      `Neuron Patch: the model in ${folder} did not load. ${firstLine(message)}`,
      ...items,
    );
    if (choice === pick) await vscode.commands.executeCommand('neuronpatch.pickModelFolder');
    else if (choice === demo) await this.config.setModelFolder('');
    else if (choice === log) this.log.show(true);
  }

  /** Forget the model (disposing it) so that the next get() loads the folder the settings name now. */
  async reset(): Promise<void> {
    this.generation++;
    this.loading = undefined;
    const old = this.state;
    this.setState({ kind: 'idle' });
    if (old.kind === 'ready') await old.model.dispose().catch((e: unknown) => this.log.warn(`dispose: ${errorMessage(e)}`));
  }

  private setState(s: ModelState): void {
    this.state = s;
    this.changed.fire(s);
  }

  dispose(): void {
    void this.reset();
    this.changed.dispose();
  }
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

export function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

/** A multi-line message (an error and its hint) as one line for a notification. */
export function oneLine(s: string): string {
  return s
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

function shortName(folder: string): string {
  const parts = folder.split(/[\\/]/).filter(Boolean);
  return parts.slice(-2).join('/');
}
