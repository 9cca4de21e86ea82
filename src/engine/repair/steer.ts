// The semantic steer: the smallest residual change, measured in logit space, that moves the logits along
// e_y − e_a:  s = G⁻¹ W̃ᵀ(e_y − e_a),  W̃ = W_U·diag(γ),  G = W̃ᵀW̃ + εI.
// G depends on the model only; onnxruntime computes it (a V×d by d×V product is no job for a JavaScript loop)
// and its Cholesky factor is cached beside the instrumented graph.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { ort } from '../onnx/runtime';
import { onnx } from 'onnx-proto';
import { cholesky, choleskySolve } from '../linalg';
import type { LoadedModel } from '../model/load';
import { gapDirection } from '../trace/attribution';

/** ε relative to the mean eigenvalue of W̃ᵀW̃: keeps the steer out of directions the unembedding barely reads. */
const RELATIVE_EPS = 1e-2;

function gramGraph(): Uint8Array {
  const f = onnx.TensorProto.DataType.FLOAT;
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    producerName: 'neuronpatch',
    graph: {
      name: 'gram',
      node: [
        { opType: 'Transpose', input: ['W'], output: ['Wt'], name: 'transpose' },
        { opType: 'MatMul', input: ['Wt', 'W'], output: ['G'], name: 'gram' },
      ],
      input: [{ name: 'W', type: { tensorType: { elemType: f, shape: { dim: [{ dimParam: 'V' }, { dimParam: 'd' }] } } } }],
      output: [{ name: 'G', type: { tensorType: { elemType: f, shape: { dim: [{ dimParam: 'd' }, { dimParam: 'd' }] } } } }],
    },
  };
  return onnx.ModelProto.encode(model as onnx.ModelProto).finish();
}

/** WᵀW for row-major W [rows, cols], in onnxruntime; one session for many products. */
export class Gram {
  private constructor(private readonly session: ort.InferenceSession) {}

  static async create(): Promise<Gram> {
    return new Gram(await ort.InferenceSession.create(gramGraph()));
  }

  async of(w: Float32Array, rows: number, cols: number): Promise<Float32Array> {
    const out = await this.session.run({ W: new ort.Tensor('float32', w, [rows, cols]) });
    return out.G.data as Float32Array;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

export async function gram(w: Float32Array, rows: number, cols: number): Promise<Float32Array> {
  const g = await Gram.create();
  try {
    return await g.of(w, rows, cols);
  } finally {
    await g.release();
  }
}

export class Steer {
  private constructor(
    private readonly model: LoadedModel,
    private readonly factor: Float64Array,
  ) {}

  static async load(model: LoadedModel): Promise<Steer> {
    const d = model.info.width;
    const file = path.join(model.cacheDir, 'steer-cholesky.f64');
    if (existsSync(file)) {
      const buf = readFileSync(file);
      if (buf.length === d * d * 8) return new Steer(model, new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)));
    }
    // W̃ᵀW̃ = Σ over row blocks of W_U (never read whole: 0.5–1 GB in float32 for a real vocabulary), scaled by
    // γ_i γ_j afterwards.
    const g = model.weights.finalGain();
    const G = new Float64Array(d * d);
    const products = await Gram.create();
    try {
      for (const { rows } of model.weights.unembeddingBlocks()) {
        const part = await products.of(rows, rows.length / d, d);
        for (let i = 0; i < d * d; i++) G[i] += part[i];
      }
    } finally {
      await products.release();
    }
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) G[i * d + j] *= g[i] * g[j];
    let trace = 0;
    for (let i = 0; i < d; i++) trace += G[i * d + i];
    for (let i = 0; i < d; i++) G[i * d + i] += (RELATIVE_EPS * trace) / d;
    const factor = cholesky(G, d);
    await writeFileAtomic(file, Buffer.from(factor.buffer));
    return new Steer(model, factor);
  }

  /** s = G⁻¹ γ ⊙ (W_U[y] − W_U[a]). */
  direction(y: number, a: number): Float64Array {
    return choleskySolve(this.factor, this.model.info.width, gapDirection(this.model, y, a));
  }
}
