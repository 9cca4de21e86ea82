// The extension host's side of the engine process: a model whose every call is a message to a child process
// (./engineProcess.ts), so the host's event loop only sends requests and receives results. A process rather than
// a worker thread: the engine's allocations, page faults and onnxruntime's threads do not share the host's
// address space and locks (a worker stalled the host's event loop for 0.4–0.5 s during a 0.5B repair), and a
// model too big for memory ends the engine, not the editor.
// Cancelling a call (AbortSignal) settles it at once on the host with a Cancelled error and tells the engine,
// which stops at its next checkpoint. onnxruntime cannot interrupt a run in flight, and one run of a large model
// can take seconds: a cancelled call that still holds the engine after `hardCancelMs` ends the process, and a
// fresh one loads the same model and takes over the calls still wanted. No vscode import: the tests drive it in
// plain node.
import { type ChildProcess, fork } from 'node:child_process';
import * as path from 'node:path';
import { Cancelled, NeuronpatchError } from '../../engine';
import type { ModelGraph } from '../../engine/model/graph';
import type { GuardLine } from '../../engine/repair/measures';
import type { GreedyLine } from '../../engine/repair/verify';
import type { RepairOptions } from '../../engine/repair/index';
import type { Completion, ModelInfo, Patch, RepairCase, RepairResult, TraceResult } from '../../engine/types';
import { type Call, COMPLETION_LANE, type FromWorker, type LoadCall, type Loaded, type Results, type ToWorker, type WireError } from './protocol';

/** The engine process's script: beside this module (dist/engineProcess.js next to dist/extension.js). */
export const WORKER_FILE = path.join(__dirname, 'engineProcess.js');

/** Default of StartOptions.hardCancelMs: a cancel lands within this plus the process's end (a few ms). */
export const HARD_CANCEL_MS = 500;

/** Lines of the engine process's own stdout/stderr (onnxruntime's warnings) are cut to this many characters. */
const LOG_LINE_CHARS = 300;

interface Pending {
  call: Call;
  /** The process it was sent to (undefined until then). */
  sentTo?: Engine;
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
  /** Lines the engine logs while loading and running (instrumenting, provider fallback, restarts). */
  log?: (line: string) => void;
  /** The engine process's script (default: WORKER_FILE). */
  workerFile?: string;
  /**
   * How long (ms) a cancelled call may go on holding the engine before its process is ended and a fresh one
   * loads the model (default HARD_CANCEL_MS). Completions superseded by a newer keystroke are never ended this
   * way: their runs are short and a reload would cost the next completion more than it saves.
   */
  hardCancelMs?: number;
}

/** Repair in the engine process: the engine's `repair(model, case, options)` with the process as the model. */
export function repair(model: EngineWorker, c: RepairCase, opts: RepairOptions = {}): Promise<RepairResult> {
  return model.repair(c, opts);
}

/** One engine process: its channel, and the calls sent to it that it has not answered yet. */
interface Engine {
  child: ChildProcess;
  /** Resolves once the model is loaded in it; calls are sent after. */
  loaded: Promise<Loaded>;
  /** Calls sent to this process and not answered, cancelled ones included (they still hold it). */
  busy: Set<number>;
  /** Whether its model finished loading. */
  up: boolean;
}

/**
 * The engine, served by a child process. `info` and `loaded` describe the model; every method sends one call.
 * Errors: a call rejects with the engine's error (NeuronpatchError with its hint), Cancelled when its signal
 * aborts, or an Error saying the engine process stopped (crash, out of memory: the next call starts it again).
 */
export class EngineWorker {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private engine: Engine | undefined;
  /** Set once the engine can no longer be (re)started: every call rejects with it. */
  private ended: Error | undefined;
  /** Cancelled calls the engine is still working on (it has not answered them, and its process still runs). */
  private readonly cancelledBusy = new Set<number>();
  private cancelWaiters: (() => void)[] = [];
  /** How many times the process was ended to land a cancel, and restarted after it stopped unexpectedly. */
  readonly restarts = { cancel: 0, crash: 0 };
  info!: ModelInfo;
  /** The source decoder and its recognised graph, for exporting a patched copy on the host. */
  loaded!: { onnxPath: string; graph: ModelGraph };

  private constructor(
    private readonly folder: string,
    private readonly options: LoadCall['options'],
    private readonly workerFile: string,
    private readonly log: (line: string) => void,
    private readonly hardCancelMs: number,
  ) {}

  /** Starts an engine process and loads the model folder in it; throws the load's error (the process is then ended). */
  static async start(folder: string, opts: StartOptions = {}): Promise<EngineWorker> {
    const { log = () => undefined, workerFile = WORKER_FILE, hardCancelMs = HARD_CANCEL_MS, ...options } = opts;
    const w = new EngineWorker(folder, options, workerFile, log, hardCancelMs);
    try {
      const { info, onnxPath, graph } = await w.spawn().loaded;
      w.info = info;
      w.loaded = { onnxPath, graph };
    } catch (e) {
      await w.dispose();
      throw e;
    }
    return w;
  }

