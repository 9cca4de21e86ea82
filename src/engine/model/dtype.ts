// Which decoder file of a folder that holds several dtypes of one model (the onnx-community / transformers.js
// layout: onnx/model.onnx, model_fp16.onnx, model_q4.onnx, … side by side). The names follow transformers.js's
// dtype suffixes (bnb4's MatMulBnb4 is not read, so it is not offered); `auto` picks the best file present for
// onnxruntime's CPU execution provider.
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { NeuronpatchError } from '../types';

/** The dtypes transformers.js names, plus `auto`. */
export const DTYPES = ['auto', 'fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16'] as const;
export type Dtype = (typeof DTYPES)[number];

/** transformers.js's file suffix of each dtype (`model${suffix}.onnx`). */
const SUFFIX: Record<Exclude<Dtype, 'auto'>, string> = {
  fp32: '', fp16: '_fp16', q8: '_quantized', int8: '_int8', uint8: '_uint8', q4: '_q4', q4f16: '_q4f16',
};

/**
 * `auto`'s order of preference on onnxruntime's CPU provider, the only one neuronpatch runs: fp32 first, the model
 * as trained (repairs and their side effects are measured on it); then 8-bit dynamic quantization, the closest to
 * fp32 and the fastest here (`npm run bench:dtypes`: int8/uint8 decode 1.6-1.9× fp32's tokens/s on the demo model);
 * then 4-bit MatMulNBits with fp32 activations; fp16 and q4f16 last, since the CPU provider computes most fp16 ops by
 * casting to fp32 and back (no faster than fp32, and less exact).
 */
const AUTO_ORDER: Exclude<Dtype, 'auto'>[] = ['fp32', 'q8', 'int8', 'uint8', 'q4', 'fp16', 'q4f16'];

/** Decoder base names, in the order they are looked for. */
const BASES = ['model', 'decoder_model_merged'];
const DIRS = ['', 'onnx'];

export function checkDtype(value: string | undefined): Dtype {
  const v = (value ?? 'auto').trim().toLowerCase();
  if (!(DTYPES as readonly string[]).includes(v)) {
    throw new NeuronpatchError(`Unknown dtype "${value?.slice(0, 40)}".`, `Use one of ${DTYPES.join(', ')}.`);
  }
  return v as Dtype;
}

/** Every dtype file of a folder, relative to it: [{ dtype, file }], in AUTO_ORDER then the rest. */
export function dtypeFiles(folder: string): { dtype: Exclude<Dtype, 'auto'>; file: string }[] {
  const out: { dtype: Exclude<Dtype, 'auto'>; file: string }[] = [];
  for (const dtype of Object.keys(SUFFIX) as Exclude<Dtype, 'auto'>[]) {
    for (const dir of DIRS) {
      for (const base of BASES) {
        const file = path.join(dir, `${base}${SUFFIX[dtype]}.onnx`);
        if (existsSync(path.join(folder, file)) && !out.some((o) => o.dtype === dtype)) out.push({ dtype, file });
      }
    }
  }
  const rank = (d: string) => {
    const i = AUTO_ORDER.indexOf(d as Exclude<Dtype, 'auto'>);
    return i < 0 ? AUTO_ORDER.length : i;
  };
  return out.sort((a, b) => rank(a.dtype) - rank(b.dtype));
}

/** Every .onnx file in the folder and its onnx/ subfolder, for messages. */
function onnxFilesIn(folder: string): string[] {
  const found: string[] = [];
  for (const dir of DIRS) {
    const at = path.join(folder, dir);
    if (!existsSync(at)) continue;
    for (const f of readdirSync(at)) if (f.endsWith('.onnx')) found.push(path.join(dir, f));
  }
  return found.sort();
}

/**
 * The decoder file for `dtype`, relative to the folder, with why it was chosen; undefined when the folder has no
 * dtype-named file at all (the caller then looks for its other layouts). Throws when the folder has dtype files but
 * not the one asked for, naming those it has.
 */
export function pickDtypeFile(folder: string, dtype: Dtype): { file: string; dtype: Exclude<Dtype, 'auto'>; reason: string } | undefined {
  const files = dtypeFiles(folder);
  if (!files.length) {
    if (dtype !== 'auto') {
      const other = onnxFilesIn(folder);
      throw new NeuronpatchError(
        `${folder} has no ${dtype} decoder (looked for model${SUFFIX[dtype]}.onnx here and in onnx/).`,
        other.length ? `It holds ${other.join(', ')}; pass --dtype auto or the model folder of another export.` : 'It holds no .onnx file.',
      );
    }
    return undefined;
  }
  if (dtype === 'auto') {
    const best = files[0];
    const others = files.slice(1).map((f) => f.dtype);
    const reason = `dtype auto: ${best.dtype} (${best.file})` + (others.length
      ? `, the best of ${[best.dtype, ...others].join(', ')} for onnxruntime's CPU provider`
      : ', the only dtype in the folder');
    return { ...best, reason };
  }
  const hit = files.find((f) => f.dtype === dtype);
  if (!hit) {
    throw new NeuronpatchError(
      `${folder} has no ${dtype} decoder (model${SUFFIX[dtype]}.onnx).`,
      `It holds ${files.map((f) => `${f.dtype} (${f.file})`).join(', ')}: pass one of those to --dtype (neuronpatch.model.dtype in VS Code).`,
    );
  }
  return { ...hit, reason: `dtype ${dtype} (${hit.file})` };
}
