// The extension host's side of the engine worker: a model whose every call is a message to the worker thread
// (./engineWorker.ts), so the host's event loop only posts requests and receives results. Cancelling a call
// (AbortSignal) settles it at once on the host with a Cancelled error and tells the worker, which stops at the
// engine's next checkpoint. No vscode import: the tests drive it in plain node.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Cancelled, NeuronpatchError } from '../../engine';
import type { ModelGraph } from '../../engine/model/graph';
import type { GuardLine } from '../../engine/repair/measures';
import type { GreedyLine } from '../../engine/repair/verify';
import type { RepairOptions } from '../../engine/repair/index';
import type { Completion, ModelInfo, Patch, RepairCase, RepairResult, TraceResult } from '../../engine/types';
import type { Call, FromWorker, LoadCall, Results, ToWorker, WireError } from './protocol';

/** The worker script: beside this module (dist/engineWorker.js next to dist/extension.js; out/ for tests). */
export const WORKER_FILE = path.join(__dirname, 'engineWorker.js');

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  progress?: (line: string) => void;
}

function toError(e: WireError): Error {
  if (e.cancelled) return new Cancelled();
  if (e.name === 'NeuronpatchError') return new NeuronpatchError(e.message, e.hint);
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

export interface StartOptions extends Omit<LoadCall['options'], never> {
  /** Lines the engine logs while loading and running (instrumenting, provider fallback). */
  log?: (line: string) => void;
  /** The worker script (default: WORKER_FILE). */
  workerFile?: string;
}

/** Repair in the worker: the engine's `repair(model, case, options)` with the worker as the model. */
export function repair(model: EngineWorker, c: RepairCase, opts: RepairOptions = {}): Promise<RepairResult> {
  return model.repair(c, opts);
}

export class EngineWorker {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited: Error | undefined;
  /** When the worker last reported a cancelled call stopped (ms since the epoch), for cancellation latency. */
  lastStoppedAt = 0;
  info!: ModelInfo;
  /** The source decoder and its recognised graph, for exporting a patched copy on the host. */
  loaded!: { onnxPath: string; graph: ModelGraph };

  private constructor(
    private readonly worker: Worker,
    private readonly log: (line: string) => void,
  ) {
    worker.on('message', (m: FromWorker) => this.receive(m));
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new Error(`The engine worker exited (code ${code}).`)));
  }

  /** Starts a worker and loads the model folder in it; throws the load's error (the worker is then ended). */
  static async start(folder: string, opts: StartOptions = {}): Promise<EngineWorker> {
    const { log = () => undefined, workerFile = WORKER_FILE, ...options } = opts;
    const w = new EngineWorker(new Worker(workerFile), log);
    try {
      const { info, onnxPath, graph } = await w.call({ kind: 'load', folder, options });
      w.info = info;
      w.loaded = { onnxPath, graph };
    } catch (e) {
      await w.dispose();
      throw e;
    }
    return w;
  }

  private receive(m: FromWorker): void {
    if ('log' in m) return this.log(m.log);
    const p = this.pending.get(m.id);
    if ('progress' in m) return p?.progress?.(m.progress);
    if (m.stoppedAt) this.lastStoppedAt = m.stoppedAt;
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(toError(m.error));
  }

  private fail(e: Error): void {
    this.exited ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private call<K extends Call['kind']>(call: Extract<Call, { kind: K }>, signal?: AbortSignal, progress?: (line: string) => void): Promise<Results[K]> {
    if (this.exited) return Promise.reject(this.exited);
    if (signal?.aborted) return Promise.reject(new Cancelled());
    const id = this.nextId++;
    return new Promise<Results[K]>((resolve, reject) => {
      const onAbort = () => {
        if (!this.pending.has(id)) return;
        this.pending.delete(id);
        this.post({ id, cancel: true });
        reject(new Cancelled());
      };
      this.pending.set(id, {
        resolve: (v) => { signal?.removeEventListener('abort', onAbort); resolve(v as Results[K]); },
        reject: (e) => { signal?.removeEventListener('abort', onAbort); reject(e); },
        progress,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.post({ id, call });
    });
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  /**
   * One completion. `reusePrefix`: the worker keeps the KV cache of the last prompt and runs only the new tokens;
   * `lane`: a newer call in the same lane cancels this one (its promise rejects with Cancelled).
   */
  generate(prompt: string, opts: { maxNewTokens?: number; multiline?: boolean; heal?: boolean; patches?: Patch[]; signal?: AbortSignal; reusePrefix?: boolean; lane?: string } = {}): Promise<Completion> {
    const { patches = [], signal, reusePrefix, lane, ...options } = opts;
    return this.call({ kind: 'generate', prompt, options, patches, reusePrefix, lane }, signal);
  }

  /** The greedy line of each prompt with these patches (the side-effect check's "before"). */
  greedyLines(prompts: string[], patches: readonly Patch[], signal?: AbortSignal): Promise<GreedyLine[]> {
    return this.call({ kind: 'greedyLines', prompts, patches: [...patches] }, signal);
  }

  /** The side-effect check's counts come back as progress lines (repairFlow's SIDE_EFFECT_COUNT), not a callback. */
  repair(c: RepairCase, opts: Omit<RepairOptions, 'onSideEffectProgress'> = {}): Promise<RepairResult> {
    const { signal, onProgress, ...options } = opts;
    return this.call({ kind: 'repair', case: c, options }, signal, onProgress);
  }

  /** Guard lines harvested from these texts (lines the model completes exactly right), in the worker. */
  harvestGuard(texts: string[], opts: { max?: number; signal?: AbortSignal } = {}): Promise<GuardLine[]> {
    return this.call({ kind: 'harvestGuard', texts, max: opts.max }, opts.signal);
  }

  trace(c: RepairCase, opts: { active?: Patch[]; top?: number; signal?: AbortSignal } = {}): Promise<TraceResult> {
    return this.call({ kind: 'trace', case: c, patches: opts.active ?? [], top: opts.top }, opts.signal);
  }

  /** Releases the model and ends the thread. */
  async dispose(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.post({ dispose: true });
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await done;
    clearTimeout(timer);
  }
}
