// Matrix products too large for a JavaScript loop, run in onnxruntime: A·Bᵀ for scanning the unembedding
// against a few vectors at once, and the same product reduced to its top and bottom entries per row inside the
// graph (the logit lens of many neurons in one pass over W_U, without a vocabulary-sized array in JS).
import { ort } from './runtime';
import { onnx } from 'onnx-proto';

const F = onnx.TensorProto.DataType.FLOAT;
const I64 = onnx.TensorProto.DataType.INT64;
const INT = onnx.AttributeProto.AttributeType.INT;
const dims = (elemType: number, ...names: string[]) => ({ tensorType: { elemType, shape: { dim: names.map((dimParam) => ({ dimParam })) } } });

function encode(name: string, node: onnx.INodeProto[], input: onnx.IValueInfoProto[], output: onnx.IValueInfoProto[]): Uint8Array {
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    producerName: 'neuronpatch',
    graph: { name, node, input, output },
  };
  return onnx.ModelProto.encode(model as onnx.ModelProto).finish();
}

function productGraph(): Uint8Array {
  return encode('abt', [
    { opType: 'Transpose', input: ['B'], output: ['Bt'], name: 'transpose' },
    { opType: 'MatMul', input: ['A', 'Bt'], output: ['C'], name: 'product' },
  ], [{ name: 'A', type: dims(F, 'n', 'd') }, { name: 'B', type: dims(F, 'k', 'd') }], [{ name: 'C', type: dims(F, 'n', 'k') }]);
}

/** A·Bᵀ, then TopK of each row, largest and smallest: [n, K] values and indices each. */
function productTopKGraph(): Uint8Array {
  const topK = (largest: number, v: string, i: string): onnx.INodeProto => ({
    opType: 'TopK', input: ['C', 'K'], output: [v, i], name: `top/${largest}`,
    attribute: [{ name: 'axis', type: INT, i: -1 }, { name: 'largest', type: INT, i: largest }, { name: 'sorted', type: INT, i: 1 }],
  });
  return encode('abt_topk', [
    { opType: 'Transpose', input: ['B'], output: ['Bt'], name: 'transpose' },
    { opType: 'MatMul', input: ['A', 'Bt'], output: ['C'], name: 'product' },
    topK(1, 'top', 'topIndex'),
    topK(0, 'bottom', 'bottomIndex'),
  ], [{ name: 'A', type: dims(F, 'n', 'd') }, { name: 'B', type: dims(F, 'k', 'd') }, { name: 'K', type: dims(I64, 'one') }], [
    { name: 'top', type: dims(F, 'n', 'K') }, { name: 'topIndex', type: dims(I64, 'n', 'K') },
    { name: 'bottom', type: dims(F, 'n', 'K') }, { name: 'bottomIndex', type: dims(I64, 'n', 'K') },
  ]);
}

let shared: Promise<ort.InferenceSession> | undefined;
let sharedTopK: Promise<ort.InferenceSession> | undefined;

/**
 * C = A·Bᵀ: A [n, d], B [k, d] row-major float32 → C [n, k] float32. One small onnxruntime session serves every
 * call in the process (created on first use, single-threaded work is not worth a second one).
 */
export async function productABt(a: Float32Array, n: number, b: Float32Array, k: number, d: number): Promise<Float32Array> {
  shared ??= ort.InferenceSession.create(productGraph());
  const session = await shared;
  const out = await session.run({ A: new ort.Tensor('float32', a, [n, d]), B: new ort.Tensor('float32', b, [k, d]) });
  return out.C.data as Float32Array;
}

/** Each row's K largest (`top`) and K smallest (`bottom`) entries of a product, best first. */
export interface RowExtremes {
  /** [n, K] values, largest first. */
  top: Float32Array;
  /** [n, K] column indices of `top`. */
  topIndex: Int32Array;
  /** [n, K] values, smallest first. */
  bottom: Float32Array;
  bottomIndex: Int32Array;
  /** K: min(asked, k). */
  K: number;
}

/**
 * The K largest and K smallest entries of each row of C = A·Bᵀ (A [n, d], B [k, d] float32), computed and ranked
 * in onnxruntime (MatMul then TopK): only [n, K] values and indices come back, never C itself. Equal values keep
 * the lower column first (TopK's order). K is cut to k.
 */
export async function productTopK(a: Float32Array, n: number, b: Float32Array, k: number, d: number, K: number): Promise<RowExtremes> {
  sharedTopK ??= ort.InferenceSession.create(productTopKGraph());
  const session = await sharedTopK;
  const kk = Math.max(1, Math.min(K, k));
  const out = await session.run({
    A: new ort.Tensor('float32', a, [n, d]), B: new ort.Tensor('float32', b, [k, d]), K: new ort.Tensor('int64', BigInt64Array.of(BigInt(kk)), [1]),
  });
  const ints = (t: ort.Tensor) => Int32Array.from(t.data as BigInt64Array, Number);
  return { top: out.top.data as Float32Array, topIndex: ints(out.topIndex), bottom: out.bottom.data as Float32Array, bottomIndex: ints(out.bottomIndex), K: kk };
}
