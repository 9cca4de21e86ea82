// The dtype files people download, for the format tests: built at test time from the embedded models/demo by
// tools/formats/convert.py (numpy + Debian's python3-onnx; a second or two each), so that a clean checkout tests
// them without ../shared/, plus the converted folders of ../shared/fixtures/formats where they exist. And a plain
// onnxruntime greedy loop (KV cache, no instrumentation) on a model's original file, to compare decoding with.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ort } from '../../src/engine/onnx/runtime';
import { floats, plainSession, root, sharedFixtures, tempDir } from './models';

export interface FormatEntry {
  name: string;
  dir: string;
  /** --dtype for a multi-dtype folder. */
  dtype?: string;
  /** Expected FFN/unembedding storage: 'nbits', 'linear' (8-bit), or 'float'. */
  quant: 'nbits' | 'linear' | 'float';
  /** The unembedding's storage, where it differs from the FFN's. */
  lmHead?: 'nbits' | 'linear' | 'float';
  /** fp16 activations. */
  fp16: boolean;
  source: 'converted' | 'shared';
  /** Worth a full trace/repair/export round (the others check loading, logits and decoding). */
  repair?: boolean;
}

const PYTHON = '/usr/bin/python3';
const CONVERTER = path.join(root, 'tools', 'formats', 'convert.py');
const DEMO = path.join(root, 'models', 'demo');

/** What convert.py builds: name → its arguments and what the engine should find. */
const CONVERSIONS: { name: string; args: string[]; quant: FormatEntry['quant']; lmHead?: FormatEntry['quant']; fp16: boolean; repair?: boolean; dtypes?: string[] }[] = [
  { name: 'q4', args: ['--format', 'q4'], quant: 'nbits', fp16: false, repair: true },
  { name: 'q4-zp-block16-ffn', args: ['--format', 'q4', '--zero-points', '--block-size', '16', '--targets', 'ffn'], quant: 'nbits', lmHead: 'float', fp16: false, repair: true },
  { name: 'q4f16', args: ['--format', 'q4f16'], quant: 'nbits', fp16: true, repair: true },
  { name: 'int8', args: ['--format', 'int8'], quant: 'linear', fp16: false, repair: true },
  { name: 'uint8-per-channel', args: ['--format', 'uint8', '--per-channel'], quant: 'linear', fp16: false },
  { name: 'int8-fused-lm-head', args: ['--format', 'int8-fused', '--targets', 'lm_head'], quant: 'float', lmHead: 'linear', fp16: false },
  { name: 'int8-fused', args: ['--format', 'int8-fused', '--per-channel'], quant: 'linear', fp16: false },
  { name: 'fp16-fp32io', args: ['--format', 'fp16-fp32io'], quant: 'float', fp16: true, repair: true },
  { name: 'dtypes', args: ['--format', 'dtypes'], quant: 'float', fp16: false, dtypes: ['fp16', 'int8', 'uint8', 'q4', 'q4f16'] },
];

let built: { entries: FormatEntry[]; why?: string } | undefined;

/** Why the converter cannot run here, or undefined. */
function converterAbsence(): string | undefined {
  if (!fs.existsSync(path.join(DEMO, 'model.onnx'))) return 'models/demo is absent: build it with tools/demo-model/build.sh';
  const probe = spawnSync(PYTHON, ['-c', 'import onnx, numpy'], { encoding: 'utf8' });
  if (probe.status !== 0) return `${PYTHON} with onnx and numpy is needed to convert the formats (Debian: python3-onnx python3-numpy)`;
  return undefined;
}

const dtypeQuant = (d: string): FormatEntry['quant'] => (d.startsWith('q4') ? 'nbits' : d.endsWith('int8') ? 'linear' : 'float');

/** Builds every converted format once per test process (into this run's temp folder). */
export function convertedFormats(): { entries: FormatEntry[]; why?: string } {
  if (built) return built;
  const why = converterAbsence();
  if (why) return (built = { entries: [], why });
  const base = tempDir('formats');
  const entries: FormatEntry[] = [];
  for (const c of CONVERSIONS) {
    const dir = path.join(base, c.name);
    const r = spawnSync(PYTHON, [CONVERTER, DEMO, dir, ...c.args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`convert.py ${c.args.join(' ')} failed: ${r.stderr.slice(-2000)}`);
    if (c.dtypes) {
      for (const d of c.dtypes) entries.push({ name: `${c.name}/${d}`, dir, dtype: d, quant: dtypeQuant(d), fp16: d.includes('16'), source: 'converted' });
    } else {
      entries.push({ name: c.name, dir, quant: c.quant, lmHead: c.lmHead, fp16: c.fp16, source: 'converted', repair: c.repair });
    }
  }
  return (built = { entries });
}

/** The folders of ../shared/fixtures/formats (absent on a user's clone). */
export function sharedFormats(): FormatEntry[] {
  const f = path.join(sharedFixtures, 'formats');
  const all: FormatEntry[] = [
    { name: 'shared/demo-q4', dir: path.join(f, 'demo-q4'), quant: 'nbits', fp16: false, source: 'shared' },
    { name: 'shared/demo-int8', dir: path.join(f, 'demo-int8'), quant: 'linear', fp16: false, source: 'shared' },
    { name: 'shared/demo-fp16-fp32io', dir: path.join(f, 'demo-fp16-fp32io'), quant: 'float', fp16: true, source: 'shared' },
    ...['fp16', 'int8', 'q4', 'q4f16'].map((d): FormatEntry => ({
      name: `shared/demo-onnx-dtypes/${d}`, dir: path.join(f, 'demo-onnx-dtypes'), dtype: d, quant: dtypeQuant(d), fp16: d.includes('16'), source: 'shared',
    })),
  ];
  return all.filter((e) => fs.existsSync(e.dir));
}

/**
 * Greedy decoding with a plain onnxruntime session on `file` (default options, KV cache, batch 1): the reference
 * the engine's `generate --no-heal` must equal. Feeds are built from the session's own input metadata.
 */
export async function plainGreedy(file: string, prompt: number[], newTokens: number, eos: number[] = []): Promise<number[]> {
  const s = await plainSession(file);
  const ids = [...prompt];
  const out: number[] = [];
  let past: Record<string, ort.Tensor> = {};
  let pastLength = 0;
  let step = prompt;
  const int64 = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
  for (let i = 0; i < newTokens; i++) {
    const feeds: Record<string, ort.Tensor> = {};
    for (const meta of s.inputMetadata) {
      if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
      const name = meta.name;
      if (name === 'input_ids') feeds[name] = int64(step);
      else if (name === 'attention_mask') feeds[name] = int64(ids.map(() => 1));
      else if (name === 'position_ids') feeds[name] = int64(step.map((_, j) => pastLength + j));
      else if (past[name]) feeds[name] = past[name];
      else {
        const dims = meta.shape.map((d, k) => (typeof d === 'number' && d > 0 ? d : k === 0 ? 1 : 0));
        feeds[name] = meta.type === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
      }
    }
    const res = await s.run(feeds);
    const logits = floats(res.logits);
    const V = logits.length / step.length;
    const last = logits.subarray((step.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
    out.push(best);
    if (eos.includes(best)) break;
    past = {};
    for (const name of s.outputNames) if (name.startsWith('present')) past[name.replace('present', 'past_key_values')] = res[name];
    pastLength = ids.length;
    ids.push(best);
    step = [best];
  }
  return out;
}
