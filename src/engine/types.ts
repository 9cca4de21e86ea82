// Domain types shared by the engine, the CLI's JSON, the patch file and the webview's messages.
// Keep this module free of imports: the webview bundle imports it too.

/** Stable names of what the engine exposes, in the style of TransformerLens hook names. */
export const hooks = {
  mlpPost: (layer: number): string => `blocks.${layer}.mlp.post`,
  finalResid: 'final.resid',
  logits: 'logits',
} as const;

export interface Neuron {
  layer: number;
  /** Index of the neuron within the layer's FFN hidden (0 ≤ index < neurons per layer). */
  neuron: number;
}

/** One value-vector change: `v_j ← v_j + delta`, delta of length `width` (the residual width). */
export interface NeuronEdit extends Neuron {
  delta: number[];
}

/**
 * An added (keyed) neuron, as a patch file stores it (neuronpatch/2): `a(x̂) = ReLU(key · x̂ − threshold)` on
 * the FFN input x̂ of `layer` (the normalised residual, width d) writes `a · value` into the residual stream.
 */
export interface AddedNeuronEdit {
  layer: number;
  /** [d]. */
  key: number[];
  /** In the units of key · x̂; the neuron is silent wherever key · x̂ ≤ threshold. */
  threshold: number;
  /** [d]. */
  value: number[];
}

export interface ModelInfo {
  /** Folder name, or `name_or_path` from the config. */
  name: string;
  folder: string;
  /** `model_type` from the config (llama, gpt2, gpt_neox, …) or what the graph showed. */
  architecture: string;
  gated: boolean;
  layers: number;
  /** FFN width `m`: neurons per layer. */
  neurons: number;
  /** Residual width `d`. */
  width: number;
  vocab: number;
  context: number;
  finalNorm: 'rms' | 'layer';
  tiedUnembedding: boolean;
  /** Float type the FFN activations are computed in (fp16 with fp32 graph I/O counts as float16). */
  weightType: 'float32' | 'float16';
  /** How the FFN output weights and the unembedding are stored: "float32", "MatMulNBits 4-bit (block 32, …)", … */
  weightFormat?: string;
  /** The decoder file, relative to the folder (patches are bound to its hash). */
  onnxFile?: string;
  /** Where the folder holds several dtype files: the one loaded, why, and all of them. */
  dtype?: { dtype: string; reason: string; files: { dtype: string; file: string }[] };
  /** sha256 of the model's ONNX file and its external data. */
  hash: string;
  eosTokenIds: number[];
  /** Said once at load: where the config and the tokenizer disagreed (BOS/EOS) and that the tokenizer was followed. */
  notice?: string;
}

export interface RepairCaseVariant {
  prompt: string;
  desired: string;
}

export interface RepairCase {
  id?: string;
  prompt: string;
  desired: string;
  /**
   * The desired text is the whole rest of the line (default): the line must end after it. False: only the start
   * of the completion is prescribed, whatever follows it.
   */
  lineEnd?: boolean;
  variants?: RepairCaseVariant[];
}

export type RepairMethod = 'minimal' | 'joint' | 'keyed';

/** Every repair method, in the order the extension offers them. */
export const REPAIR_METHODS: readonly RepairMethod[] = ['keyed', 'minimal', 'joint'];

export interface PatchMetrics {
  /** Greedy generation with the patch produced the desired text. */
  success: boolean;
  failingTokens: number;
  /** Share of regression prompts whose greedy completion is unchanged; null when none were checked. */
  specificity: number | null;
  /** Mean next-token KL divergence on regression prompts; null when none were checked. */
  meanKl: number | null;
  /** Share of the case's variants now fixed; null when the case has none. */
  generalization: number | null;
  /** Time of the repair itself (locate, solve, confirm), without the side-effect check. */
  repairMs: number;
  /** Logits by which each desired token was asked to win; absent in patches made before it was recorded. */
  margin?: number;
  /** Share of the regression prompts' greedy-continuation tokens whose teacher-forced argmax is unchanged. */
  tokenLocality?: number | null;
  /** Guard lines (lines the model completed exactly right) still exactly right, of how many. */
  keptLines?: { kept: number; of: number } | null;
  /** Relative change of the next-token loss on held-out code (0.001 = +0.1 %). */
  heldOutLossChange?: number | null;
  /** Keyed patches: the key margin ρ the thresholds were set with. */
  keyMargin?: number;
}

/** Side effects of a patch as model-editing work measures them (repair/measures.ts); null where not measured. */
export interface SideEffectSummary {
  /** Teacher-forced agreement of the argmax on the greedy continuations of the regression prompts. */
  tokenLocality: number | null;
  /** Continuation tokens checked. */
  tokens: number;
  prompts: number;
  /** Guard lines still exactly right / guard lines. */
  kept: { kept: number; of: number } | null;
  /** Lines the model had right that the repair was not given (measured only), still exactly right / of them. */
  keptUnseen?: { kept: number; of: number } | null;
  /** Guard lines the patch breaks (first few), with what the model now writes. */
  broken: { prompt: string; desired: string; after: string }[];
  /** Mean next-token loss on held-out code before and after (nats per token), and its relative change. */
  heldOutLoss: { before: number; after: number; change: number; tokens: number } | null;
  meanKl: number | null;
  nextToken: number | null;
  /** Greedy lines unchanged (strict; flips at near-ties). */
  linesUnchanged: number | null;
}

