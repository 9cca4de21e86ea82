// Model folder → recognised, instrumented, running model. The instrumented graph is cached on disk, keyed by the
// source model's hash, so the surgery runs once per model version.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { writeFileAtomic } from '../atomic';
import { loadModelProto } from '../onnx/proto';
import { externalRef } from '../onnx/tensor';
import { CodeTokenizer } from '../tokenizer';
import { type ModelInfo, NeuronpatchError } from '../types';
import { quote } from '../untrusted';
import { extent, type ModelGraph } from './graph';
import { checkDtype } from './dtype';
import { hashFiles, openFolder } from './folder';
import { buildEntry, checkCacheRoot, type EntrySource, openEntry } from './cache';
import { liftMerged } from './merged';
import { recognise } from './recognise';
import { specialTokens } from './special';
import { type ExecutionProvider, InstrumentedSession, type SessionModel } from './session';
import { checkTiedConfig } from './tying';
import { Weights } from './weights';


export interface LoadOptions {
  /** Which dtype file of a multi-dtype folder (transformers.js names, or 'auto'; default 'auto'). */
  dtype?: string;
  cacheDir?: string;
  threads?: number;
  /** onnxruntime execution provider ('cpu' default); one this build lacks falls back to CPU with `log`. */
  executionProvider?: ExecutionProvider;
  /** onnxruntime's intra-op threads spin while idle (default true); see SessionOptions.spinning. */
  spinning?: boolean;
  log?: (line: string) => void;
}

export interface LoadedModel {
  info: ModelInfo;
  graph: ModelGraph;
  tokenizer: CodeTokenizer;
  session: InstrumentedSession;
  weights: Weights;
  /** Folder of the instrumented graph and other per-model caches (steer Gram matrix, reference statistics). */
  cacheDir: string;
  onnxPath: string;
  release(): Promise<void>;
}

export function defaultCacheDir(): string {
  return process.env.NEURONPATCH_CACHE || path.join(os.homedir(), '.cache', 'neuronpatch');
}

/**
 * hashFiles, remembered in the cache under the files' identity (real path, size, modification time in ms, inode):
 * a warm open of a multi-gigabyte model skips reading every byte again. A file rewritten in place keeps neither
 * its modification time nor, usually, its size, so it is hashed afresh.
 */
async function rememberedHash(files: string[], cacheRoot: string): Promise<{ hash: string; remember(): Promise<void> }> {
  const identity = files.map((f) => {
    const st = statSync(f);
    return [realpathSync(f), st.size, st.mtimeMs, st.ino];
  });
  const key = createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32);
  const file = path.join(cacheRoot, 'hashes', key);
  const known = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
  if (/^[0-9a-f]{64}$/.test(known)) return { hash: known, remember: async () => undefined };
  const hash = await hashFiles(files);
  // Written once the cache root is checked and the model loaded (nothing is written for a model that fails).
  return {
    hash,
    remember: async () => {
      mkdirSync(path.dirname(file), { recursive: true });
      await writeFileAtomic(file, hash);
    },
  };
}

function externalFiles(model: onnx.IModelProto): string[] {
  const files = new Set<string>();
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const loc = t.externalData?.find((e) => e.key === 'location')?.value;
      if (loc) files.add(loc);
    }
  }
  return [...files];
}

/** Every external initializer's byte range must lie inside its file: a truncated copy is named, not crashed on. */
function checkExternalSizes(model: onnx.IModelProto, baseDir: string): void {
  const sizes = new Map<string, number>();
  for (const t of model.graph?.initializer ?? []) {
    const ref = externalRef(t, baseDir);
    if (!ref || !ref.length) continue;
    const size = sizes.get(ref.file) ?? statSync(ref.file).size;
    sizes.set(ref.file, size);
    if (ref.offset + ref.length > size) {
      throw new NeuronpatchError(
        `${ref.file} is truncated: ${size} bytes, but initializer ${t.name} needs bytes ${ref.offset}–${ref.offset + ref.length}.`,
        'Copy or download the external weights file again.',
      );
    }
  }
}

