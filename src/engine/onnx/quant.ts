// Quantized weights, per the operator specs, in and out of float:
// - com.microsoft MatMulNBits (onnxruntime contrib ops): B is uint8 [N, blocks, blockSize·bits/8], blocks =
//   ceil(K / blockSize); along K the codes are packed low bits first (for 4 bits: element 2i in the low nibble
//   of byte i). scales [N·blocks] of A's type. zero_points, optional: packed uint8 [N · ceil(blocks·bits/8)]
//   (each row n padded to whole bytes), or of the scales' type [N·blocks]; absent, 2^(bits−1).
//   W[n, k] = (code[n, k] − zp[n, k/blockSize]) · scale[n, k/blockSize].
// - ONNX MatMulInteger / com.microsoft MatMulIntegerToFloat weights: int8 or uint8 [K, N], zero point and scale
//   per tensor (scalars) or per output column ([N]). W[k, n] = (code[k, n] − zp[n]) · scale[n].
import { NeuronpatchError } from '../types';

export interface NBitsLayout {
  K: number;
  N: number;
  bits: number;
  blockSize: number;
}

/** Bytes per row of packed codes and of packed zero points. */
export function nbitsSizes(l: NBitsLayout): { blocks: number; blob: number; zpRow: number } {
  const blocks = Math.ceil(l.K / l.blockSize);
  return { blocks, blob: (l.blockSize * l.bits) / 8, zpRow: Math.ceil((blocks * l.bits) / 8) };
}

/** The `bits`-wide field `index` of packed bytes, low bits first. */
function field(bytes: Uint8Array, offset: number, index: number, bits: number): number {
  const bit = index * bits;
  return (bytes[offset + (bit >> 3)] >> (bit & 7)) & ((1 << bits) - 1);
}

/**
 * Zero points of MatMulNBits as one number per (n, block): `packed` (uint8, bits wide), or `floats` (the scales'
 * type, [N·blocks]), or the default 2^(bits−1).
 */
export function nbitsZeroPoints(l: NBitsLayout, zp?: { packed?: Uint8Array; floats?: Float32Array }): Float32Array {
  const { blocks, zpRow } = nbitsSizes(l);
  const out = new Float32Array(l.N * blocks);
  if (zp?.floats) {
    if (zp.floats.length !== out.length) throw new NeuronpatchError(`MatMulNBits zero points: ${zp.floats.length} values, ${out.length} expected ([N·blocks]).`);
    out.set(zp.floats);
  } else if (zp?.packed) {
    if (zp.packed.length !== l.N * zpRow) throw new NeuronpatchError(`MatMulNBits zero points: ${zp.packed.length} bytes, ${l.N * zpRow} expected.`);
    for (let n = 0; n < l.N; n++) for (let b = 0; b < blocks; b++) out[n * blocks + b] = field(zp.packed, n * zpRow, b, l.bits);
  } else {
    out.fill(1 << (l.bits - 1));
  }
  return out;
}

/** MatMulNBits' B dequantized as [N, K] float32. `codes` uint8 [N·blocks·blob], `scales` [N·blocks]. */
export function dequantizeNBits(l: NBitsLayout, codes: Uint8Array, scales: Float32Array, zeroPoints: Float32Array): Float32Array {
  const { blocks, blob } = nbitsSizes(l);
  if (codes.length !== l.N * blocks * blob) throw new NeuronpatchError(`MatMulNBits codes: ${codes.length} bytes, ${l.N * blocks * blob} expected.`);
  if (scales.length !== l.N * blocks) throw new NeuronpatchError(`MatMulNBits scales: ${scales.length} values, ${l.N * blocks} expected ([N·blocks]).`);
  const out = new Float32Array(l.N * l.K);
  if (l.bits === 4) {
    // Two codes per byte, low nibble first: one byte read and one scale/zero point per block (the whole
    // unembedding of a real vocabulary is dequantized this way when the steer's Gram matrix is computed).
    for (let n = 0; n < l.N; n++) {
      const row = n * l.K;
      for (let b = 0; b < blocks; b++) {
        const s = scales[n * blocks + b];
        const z = zeroPoints[n * blocks + b];
        const base = (n * blocks + b) * blob;
        const k0 = b * l.blockSize;
        const k1 = Math.min(l.K, k0 + l.blockSize);
        for (let k = k0, i = base; k < k1; k += 2, i++) {
          const byte = codes[i];
          out[row + k] = ((byte & 15) - z) * s;
          if (k + 1 < k1) out[row + k + 1] = ((byte >> 4) - z) * s;
        }
      }
    }
    return out;
  }
  for (let n = 0; n < l.N; n++) {
    for (let k = 0; k < l.K; k++) {
      const b = Math.floor(k / l.blockSize);
      const code = field(codes, (n * blocks + b) * blob, k - b * l.blockSize, l.bits);
      out[n * l.K + k] = (code - zeroPoints[n * blocks + b]) * scales[n * blocks + b];
    }
  }
  return out;
}

