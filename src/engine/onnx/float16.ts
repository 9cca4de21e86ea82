// IEEE 754 binary16 ⇄ binary32 for whole arrays. fp16 → fp32 is exact and goes through a 64K-entry table of
// fp32 bit patterns (NaN payloads kept); fp32 → fp16 rounds to nearest, ties to even, with subnormals, overflow
// to ±Infinity and NaN kept NaN. fp16 → fp32 → fp16 gives back the same bits for every one of the 65536 values.

let table: Uint32Array | undefined;

/** fp32 bit pattern of every fp16 bit pattern, built on first use (256 KiB). */
function f16Table(): Uint32Array {
  if (table) return table;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      t[h] = sign | 0x7f800000 | (mant << 13); // Inf, NaN (payload kept)
    } else if (exp !== 0) {
      t[h] = sign | ((exp + 112) << 23) | (mant << 13); // 112 = 127 - 15
    } else if (mant === 0) {
      t[h] = sign; // ±0
    } else {
      // Subnormal: shift the mantissa up until its leading 1 becomes the implicit bit.
      let e = 113; // exponent of 2^-14 in fp32 bias, before normalisation
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      t[h] = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
  }
  table = t;
  return t;
}

/** Rounds one fp32 bit pattern to fp16 bits (round to nearest even). */
function bitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (e === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    const payload = mant >>> 13; // keep the top payload bits, so fp16 NaNs survive a round trip bit for bit
    return sign | 0x7c00 | (payload !== 0 ? payload : 0x200);
  }
  const he = e - 112; // fp16 biased exponent
  if (he >= 0x1f) return sign | 0x7c00;
  if (he <= 0) {
    if (he < -10) return sign; // below half the smallest subnormal: ±0
    const m = mant | 0x800000;
    const shift = 14 - he; // 14..24
    const r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (rem > half || (rem === half && (r & 1) !== 0) ? r + 1 : r);
  }
  const h = (he << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, up to 0x7c00 (Infinity): both are the right result.
  return sign | (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0) ? h + 1 : h);
}

/** fp16 bits → fp32 values (exact). */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (out.length !== src.length) throw new RangeError(`f16ToF32: output has ${out.length} elements, input ${src.length}`);
  const t = f16Table();
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = t[src[i]];
  return out;
}

/** fp32 values → fp16 bits, rounding to nearest even. */
export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  if (out.length !== src.length) throw new RangeError(`f32ToF16: output has ${out.length} elements, input ${src.length}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = bitsToF16(bits[i]);
  return out;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** One fp16 bit pattern → its value. */
export function f16BitsToNumber(h: number): number {
  scratchBits[0] = f16Table()[h & 0xffff];
  return scratch[0];
}

/** One number → fp16 bits; goes through fp32 first (as the array form does). */
export function numberToF16Bits(x: number): number {
  scratch[0] = x;
  return bitsToF16(scratchBits[0]);
}
