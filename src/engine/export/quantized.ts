// Baking patches into a quantized projection, two ways (`export --quantized side-branch|requantize`):
// - side branch (default): the quantized weight stays as it is and the layer gets the patch's own computation
//   beside it, in the activation's float type: out += Gather(z, patched neurons) · Δ ([K] indices, [K, d] deltas)
//   — exactly what the engine computes at run time, so the exported model reproduces the patched logits to float
//   rounding;
// - requantize: every quantization block that holds a patched neuron's weights is dequantized, gets Δv_j added, and
//   is quantized again with a fresh scale (and zero point); the other blocks keep their bytes. The file keeps its
//   ops, but each touched block carries new rounding error, reported as the largest |W_new − (W + Δ)|.
//   MatMulNBits: the blocks along K that contain neuron j, one per output row. 8-bit linear weights: Δv_j spans
//   every output column, so every column (per channel) or the whole tensor (per tensor) is quantized again.
import { onnx } from 'onnx-proto';
import type { FfnSite } from '../model/graph';
import { findInitializer } from '../onnx/proto';
import { dequantizeLinear, dequantizeNBits, nbitsSizes, nbitsZeroPoints, requantizeNBitsBlock, setPackedZeroPoint } from '../onnx/quant';
import { readTensor, readTensorBytes, writeTensorBytes, writeTensorData } from '../onnx/tensor';
import { NeuronpatchError } from '../types';

const T = onnx.TensorProto.DataType;
const A = onnx.AttributeProto.AttributeType;

export type QuantizedExport = 'side-branch' | 'requantize';

export interface QuantEdit {
  site: FfnSite;
  neuron: number;
  /** Δv_j, [d]. */
  delta: number[];
}

/** Edits of one site, in one [K] index list and one [K, d] delta matrix. */
function grouped(edits: QuantEdit[]): Map<FfnSite, { neurons: number[]; deltas: number[][] }> {
  const out = new Map<FfnSite, { neurons: number[]; deltas: number[][] }>();
  for (const e of edits) {
    const g = out.get(e.site) ?? { neurons: [], deltas: [] };
    g.neurons.push(e.neuron);
    g.deltas.push(e.delta);
    out.set(e.site, g);
  }
  return out;
}

function floatTensor(name: string, dims: number[], values: number[], type: number): onnx.ITensorProto {
  const f32 = Float32Array.from(values);
  const t: onnx.ITensorProto = { name, dims, dataType: type };
  writeTensorData(t, f32, '');  // fields storage: float_data, or fp16 bit patterns in int32_data
  return t;
}

/**
 * Adds the side branch of every edited layer to the model (in place): out_L ← out_L + Gather(z_L, idx) · Δ_L,
 * with idx and Δ as initializers of the activation's type. Consumers of out_L read the sum.
 */
export function addSideBranches(model: onnx.IModelProto, edits: QuantEdit[]): void {
  const g = model.graph!;
  const nodes = g.node ?? [];
  for (const [site, { neurons, deltas }] of grouped(edits)) {
    const L = site.layer;
    const p = `neuronpatch/patch/layers.${L}`;
    const idx = `${p}/index`;
    const delta = `${p}/delta`;
    const sum = `${p}/out`;
    const d = deltas[0].length;
    g.initializer!.push({ name: idx, dims: [neurons.length], dataType: T.INT64, int64Data: neurons });
    g.initializer!.push(floatTensor(delta, [neurons.length, d], deltas.flat(), site.activationType ?? T.FLOAT));
    const producer = nodes.findIndex((n) => (n.output ?? []).includes(site.output));
    if (producer < 0) throw new NeuronpatchError(`Layer ${L}'s FFN output ${site.output} is produced by no node of the model.`);
    for (const n of nodes) n.input = (n.input ?? []).map((i) => (i === site.output ? sum : i));
    for (const o of g.output ?? []) if (o.name === site.output) throw new NeuronpatchError(`Layer ${L}'s FFN output is a graph output; cannot add a side branch.`);
    let term = `${p}/term`;
    const branch: onnx.INodeProto[] = [
      { opType: 'Gather', input: [site.activation, idx], output: [`${p}/z`], name: `${p}/gather`, attribute: [{ name: 'axis', type: A.INT, i: -1 }] },
      { opType: 'MatMul', input: [`${p}/z`, delta], output: [term], name: `${p}/matmul` },
    ];
    if ((site.outputType ?? T.FLOAT) !== (site.activationType ?? T.FLOAT)) {
      branch.push({ opType: 'Cast', input: [term], output: [`${term}/cast`], name: `${p}/cast`, attribute: [{ name: 'to', type: A.INT, i: site.outputType ?? T.FLOAT }] });
      term = `${term}/cast`;
    }
    branch.push({ opType: 'Add', input: [site.output, term], output: [sum], name: `${p}/add` });
    nodes.splice(producer + 1, 0, ...branch);
  }
}

/**
 * Re-quantizes the touched blocks of every edited weight (in place, in `model` and in the external data files under
 * `dataDir`, which must be the export's copy). Returns the largest |W_new − (W_old + Δ)| over the touched
 * weights, in weight units, and how many blocks (or columns) were re-quantized.
 */