export interface Patch {
  id: string;
  createdAt: string;
  enabled: boolean;
  method: RepairMethod;
  /** `source`: where it was made, as the editor names it (`pkg/util.py:12:8`); absent from the CLI. */
  case: { prompt: string; desired: string; before: string; after: string; source?: string };
  edits: NeuronEdit[];
  /** Neurons the patch adds (keyed method); absent in neuronpatch/1 files. */
  added?: AddedNeuronEdit[];
  metrics: PatchMetrics;
}

/** The format a file is written in when none of its patches adds neurons: readers of older versions still read it. */
export const PATCH_FORMAT = 'neuronpatch/1';
/** The format of a file with added (keyed) neurons. */
export const PATCH_FORMAT_2 = 'neuronpatch/2';
/** Formats this version reads. */
export const READABLE_PATCH_FORMATS: readonly string[] = [PATCH_FORMAT, PATCH_FORMAT_2];

export interface PatchFile {
  format: typeof PATCH_FORMAT | typeof PATCH_FORMAT_2;
  model: { name: string; hash: string };
  patches: Patch[];
}

/** One generated token, as `generate` reports it. */
export interface GeneratedToken {
  id: number;
  text: string;
  prob: number;
}

export interface Completion {
  completion: string;
  tokens: GeneratedToken[];
  ms: number;
  /** Set when the prompt was cut from the left to fit the context window. */
  notice?: string;
}

/** What the user can act on: what failed, where, and what to do. */
export class NeuronpatchError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(hint ? `${message}\n  ${hint}` : message);
    this.name = 'NeuronpatchError';
  }
}

/** A position of the desired text where the model's argmax is not the desired token. */
export interface FailingPosition {
  /** Index into the desired text's tokens (0 = first token after the prompt). */
  index: number;
  /** Text of the desired text before this token. */
  prefix: string;
  model: { id: number; text: string; prob: number };
  desired: { id: number; text: string; prob: number; rank: number };
}

export interface LayerOcclusion {
  layer: number;
  /** Change of the desired token's log-probability with the whole layer's FFN silenced. */
  effect: number;
}

export interface TokenScore {
  text: string;
  score: number;
}

export interface NeuronReport extends Neuron {
  activation: number;
  /** Direct attribution z_j (v_j · c) on the logit gap desired − model (negative: pushes to the wrong token). */
  attribution: number;
  /** Change of the logit gap when the neuron is ablated (null when it was not among the causal checks). */
  ablationEffect: number | null;
  promotes: TokenScore[];
  suppresses: TokenScore[];
  /** An added (keyed) neuron of an active patch (its index counts on from the layer's FFN width). */
  added?: true;
}

export interface TraceResult {
  prompt: string;
  desired: string;
  /** The model's own greedy continuation (the bad completion). */
  completion: string;
  failing: FailingPosition[];
  /** Analysis at the first failing position; null when nothing fails. */
  at: {
    position: FailingPosition;
    layers: LayerOcclusion[];
    neurons: NeuronReport[];
  } | null;
  ms: number;
  /** Set when the prompt was cut from the left to fit the context window. */
  notice?: string;
}

export interface RepairResult {
  success: boolean;
  /** The solver that produced the patch: the one asked for, or joint where minimal fell back to it. */
  method: RepairMethod;
  /** Why the minimal solver fell back to the joint one, when it did. */
  fallback?: string;
  before: string;
  after: string;
  failingTokens: number;
  /** Desired token's probability and rank at each originally failing position, before and after. */
  positions: { index: number; text: string; before: { prob: number; rank: number }; after: { prob: number; rank: number } }[];
  /**
   * Edited neurons, then added ones (keyed: `added`, numbered from the layer's FFN width on, with their activation
   * at the first failing position).
   */
  neurons: (Neuron & { attribution: number | null; ablationEffect: number | null; promotesBefore: TokenScore[]; promotesAfter: TokenScore[]; added?: true; activation?: number })[];
  /** The patch, whether or not the repair succeeded; callers save it only on success. */
  patch: Patch;
  specificity: number | null;
  /** Share of regression prompts whose most likely next token is unchanged; null when none were checked. */
  nextTokenSpecificity: number | null;
  meanKl: number | null;
  generalization: number | null;
  /** Regression prompts whose completion changed. */
  changed: { prompt: string; before: string; after: string }[];
  ms: number;
  /** Milliseconds of one generation of the bad completion, for the repair-time ratio. */
  generationMs: number;
  trace: TraceResult;
  /** Set when the prompt was cut from the left to fit the context window. */
  notice?: string;
  /** Side effects as model-editing work measures them, where regression prompts or guard lines were given. */
  sideEffects?: SideEffectSummary;
  /** Keyed method: which layer took the added neurons, and why. */
  layerChoice?: string;
  /** Earlier (active) patches whose case the new patch breaks; the repair is then not a success. */
  conflicts?: RepairConflict[];
}

/** An active patch broken by a new one: its case now completes with `got` instead of its `desired` text. */
export interface RepairConflict {
  patchId: string;
  desired: string;
  got: string;
}
