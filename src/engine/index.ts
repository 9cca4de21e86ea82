// The engine's front door for the CLI, the extension and the tests.
import { generateBatched, type GenerateOptions } from './generate';
import { type LoadedModel, type LoadOptions, loadModel as loadInstrumented } from './model/load';
import { patchSet } from './patches/patchset';
import { repair as repairCase, type RepairOptions } from './repair/index';
import { type GreedyLine, greedyLines as greedyLinesOf } from './repair/verify';
import { trace as traceCase, type TraceOptions } from './trace/index';
import type { Completion, ModelInfo, Patch, RepairCase, RepairResult, TraceResult } from './types';

export interface ModelGenerateOptions extends Omit<GenerateOptions, 'edits'> {
  /** Patches applied through the graph's inputs (the enabled ones of a store, in order). */
  patches?: Patch[];
  /**
   * Someone is waiting on this (an inline completion): it goes ahead of other work on the model, such as a repair
   * in progress, whose forwards pause while it runs.
   */
  interactive?: boolean;
}

/** A loaded model: the instrumented session plus what every front door asks of it. */
export class Model {
  /** The edits of the last patch list asked for, kept as one object so that a PrefixCache can recognise them. */
  private lastEdits: { patches: Patch[]; edits: ReturnType<typeof patchSet> } | undefined;

  constructor(readonly loaded: LoadedModel) {}

  private editsOf(patches: Patch[] | undefined) {
    if (!patches?.length) return undefined;
    // The same patch objects (not only the same ids: a patch file edited by hand keeps its ids) give the same edits.
    const last = this.lastEdits;
    if (!last || last.patches.length !== patches.length || last.patches.some((p, i) => p !== patches[i])) {
      this.lastEdits = { patches: [...patches], edits: patchSet(patches, this.info.width) };
    }
    return this.lastEdits!.edits;
  }

  get info(): ModelInfo {
    return this.loaded.info;
  }

  get tokenizer() {
    return this.loaded.tokenizer;
  }

  async generate(prompt: string, opts: ModelGenerateOptions = {}): Promise<Completion> {
    return (await this.generateMany([prompt], opts))[0];
  }

  /** Many prompts, decoded together in batches of `batch` rows (left-padded, one KV cache per batch). */
  async generateMany(prompts: string[], opts: ModelGenerateOptions & { batch?: number } = {}): Promise<Completion[]> {
    const { patches, batch = 16, interactive, ...rest } = opts;
    const edits = this.editsOf(patches);
    const run = () => generateBatched(this.loaded, prompts, { ...rest, edits }, batch);
    return interactive ? this.loaded.session.interactive(run) : run();
  }

  /** The greedy line of each prompt with these patches (what the side-effect check compares against). */
  greedyLines(prompts: string[], patches: readonly Patch[] = [], signal?: AbortSignal): Promise<GreedyLine[]> {
    return greedyLinesOf(this.loaded, prompts, this.editsOf([...patches]), signal);
  }

  dispose(): Promise<void> {
    return this.loaded.release();
  }
}

export async function loadModel(folder: string, opts: LoadOptions = {}): Promise<Model> {
  return new Model(await loadInstrumented(folder, opts));
}

/** Trace a bad completion (with the given patches active). */
export function trace(model: Model, c: RepairCase, opts: Omit<TraceOptions, 'edits'> & { active?: Patch[] } = {}): Promise<TraceResult> {
  const { active, ...rest } = opts;
  return traceCase(model.loaded, c, { ...rest, edits: active?.length ? patchSet(active, model.info.width) : undefined });
}

/** Repair a case on top of the active patches; the result carries the patch (save it only on success). */
export function repair(model: Model, c: RepairCase, opts: RepairOptions = {}): Promise<RepairResult> {
  return repairCase(model.loaded, c, opts);
}

export type { LoadOptions } from './model/load';
export type { RepairOptions } from './repair/index';
export { Cancelled } from './repair/index';
export { PatchStore } from './patches/store';
export { PrefixCache } from './prefix';
export * from './types';