export function requantize(model: onnx.IModelProto, edits: QuantEdit[], srcDir: string, dataDir: string): { maxError: number; blocks: number } {
  let maxError = 0;
  let blocks = 0;
  const need = (name: string): onnx.ITensorProto =>
    findInitializer(model, name) ?? (() => { throw new NeuronpatchError(`Initializer ${name} is missing from the model.`); })();
  for (const [site, { neurons, deltas }] of grouped(edits)) {
    const q = site.weight.quant;
    if (!q) throw new NeuronpatchError(`Layer ${site.layer}'s weight is not quantized.`);
    const codesT = need(site.weight.name);
    const codes = readTensorBytes(codesT, srcDir);
    if (q.kind === 'nbits') {
      const scalesT = need(q.scales);
      const scales = readTensor(scalesT, srcDir);
      const zpT = q.zeroPoints ? need(q.zeroPoints) : undefined;
      if (zpT && zpT.dataType !== T.UINT8) {
        throw new NeuronpatchError('Re-quantizing MatMulNBits blocks with float zero points is not supported.', 'Export with --quantized side-branch.');
      }
      const packed = zpT ? readTensorBytes(zpT, srcDir) : undefined;
      const before = dequantizeNBits(q, codes, scales, nbitsZeroPoints(q, packed ? { packed } : undefined));  // [N, K]
      const wanted = Float32Array.from(before);
      neurons.forEach((j, i) => {
        for (let n = 0; n < q.N; n++) wanted[n * q.K + j] += deltas[i][n];
      });
      const { blocks: nb } = nbitsSizes(q);
      const touched = new Set(neurons.map((j) => Math.floor(j / q.blockSize)));
      for (let n = 0; n < q.N; n++) {
        for (const b of touched) {
          const from = b * q.blockSize;
          const values = new Float32Array(q.blockSize);
          values.set(wanted.subarray(n * q.K + from, n * q.K + Math.min(q.K, from + q.blockSize)));
          const { scale, zeroPoint } = requantizeNBitsBlock(q, codes, n, b, values, !packed);
          scales[n * nb + b] = scale;
          if (packed) setPackedZeroPoint(q, packed, n, b, zeroPoint);
          blocks++;
        }
      }
      writeTensorBytes(codesT, codes, dataDir);
      writeTensorData(scalesT, scales, dataDir);
      if (zpT && packed) writeTensorBytes(zpT, packed, dataDir);
      const after = dequantizeNBits(q, codes, readTensor(scalesT, dataDir), nbitsZeroPoints(q, packed ? { packed } : undefined));
      for (let i = 0; i < after.length; i++) maxError = Math.max(maxError, Math.abs(after[i] - wanted[i]));
    } else {
      // 8-bit: Δv_j spans every output column, so every column's range (per channel) or the tensor's (per tensor)
      // may change: all of it is quantized again with fresh scales and zero points.
      const [K, N] = site.weight.dims;
      const signed = codesT.dataType === T.INT8;
      const scaleT = need(q.scale);
      const zpT = q.zeroPoint ? need(q.zeroPoint) : undefined;
      const scale = readTensor(scaleT, srcDir);
      const zpBytes = zpT ? readTensorBytes(zpT, srcDir) : undefined;
      const zp = zpBytes ? (signed ? Float32Array.from(new Int8Array(zpBytes.buffer, zpBytes.byteOffset, zpBytes.length)) : Float32Array.from(zpBytes)) : Float32Array.of(0);
      const wanted = dequantizeLinear(K, N, codes, signed, scale, zp);
      neurons.forEach((j, i) => {
        for (let n = 0; n < N; n++) wanted[j * N + n] += deltas[i][n];
      });
      const groups = scale.length;  // 1 (per tensor) or N (per column)
      const symmetric = signed && zp.every((z) => z === 0);
      for (let gi = 0; gi < groups; gi++) {
        let lo = 0;
        let hi = 0;
        for (let k = 0; k < K; k++) for (let n = groups === 1 ? 0 : gi; n < (groups === 1 ? N : gi + 1); n++) (lo = Math.min(lo, wanted[k * N + n])), (hi = Math.max(hi, wanted[k * N + n]));
        const [qmin, qmax] = signed ? [-128, 127] : [0, 255];
        let s1: number;
        let z1: number;
        if (symmetric) (s1 = Math.max(-lo, hi) / 127 || 1), (z1 = 0);
        else (s1 = (hi - lo) / (qmax - qmin) || 1), (z1 = Math.min(qmax, Math.max(qmin, Math.round(qmin - lo / s1))));
        scale[gi] = s1;
        if (zpBytes) zpBytes[gi] = z1 & 0xff;
        for (let k = 0; k < K; k++) {
          for (let n = groups === 1 ? 0 : gi; n < (groups === 1 ? N : gi + 1); n++) {
            const v = Math.min(qmax, Math.max(qmin, Math.round(wanted[k * N + n] / s1) + z1));
            codes[k * N + n] = v & 0xff;
          }
        }
        blocks++;
      }
      writeTensorBytes(codesT, codes, dataDir);
      writeTensorData(scaleT, scale, dataDir);
      if (zpT && zpBytes) writeTensorBytes(zpT, zpBytes, dataDir);
      const zpAfter = zpBytes ? (signed ? Float32Array.from(new Int8Array(zpBytes.buffer, zpBytes.byteOffset, zpBytes.length)) : Float32Array.from(zpBytes)) : Float32Array.of(0);
      const after = dequantizeLinear(K, N, codes, signed, readTensor(scaleT, dataDir), zpAfter);
      for (let i = 0; i < after.length; i++) maxError = Math.max(maxError, Math.abs(after[i] - wanted[i]));
    }
  }
  return { maxError, blocks };
}
