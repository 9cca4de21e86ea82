// Matrix products too large for a JavaScript loop, run in onnxruntime: A·Bᵀ for scanning the unembedding
// against a few vectors at once (the logit lens of many neurons in one pass over W_U).
import { ort } from './runtime';
import { onnx } from 'onnx-proto';

function productGraph(): Uint8Array {
  const f = onnx.TensorProto.DataType.FLOAT;
  const dims = (a: string, b: string) => ({ tensorType: { elemType: f, shape: { dim: [{ dimParam: a }, { dimParam: b }] } } });
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    producerName: 'neuronpatch',
    graph: {
      name: 'abt',
      node: [
        { opType: 'Transpose', input: ['B'], output: ['Bt'], name: 'transpose' },
        { opType: 'MatMul', input: ['A', 'Bt'], output: ['C'], name: 'product' },
      ],
      input: [{ name: 'A', type: dims('n', 'd') }, { name: 'B', type: dims('k', 'd') }],
      output: [{ name: 'C', type: dims('n', 'k') }],
    },
  };
  return onnx.ModelProto.encode(model as onnx.ModelProto).finish();
}

let shared: Promise<ort.InferenceSession> | undefined;

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
