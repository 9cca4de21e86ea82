// The messages between the extension host and the engine process (child_process.fork, 'advanced' serialization).
// The engine runs in its own process so that nothing it computes (decoding loops, attribution over every neuron,
// solves) stalls the extension host; the host only sends requests and receives results. Everything here is
// structured-clone data: no functions, no AbortSignals (a cancel is its own message).
import type { ModelGraph } from '../../engine/model/graph';
import type { ExecutionProvider } from '../../engine/model/session';
import type { GuardLine } from '../../engine/repair/measures';
import type { GreedyLine } from '../../engine/repair/verify';
import type { Completion, ModelInfo, Patch, RepairCase, RepairResult, TraceResult } from '../../engine/types';
import type { RepairOptions } from '../../engine/repair/index';

export interface LoadCall {
  kind: 'load';
  folder: string;
  options: { executionProvider?: ExecutionProvider; threads?: number; cacheDir?: string; dtype?: string };
}

/** The lane of inline completions: a newer keystroke's request supersedes the one in flight. */
export const COMPLETION_LANE = 'completion';

export interface GenerateCall {
  kind: 'generate';
  prompt: string;
  options: { maxNewTokens?: number; multiline?: boolean; heal?: boolean };
  patches: Patch[];
  /** Reuse the KV cache of the previous prompt's shared beginning (completions while typing). */
  reusePrefix?: boolean;
  /** A newer call in the same lane cancels this one (a stale completion request). */
  lane?: string;
}

export interface GreedyLinesCall {
  kind: 'greedyLines';
  prompts: string[];
  patches: Patch[];
}

export interface RepairCall {
  kind: 'repair';
  case: RepairCase;
  options: Omit<RepairOptions, 'signal' | 'onProgress' | 'onSideEffectProgress'>;
}

export interface HarvestGuardCall {
  kind: 'harvestGuard';
  texts: string[];
  max?: number;
}

export interface TraceCall {
  kind: 'trace';
  case: RepairCase;
  patches: Patch[];
  top?: number;
}

export type Call = LoadCall | GenerateCall | GreedyLinesCall | RepairCall | TraceCall | HarvestGuardCall;

/** What each call resolves to. */
export interface Loaded {
  info: ModelInfo;
  /** What exporting a patched copy reads on the host: the source decoder and its recognised graph. */
  onnxPath: string;
  graph: ModelGraph;
}

export interface Results {
  load: Loaded;
  generate: Completion;
  greedyLines: GreedyLine[];
  repair: RepairResult;
  trace: TraceResult;
  harvestGuard: GuardLine[];
}

export type ToWorker =
  | { id: number; call: Call }
  | { id: number; cancel: true }
  | { dispose: true };

export interface WireError {
  name: string;
  message: string;
  hint?: string;
  cancelled: boolean;
}

export type FromWorker =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: WireError }
  | { id: number; progress: string }
  | { log: string };

/** The engine's progress line for one more item of the side-effect check done (repairFlow reads it; not logged). */
export const SIDE_EFFECT_COUNT = /^side effects checked: (\d+)\/(\d+)$/;

/** That line for `done` of `total` items. */
export const sideEffectCount = (done: number, total: number): string => `side effects checked: ${done}/${total}`;
