// A model folder as Hugging Face Optimum, transformers.js and onnxruntime-genai lay it out: which files, which
// sizes the config claims, which I/O names the decoder uses.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { checkJsonDepth } from '../jsonlimits';
import { NeuronpatchError } from '../types';
import { type Dtype, dtypeFiles, pickDtypeFile } from './dtype';
import { displayName, quote } from '../untrusted';
import type { CacheNames } from './recognise';

export interface FolderConfig {
  modelType: string;
  name: string;
  layers?: number;
  hidden?: number;
  vocab?: number;
  context?: number;
  eosTokenIds: number[];
  bosTokenId?: number;
  tied?: boolean;
  cacheNames?: CacheNames;
  inputNames?: { ids?: string; mask?: string; positions?: string };
  logitsName?: string;
  /** Decoder file named by genai_config.json. */
  decoderFile?: string;
}

export interface ModelFolder {
  folder: string;
  onnxPath: string;
  /** The dtype of the chosen file where the folder names files by dtype (model_q4.onnx, …), and why it was chosen. */
  dtype?: { dtype: string; reason: string };
  /** Every dtype file the folder holds, relative to it (empty for a single-file folder). */
  dtypeFiles: { dtype: string; file: string }[];
  tokenizerPath: string;
  tokenizerConfigPath?: string;
  /** special_tokens_map.json, where the folder has one. */
  specialTokensPath?: string;
  config: FolderConfig;
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new NeuronpatchError(`Cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const value = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text) as unknown;
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    checkJsonDepth(value, file);
    return value as Record<string, unknown>;
  } catch (e) {
    if (e instanceof NeuronpatchError) throw e;
    throw new NeuronpatchError(`${file} is not valid JSON: ${quote((e as Error).message, 200)}`, 'Restore the file from the model\'s source.');
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const first = (...vs: unknown[]): number | undefined => vs.map(num).find((v) => v !== undefined);
const ids = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : num(v) !== undefined ? [v as number] : []);

function fromHfConfig(c: Record<string, unknown>, folder: string): FolderConfig {
  return {
    modelType: typeof c.model_type === 'string' ? c.model_type : 'unknown',
    name: (typeof c._name_or_path === 'string' && displayName(c._name_or_path)) || path.basename(folder),
    layers: first(c.num_hidden_layers, c.n_layer, c.num_layers),
    hidden: first(c.hidden_size, c.n_embd, c.d_model),
    vocab: first(c.vocab_size),
    context: first(c.max_position_embeddings, c.n_positions, c.n_ctx, c.seq_length),
    eosTokenIds: ids(c.eos_token_id),
    bosTokenId: num(c.bos_token_id),
    tied: typeof c.tie_word_embeddings === 'boolean' ? c.tie_word_embeddings : undefined,
  };
}

function fromGenaiConfig(c: Record<string, unknown>, folder: string): FolderConfig {
  const model = (c.model ?? {}) as Record<string, unknown>;
  const dec = (model.decoder ?? {}) as Record<string, unknown>;
  const ins = (dec.inputs ?? {}) as Record<string, string>;
  const outs = (dec.outputs ?? {}) as Record<string, string>;
  const heads = num(dec.num_attention_heads);
  const headSize = num(dec.head_size);
  return {
    modelType: typeof model.type === 'string' ? model.type : 'unknown',
    name: path.basename(folder),
    layers: num(dec.num_hidden_layers),
    hidden: first(dec.hidden_size) ?? (heads && headSize ? heads * headSize : undefined),
    vocab: num(model.vocab_size),
    context: num(model.context_length),
    eosTokenIds: ids(model.eos_token_id),
    bosTokenId: num(model.bos_token_id),
    decoderFile: typeof dec.filename === 'string' ? dec.filename : undefined,
    cacheNames: {
      pastKey: ins.past_key_names, pastValue: ins.past_value_names, past: ins.past_names,
      presentKey: outs.present_key_names, presentValue: outs.present_value_names, present: outs.present_names,
    },
    inputNames: { ids: ins.input_ids, mask: ins.attention_mask, positions: ins.position_ids },
    logitsName: outs.logits,
  };
}

/**
 * The model folder's files and config. `dtype` chooses among dtype-named decoder files (see dtype.ts; default
 * `auto`). Throws NeuronpatchError when the folder, its config, its tokenizer or the decoder asked for is missing.
 */
export function openFolder(folder: string, dtype: Dtype = 'auto'): ModelFolder {
  const dir = path.resolve(folder);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new NeuronpatchError(`Model folder not found: ${dir}`, 'Pass a folder holding config.json (or genai_config.json), tokenizer.json and model.onnx.');
  }
  const at = (f: string) => path.join(dir, f);
  let config: FolderConfig;
  if (existsSync(at('config.json'))) config = fromHfConfig(readJson(at('config.json')), dir);
  else if (existsSync(at('genai_config.json'))) config = fromGenaiConfig(readJson(at('genai_config.json')), dir);
  else throw new NeuronpatchError(`${dir} has neither config.json nor genai_config.json.`, 'Export the model with Optimum or onnxruntime-genai, which write one.');
  if (existsSync(at('genai_config.json')) && existsSync(at('config.json'))) {
    const genai = fromGenaiConfig(readJson(at('genai_config.json')), dir);
    config = { ...genai, ...Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) } as FolderConfig;
  }
  if (existsSync(at('generation_config.json')) && !config.eosTokenIds.length) {
    config.eosTokenIds = ids(readJson(at('generation_config.json')).eos_token_id);
  }
  if (config.decoderFile !== undefined) {
    // genai_config.json is data: the decoder it names must be a file inside this folder.
    const rel = path.relative(dir, path.resolve(dir, config.decoderFile));
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel) || config.decoderFile.includes('\0'))
      throw new NeuronpatchError(
        `${at('genai_config.json')} names the decoder ${quote(config.decoderFile)}, which is outside the model folder ${dir}.`,
        'A model folder holds its own decoder: name a file inside it (model.decoder.filename).',
      );
  }
  const named = config.decoderFile && dtype === 'auto' && existsSync(at(config.decoderFile)) ? config.decoderFile : undefined;
  const picked = named ? undefined : pickDtypeFile(dir, dtype);
  const candidates = [config.decoderFile, 'model.onnx', 'onnx/model.onnx', 'decoder_model_merged.onnx', 'onnx/decoder_model_merged.onnx']
    .filter((f): f is string => !!f);
  const onnxFile = named ?? picked?.file ?? candidates.find((f) => existsSync(at(f)));
  if (!onnxFile) throw new NeuronpatchError(`No ONNX decoder in ${dir} (looked for ${candidates.join(', ')} and the dtype files model_fp16.onnx, model_q4.onnx, …).`);
  if (!existsSync(at('tokenizer.json'))) {
    throw new NeuronpatchError(`${dir} has no tokenizer.json.`, 'Save the tokenizer with a Hugging Face fast tokenizer (tokenizer.save_pretrained).');
  }
  const files = dtypeFiles(dir);
  return {
    folder: dir, onnxPath: at(onnxFile), tokenizerPath: at('tokenizer.json'), config,
    dtype: picked && files.length > 1 ? { dtype: picked.dtype, reason: picked.reason } : undefined,
    dtypeFiles: files,
    tokenizerConfigPath: existsSync(at('tokenizer_config.json')) ? at('tokenizer_config.json') : undefined,
    specialTokensPath: existsSync(at('special_tokens_map.json')) ? at('special_tokens_map.json') : undefined,
  };
}

/** sha256 over the ONNX file and its external data files, streamed. */
export async function hashFiles(files: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of files) {
    h.update(path.basename(f));
    await new Promise<void>((resolve, reject) => {
      createReadStream(f).on('data', (c) => h.update(c)).on('end', resolve).on('error', reject);
    });
  }
  return h.digest('hex');
}