export async function loadModel(folder: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const log = opts.log ?? (() => undefined);
  const mf = openFolder(folder, checkDtype(opts.dtype));
  if (mf.dtype) log(mf.dtype.reason);
  // A merged decoder (If on use_cache_branch) is read through its with-past branch.
  const { model: proto, lifted } = liftMerged(await loadModelProto(mf.onnxPath));
  if (lifted) log(`${path.basename(mf.onnxPath)} is a merged decoder: running its with-past branch (${lifted}) with an empty cache on the first step`);
  const baseDir = path.dirname(mf.onnxPath);
  const external = externalFiles(proto);
  for (const f of external) {
    if (!existsSync(path.join(baseDir, f))) {
      throw new NeuronpatchError(`External weights file ${path.join(baseDir, f)} is missing.`, `${path.basename(mf.onnxPath)} stores its weights there.`);
    }
  }
  checkExternalSizes(proto, baseDir);
  const { hash, remember } = await rememberedHash([mf.onnxPath, ...external.map((f) => path.join(baseDir, f))], opts.cacheDir ?? defaultCacheDir());
  const c = mf.config;
  const recognised = recognise(proto, {
    hidden: c.hidden, layers: c.layers, cacheNames: c.cacheNames, inputNames: c.inputNames, logitsName: c.logitsName,
  });

  const u = recognised.unembedding;
  const [graphVocab] = extent(u);
  if (c.vocab !== undefined && c.vocab < graphVocab) {
    throw new NeuronpatchError(`The config's vocab_size (${c.vocab}) is smaller than the graph's lm_head (${graphVocab} tokens).`, 'The config does not belong to this model.');
  }
  if (c.tied === false && recognised.tied)
    throw new NeuronpatchError(
      `${path.join(mf.folder, 'config.json')} says tie_word_embeddings is false, but the graph's lm_head reads the token embedding itself (${quote(u.name)}).`,
      'The config does not belong to this model: restore it from the model\'s source.',
    );
  // Rows are read only for a config that says tied while the graph keeps a separate lm_head.
  if (c.tied === true && !recognised.tied && recognised.embedding) checkTiedConfig(new Weights(proto, recognised, baseDir), recognised, mf.folder);
  // The tokenizer is checked before anything is written to the cache.
  const tokenizer = CodeTokenizer.fromFiles(mf.tokenizerPath, mf.tokenizerConfigPath, graphVocab, c.bosTokenId, c.eosTokenIds, mf.specialTokensPath);
  const special = specialTokens(c, tokenizer);
  if (special.notice) log(special.notice);

  const root = checkCacheRoot(opts.cacheDir ?? defaultCacheDir(), !opts.cacheDir && !!process.env.NEURONPATCH_CACHE);
  // Weights that are plain files of the model's folder are read there by onnxruntime (nothing copied or linked);
  // symlinked ones (a hub cache) are hard-linked into the cache entry.
  const realBase = realpathSync(baseDir);
  const inPlace = external.every((f) => realpathSync(path.join(baseDir, f)) === path.join(realBase, f));
  const source: EntrySource = { hash, onnxPath: mf.onnxPath, proto, recognised, external, log, linkExternal: !inPlace };
  // With weights in place the graph is read into memory (kilobytes) and onnxruntime pointed at the model's folder.
  const sessionModel = (file: string): SessionModel => (external.length && inPlace ? { bytes: readFileSync(file), externalDataFolder: realBase } : file);
  const sessionOpts = { threads: opts.threads, executionProvider: opts.executionProvider, spinning: opts.spinning, log };
  let entry = await openEntry(root, source);
  const graph = entry.graph;
  const site = graph.sites[0];
  const [neurons] = extent(site.weight);
  const [vocab, width] = extent(graph.unembedding);
  const info: ModelInfo = {
    // A folder of several dtype files: the name says which file (a patch file names the model it was made on).
    name: mf.dtypeFiles.length > 1 ? `${c.name} [${path.relative(mf.folder, mf.onnxPath)}]` : c.name, folder: mf.folder, architecture: c.modelType, gated: site.gated, layers: graph.sites.length, neurons, width, vocab,
    context: c.context ?? 2048, finalNorm: graph.finalNorm.kind, tiedUnembedding: c.tied ?? graph.tied,
    weightType: site.activationType === onnx.TensorProto.DataType.FLOAT16 ? 'float16' : graph.floatType,
    weightFormat: graph.weightFormat, onnxFile: path.relative(mf.folder, mf.onnxPath),
    dtype: mf.dtype ? { ...mf.dtype, files: mf.dtypeFiles } : undefined,
    hash, eosTokenIds: special.eosTokenIds,
    ...(special.notice ? { notice: special.notice } : {}),
  };
  const shape = { layers: info.layers, neurons, width, vocab };
  let session: InstrumentedSession;
  try {
    session = await InstrumentedSession.create(sessionModel(entry.file), graph, shape, sessionOpts);
  } catch (e) {
    if (entry.built) throw new NeuronpatchError(`onnxruntime could not load ${mf.onnxPath}: ${(e as Error).message}`);
    // A verified entry that does not load (a damaged disk, another runtime's leftovers): rebuilt once.
    entry = await buildEntry(root, source, `the cached graph did not load: ${(e as Error).message.split('\n')[0].slice(0, 200)}`);
    try {
      session = await InstrumentedSession.create(sessionModel(entry.file), entry.graph, shape, sessionOpts);
    } catch (e2) {
      throw new NeuronpatchError(`onnxruntime could not load ${mf.onnxPath}: ${(e2 as Error).message}`);
    }
  }
  const cacheDir = entry.dir;
  await remember().catch(() => undefined);  // a memo only: a cache that refuses it costs the next open a hash
  const weights = new Weights(proto, graph, baseDir);
  log(`loaded ${info.name}: ${info.architecture}, ${info.layers} layers × ${neurons} neurons, width ${width}, vocab ${vocab}`);
  return { info, graph, tokenizer, session, weights, cacheDir, onnxPath: mf.onnxPath, release: () => session.release() };
}