  /** A fresh process loading the model; becomes the current engine. */
  private spawn(): Engine {
    const child = fork(this.workerFile, [], {
      serialization: 'advanced',
      // Not the host's flags (an extension host's inspector, a test runner's --test); Electron's binary runs as node.
      execArgv: ['--enable-source-maps'],
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const engine: Engine = { child, busy: new Set(), up: false, loaded: undefined as unknown as Promise<Loaded> };
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        for (const l of lines) if (l.trim()) this.log(`engine: ${JSON.stringify(l.slice(0, LOG_LINE_CHARS))}`);
      });
    }
    child.on('message', (m: FromWorker) => this.receive(engine, m));
    child.on('error', (e) => this.stopped(engine, e));
    child.on('exit', (code, signal) => this.stopped(engine, new Error(
      `The engine process stopped unexpectedly (${signal ? `signal ${signal}` : `exit code ${code}`}${signal === 'SIGKILL' ? ': most likely out of memory' : ''}). ` +
        'It starts again on the next call.',
    )));
    this.engine = engine;
    engine.loaded = this.send(engine, { kind: 'load', folder: this.folder, options: this.options });
    engine.loaded.then(() => (engine.up = true), () => undefined);
    return engine;
  }

  private receive(engine: Engine, m: FromWorker): void {
    if ('log' in m) return this.log(m.log);
    if ('progress' in m) return this.pending.get(m.id)?.progress?.(m.progress);
    engine.busy.delete(m.id);
    this.cancelDone([m.id]);
    const internal = this.internal.get(m.id);
    if (internal) {
      this.internal.delete(m.id);
      return m.ok ? internal.resolve(m.value) : internal.reject(toError(m.error));
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(toError(m.error));
  }

  /** The engine's own calls (loading), answered outside `pending` so a restart does not resend them. */
  private readonly internal = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();

  private send<K extends Call['kind']>(engine: Engine, call: Extract<Call, { kind: K }>): Promise<Results[K]> {
    const id = this.nextId++;
    return new Promise<Results[K]>((resolve, reject) => {
      this.internal.set(id, { resolve: (v) => resolve(v as Results[K]), reject });
      this.post(engine, { id, call });
    });
  }

  /**
   * The process ended: expected (killed for a cancel, disposed) or not (crash, out of memory). One that dies again
   * while loading the model it had loaded before ends the engine for good: starting it on every keystroke would
   * only repeat the crash.
   */
  private stopped(engine: Engine, e: Error): void {
    if (engine !== this.engine) return;
    this.engine = undefined;
    this.cancelDone(engine.busy);
    const disposed = this.ended !== undefined;
    if (!disposed && !engine.up && this.info !== undefined) {
      this.ended = new NeuronpatchError(
        `${e.message.replace(/ It starts again on the next call\.$/, '')} It stopped again while loading the model after a restart, so it is not started again.`,
        'Free memory or pick a smaller or quantized model file (neuronpatch.model.dtype), then run Neuron Patch: Reload Model.',
      );
      e = this.ended;
    }
    for (const [id, p] of this.internal) {
      this.internal.delete(id);
      p.reject(e);
    }
    if (disposed) return;
    this.restarts.crash++;
    this.log(e.message);
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** These cancelled calls are no longer worked on; wakes whenCancelledStopped() once none is. */
  private cancelDone(ids: Iterable<number>): void {
    for (const id of ids) this.cancelledBusy.delete(id);
    if (this.cancelledBusy.size) return;
    const waiters = this.cancelWaiters;
    this.cancelWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Resolves when the engine no longer works on any cancelled call: each has answered its cancel at a checkpoint,
   * or its process was ended (hardCancelMs). What "the repair stopped" means to a user, as opposed to the promise,
   * which settles the moment Cancel is pressed.
   */
  whenCancelledStopped(): Promise<void> {
    return this.cancelledBusy.size ? new Promise((resolve) => this.cancelWaiters.push(resolve)) : Promise.resolve();
  }

  private post(engine: Engine, m: ToWorker): void {
    if ('id' in m && 'call' in m) engine.busy.add(m.id);
    if (engine.child.connected) engine.child.send(m, undefined, undefined, () => undefined);
  }

  /** The current engine with its model loaded, starting a fresh process if the last one stopped. */
  private async ready(): Promise<Engine> {
    if (this.ended) throw this.ended;
    const engine = this.engine ?? this.spawn();
    const { info } = await engine.loaded;
    // The files under the folder changed since the model was first loaded: patches and caches name its hash.
    if (this.info && info.hash !== this.info.hash) {
      this.ended = new NeuronpatchError(
        `The model's files changed on disk while it was loaded (hash ${this.info.hash.slice(0, 12)} → ${info.hash.slice(0, 12)}).`,
        'Reload the model (Neuron Patch: Reload Model) so that patches are checked against the files as they are now.',
      );
      await this.dispose();
      throw this.ended;
    }
    return engine;
  }

  /**
   * A cancelled call still holds the engine after hardCancelMs: end the process (onnxruntime cannot stop a run
   * in flight) and start a fresh one, which takes over every call still wanted.
   */
  private async endForCancel(engine: Engine, id: number, kind: Call['kind']): Promise<void> {
    if (engine !== this.engine || !engine.busy.has(id) || this.ended) return;
    this.engine = undefined;
    this.restarts.cancel++;
    const gone = new Promise<void>((resolve) => engine.child.once('exit', () => resolve()));
    engine.child.kill('SIGKILL');
    await gone;
    this.cancelDone(engine.busy);
    this.log(`engine: a cancelled ${kind} was still running ${this.hardCancelMs} ms after the cancel; the engine process was ended and loads the model again`);
    const survivors = [...this.pending.keys()].filter((pid) => this.pending.get(pid)?.sentTo === engine);
    // Nothing waits: load again now all the same, so that the next call does not wait for it.
    if (!survivors.length) void this.ready().catch((e: unknown) => this.ended || this.log(`engine: loading the model again failed: ${(e as Error).message}`));
    for (const pid of survivors) this.dispatch(pid);
  }

  /** Sends a pending call to the current engine once it is loaded (starting one if none runs). */
  private dispatch(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.sentTo = undefined;
    this.ready().then(
      (engine) => {
        if (this.pending.get(id) !== p) return;
        // Ended while this call waited for it (a cancel's restart): wait for the next one.
        if (engine !== this.engine || !engine.child.connected) return this.dispatch(id);
        p.sentTo = engine;
        this.post(engine, { id, call: p.call });
      },
      (e: unknown) => {
        if (this.pending.get(id) !== p) return;
        this.pending.delete(id);
        p.reject(e);
      },
    );
  }

  private call<K extends Call['kind']>(call: Extract<Call, { kind: K }>, signal?: AbortSignal, progress?: (line: string) => void): Promise<Results[K]> {
    if (this.ended) return Promise.reject(this.ended);
    if (signal?.aborted) return Promise.reject(new Cancelled());
    const id = this.nextId++;
    const supersedable = 'lane' in call && call.lane === COMPLETION_LANE;
    return new Promise<Results[K]>((resolve, reject) => {
      const onAbort = () => {
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        reject(new Cancelled());
        const engine = p.sentTo;
        if (!engine) return;
        if (engine.busy.has(id)) this.cancelledBusy.add(id);
        this.post(engine, { id, cancel: true });
        if (!supersedable) setTimeout(() => void this.endForCancel(engine, id, call.kind), this.hardCancelMs).unref();
      };
      this.pending.set(id, {
        call,
        resolve: (v) => { signal?.removeEventListener('abort', onAbort); resolve(v as Results[K]); },
        reject: (e) => { signal?.removeEventListener('abort', onAbort); reject(e); },
        progress,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.dispatch(id);
    });
  }

  /**
   * One completion. `reusePrefix`: the engine keeps the KV cache of the last prompt and runs only the new tokens;
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

  /** Guard lines harvested from these texts (lines the model completes exactly right), in the engine process. */
  harvestGuard(texts: string[], opts: { max?: number; signal?: AbortSignal } = {}): Promise<GuardLine[]> {
    return this.call({ kind: 'harvestGuard', texts, max: opts.max }, opts.signal);
  }

  trace(c: RepairCase, opts: { active?: Patch[]; top?: number; signal?: AbortSignal } = {}): Promise<TraceResult> {
    return this.call({ kind: 'trace', case: c, patches: opts.active ?? [], top: opts.top }, opts.signal);
  }

  /**
   * Resolves once an engine process has the model loaded, starting one if none runs (after a cancel ended the
   * last one, it is loading again). Throws what loading throws.
   */
  async whenReady(): Promise<void> {
    await this.ready();
  }

  /** The engine process's id (undefined while none runs), for tests and the bench. */
  get pid(): number | undefined {
    return this.engine?.child.pid;
  }

  /** Releases the model and ends the process (killed if it has not ended 5 s after being asked). */
  async dispose(): Promise<void> {
    this.ended ??= new Error('The engine was disposed.');
    for (const p of this.pending.values()) p.reject(new Cancelled());
    this.pending.clear();
    const engine = this.engine;
    if (!engine) return;
    const child = engine.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    this.post(engine, { dispose: true });
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(timer);
  }
}