/**
 * Re-quantizes block `b` of row `n` (asymmetric when the row has zero points, symmetric otherwise, as the
 * stored block is) from its float values, writing codes, scale and zero point in place. Returns the block's new
 * [scale, zero point].
 */
export function requantizeNBitsBlock(
  l: NBitsLayout, codes: Uint8Array, n: number, b: number, values: Float32Array, symmetric: boolean,
): { scale: number; zeroPoint: number } {
  const { blocks, blob } = nbitsSizes(l);
  const qmax = (1 << l.bits) - 1;
  let scale: number;
  let zeroPoint: number;
  if (symmetric) {
    // Symmetric around 2^(bits−1): the largest magnitude maps to −2^(bits−1) (the extra negative code).
    let amax = 0;
    let signed = 0;
    for (const v of values) if (Math.abs(v) > amax) (amax = Math.abs(v)), (signed = v);
    zeroPoint = 1 << (l.bits - 1);
    scale = amax === 0 ? 1 : signed / -zeroPoint;
  } else {
    let lo = 0;
    let hi = 0;
    for (const v of values) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    scale = hi === lo ? 1 : (hi - lo) / qmax;
    zeroPoint = Math.min(qmax, Math.max(0, Math.round(-lo / scale)));
  }
  const offset = (n * blocks + b) * blob;
  for (let i = 0; i < blob; i++) codes[offset + i] = 0;
  values.forEach((v, i) => {
    const q = Math.min(qmax, Math.max(0, Math.round(v / scale + zeroPoint)));
    const bit = i * l.bits;
    codes[offset + (bit >> 3)] |= q << (bit & 7);
  });
  return { scale, zeroPoint };
}

/** Writes zero point `value` of (n, block) into packed zero points. */
export function setPackedZeroPoint(l: NBitsLayout, packed: Uint8Array, n: number, b: number, value: number): void {
  const { zpRow } = nbitsSizes(l);
  const bit = b * l.bits;
  const at = n * zpRow + (bit >> 3);
  const mask = ((1 << l.bits) - 1) << (bit & 7);
  packed[at] = (packed[at] & ~mask) | ((value << (bit & 7)) & mask);
}

/**
 * An 8-bit weight [K, N] dequantized as float32 [K, N]. `codes` are the stored bytes, read as int8 when
 * `signed`; `scale` and `zeroPoint` hold 1 value (per tensor) or N (per column).
 */
export function dequantizeLinear(K: number, N: number, codes: Uint8Array, signed: boolean, scale: Float32Array, zeroPoint: Float32Array): Float32Array {
  if (codes.length !== K * N) throw new NeuronpatchError(`8-bit weight: ${codes.length} codes, ${K * N} expected ([K, N]).`);
  for (const [what, v] of [['scale', scale], ['zero point', zeroPoint]] as const) {
    if (v.length !== 1 && v.length !== N) throw new NeuronpatchError(`8-bit weight: ${v.length} ${what} values; 1 (per tensor) or ${N} (per column) expected.`);
  }
  const q = signed ? new Int8Array(codes.buffer, codes.byteOffset, codes.length) : codes;
  const out = new Float32Array(K * N);
  const perScale = scale.length === N;
  const perZero = zeroPoint.length === N;
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) {
      out[k * N + n] = (q[k * N + n] - zeroPoint[perZero ? n : 0]) * scale[perScale ? n : 0];
    }
  }
  return out;
}
