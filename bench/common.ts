// What the benchmarks share: options, statistics, and a plain onnxruntime-node session on the original model
// (the baseline every ratio is taken against).
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
export { mulberry32 } from '../src/engine/random';
import { ort } from '../src/engine/onnx/runtime';
import { openFolder } from '../src/engine/model/folder';

export const ROOT = path.resolve(__dirname, '..', '..');

export function options<T extends Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>>(extra: T) {
  return parseArgs({
    args: process.argv.slice(2),
    options: {
      model: { type: 'string', default: path.join(ROOT, 'models', 'demo') },
      threads: { type: 'string' },
      json: { type: 'boolean', default: false },
      ...extra,
    },
    strict: true,
    allowPositionals: false,
  }).values;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}


export function sessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  // The engine's own settings (src/engine/model/session.ts), so that only the graph differs.
  return { graphOptimizationLevel: 'all', intraOpNumThreads: threads ?? 0, executionMode: 'sequential' };
}

export interface KvShape {
  heads: number;
  headDim: number;
}

/** The original model.onnx of a folder, in a plain session, fed the Optimum interface directly. */
export class PlainModel {
  private constructor(readonly session: ort.InferenceSession, readonly kv: KvShape, readonly vocab: number, readonly onnxPath: string) {}

  static async open(folder: string, threads?: number): Promise<PlainModel> {
    const mf = openFolder(folder);
    const c = JSON.parse(readFileSync(path.join(mf.folder, 'config.json'), 'utf8')) as Record<string, number | undefined>;
    const heads = c.num_key_value_heads ?? c.num_attention_heads ?? c.n_head;
    const hidden = c.hidden_size ?? c.n_embd;
    if (!heads || !hidden) throw new Error(`${folder}/config.json: no head count or hidden size`);
    const headDim = c.head_dim ?? hidden / (c.num_attention_heads ?? c.n_head ?? heads);
    const session = await ort.InferenceSession.create(mf.onnxPath, sessionOptions(threads));
    return new PlainModel(session, { heads, headDim }, c.vocab_size ?? 0, mf.onnxPath);
  }

  /** Feeds for [batch][seq] ids after `pastLength` cached positions (all real tokens, no padding). */
  feeds(ids: number[][], past?: ort.Tensor[], pastLength = 0): Record<string, ort.Tensor> {
    const b = ids.length;
    const t = ids[0].length;
    const flat = new BigInt64Array(b * t);
    ids.forEach((row, i) => row.forEach((v, j) => (flat[i * t + j] = BigInt(v))));
    const total = pastLength + t;
    const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', flat, [b, t]) };
    const names = this.session.inputNames;
    if (names.includes('attention_mask')) feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(b * total).fill(1n), [b, total]);
    if (names.includes('position_ids')) {
      const pos = new BigInt64Array(b * t);
      for (let i = 0; i < b; i++) for (let j = 0; j < t; j++) pos[i * t + j] = BigInt(pastLength + j);
      feeds.position_ids = new ort.Tensor('int64', pos, [b, t]);
    }
    const pastNames = names.filter((n) => n.startsWith('past_key_values.'));
    pastNames.forEach((n, i) => {
      feeds[n] = past?.[i] ?? new ort.Tensor('float32', new Float32Array(0), [b, this.kv.heads, 0, this.kv.headDim]);
    });
    return feeds;
  }

  /** Names of the present outputs, in the order of the past inputs they feed. */
  presentNames(): string[] {
    return this.session.inputNames.filter((n) => n.startsWith('past_key_values.')).map((n) => n.replace('past_key_values.', 'present.'));
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

export function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}
