// What the engine learns from a decoder's ONNX graph: where each layer's FFN writes to the residual stream,
// the final norm, the unembedding, and the KV-cache interface.

/** How a weight initializer relates to the logical matrix the engine works with. */
export interface WeightRef {
  /** Initializer name in the graph (for a quantized weight: the initializer of its integer codes). */
  name: string;
  /** Shape of the stored initializer; for a quantized weight, of the matrix it dequantizes to ([N, K] for MatMulNBits). */
  dims: number[];
  /**
   * For a value-vector matrix (W_out): 'rows' when neuron j's value vector is row j of the stored tensor
   * ([m, d]: a MatMul weight, a GPT-2 Conv1D), 'cols' when it is column j ([d, m]: Gemm transB, Transpose).
   * For the unembedding: 'rows' when token t's vector is row t ([V, d]), 'cols' when it is column t ([d, V]).
   */
  layout: 'rows' | 'cols';
  /** Set when the weight is stored quantized: how to dequantize it (absent: a FLOAT/FLOAT16 initializer). */
  quant?: QuantRef;
}

/**
 * A quantized weight, dequantized per the operator specs:
 * - 'nbits': com.microsoft MatMulNBits. Codes `name` uint8 [N, ceil(K/blockSize), blockSize·bits/8], packed
 *   low bits first along K; `scales` [N·blocks] (fp32 or fp16); `zeroPoints` packed uint8 [N·ceil(blocks·bits/8)]
 *   or of the scales' type [N·blocks] (absent: 2^(bits−1)). W[n, k] = (code − zp) · scale, W as [N, K].
 * - 'linear': MatMulInteger / MatMulIntegerToFloat weights. Codes `name` int8/uint8 [K, N]; `scale` and
 *   `zeroPoint` scalars (per tensor) or [N] (per output channel). W[k, n] = (code − zp[n]) · scale[n].
 */
export type QuantRef =
  | { kind: 'nbits'; bits: number; blockSize: number; K: number; N: number; scales: string; zeroPoints?: string }
  | { kind: 'linear'; scale: string; zeroPoint?: string };

/** ONNX element type of a tensor the engine touches (TensorProto.DataType: 1 = FLOAT, 10 = FLOAT16). */
export type ElemType = number;

/** A weight's logical [count, width]: neurons × d for W_out, tokens × d for the unembedding, whatever its layout. */
export function extent(ref: WeightRef): [number, number] {
  return ref.layout === 'rows' ? [ref.dims[0], ref.dims[1]] : [ref.dims[1], ref.dims[0]];
}

/** One layer's FFN output projection: `out = z · W_out (+ bias)`. */
export interface FfnSite {
  layer: number;
  /** The node that applies W_out: MatMul, Gemm, MatMulNBits, MatMulInteger, MatMulIntegerToFloat. */
  node: string;
  /**
   * The node that reads `z` on the way to W_out, when it is not `node` itself: the DynamicQuantizeLinear of an
   * 8-bit dynamically quantized projection. Instrumentation feeds it the scaled activation.
   */
  entry?: string;
  /** Tensor name of `z`, the activation (the projection's float input; for int8, DynamicQuantizeLinear's input). */
  activation: string;
  /** Tensor name of the projection's float output (before any bias add; for int8, after the scale Muls). */
  output: string;
  /** Element types of `activation` and `output` (absent in graphs described before they were recorded: floatType). */
  activationType?: ElemType;
  outputType?: ElemType;
  weight: WeightRef;
  /** Op that produced `z` (Mul for a gated MLP, Gelu/FastGelu/…). */
  activationOp: string;
  gated: boolean;
}

export interface FinalNorm {
  kind: 'rms' | 'layer';
  /** Tensor name of the residual stream entering the final norm ('' until a fused norm's sum output is named). */
  residual: string;
  /** Where the norm is fused with the last residual add (Skip*Normalization): that node's first output. */
  fusedWith?: string;
  gain: WeightRef;
  bias?: WeightRef;
  eps: number;
}

export type CacheLayout =
  /** `past_key_values.N.key` / `.value`, each [batch, heads, past, headDim]. */
  | { kind: 'pairs'; inputs: { key: string; value: string }[]; outputs: { key: string; value: string }[] }
  /** `past_N`, [2, batch, heads, past, headDim]: key and value stacked. */
  | { kind: 'stacked'; inputs: string[]; outputs: string[] }
  /**
   * `past_key_values.N.key_value`, [batch, past, 2 · headDim]: StarCoder's (gpt_bigcode) multi-query cache, key and
   * value concatenated on the last axis (`heads` is 1, `headDim` the concatenated width).
   */
  | { kind: 'fused'; inputs: string[]; outputs: string[] };

/**
 * A scalar input the engine feeds itself: `num_logits_to_keep` / `logits_to_keep` (how many last positions the
 * lm_head computes; 0 = all of them), [] or [1], int64 or int32.
 */
export interface ScalarInput {
  name: string;
  kind: 'logitsToKeep';
  type: 'int64' | 'int32';
  /** 0 for a scalar, 1 for a [1] tensor. */
  rank: 0 | 1;
}

export interface ModelGraph {
  sites: FfnSite[];
  finalNorm: FinalNorm;
  unembedding: WeightRef;
  tied: boolean;
  /**
   * The token embedding [V, d] when it is a float initializer of its own (not the unembedding's): read only to
   * check a config's `tie_word_embeddings: true` against the graph (an export may store a tied table twice).
   */
  embedding?: WeightRef;
  cache: CacheLayout;
  heads: number;
  headDim: number;
  /** Element type of the ids/mask/positions inputs. */
  indexType: 'int64' | 'int32';
  /** Element type of the pasts (and of the packed intervention inputs the engine feeds). */
  floatType: 'float32' | 'float16';
  /** Element types of the final residual and of the logits, where they differ from floatType (fp16 with fp32 I/O). */
  residualType?: ElemType;
  logitsType?: ElemType;
  /** How the FFN output weights and the unembedding are stored: 'float', or the quantization scheme(s) found. */
  weightFormat?: string;
  inputs: { ids: string; mask?: string; positions?: string };
  /**
   * Where rows of a batch may be padded: 'left' where the graph takes per-row positions and a left-padded mask;
   * 'right' where it cannot (no position_ids: positions count the padding; GroupQueryAttention: seqlens_k says
   * each row's tokens start at slot 0). Absent in graphs recognised before it was: 'left' with position_ids.
   */
  padding?: 'left' | 'right';
  /** Extra scalar inputs and what to feed them (absent in graphs recognised before they were). */
  scalars?: ScalarInput[];
  logits: string;
  /** Input of the instrumented graph: the positions whose logits the lm_head computes (absent: all of them). */
  logitPositions?: string;
  /** Layers of the instrumented graph that take added (keyed) neurons and expose their FFN input (added.ts). */
  keyedLayers?: number[];
}

/** Whether rows of a batch may be left-padded (and so decoded together whatever their lengths). */
export function padsLeft(graph: ModelGraph): boolean {
  return graph.padding ? graph.padding === 'left' : !!graph.inputs.positions;
}
