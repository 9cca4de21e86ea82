// Model folder → recognised, instrumented, running model. The instrumented graph is cached on disk, keyed by the
// source model's hash, so the surgery runs once per model version.
import { copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { writeFileAtomic } from '../atomic';
import { loadModelProto } from '../onnx/proto';
import { externalRef } from '../onnx/tensor';
import { CodeTokenizer } from '../tokenizer';
import { type ModelInfo, NeuronpatchError } from '../types';
import { extent, type ModelGraph } from './graph';
import { checkDtype } from './dtype';
import { hashFiles, openFolder } from './folder';
import { instrument } from './instrument';
import { recognise } from './recognise';
import { InstrumentedSession } from './session';
import { Weights } from './weights';

/** Bumped whenever the instrumented graph's interface changes, so stale cache entries are rebuilt. */
const INSTRUMENT_VERSION = 9;

export interface LoadOptions {
  /** Which dtype file of a multi-dtype folder (transformers.js names, or 'auto'; default 'auto'). */
  dtype?: string;
  cacheDir?: string;
  threads?: number;
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
  const proto = await loadModelProto(mf.onnxPath);
  const baseDir = path.dirname(mf.onnxPath);
  const external = externalFiles(proto);
  for (const f of external) {
    if (!existsSync(path.join(baseDir, f))) {
      throw new NeuronpatchError(`External weights file ${path.join(baseDir, f)} is missing.`, `${path.basename(mf.onnxPath)} stores its weights there.`);
    }
  }
  checkExternalSizes(proto, baseDir);
  const hash = await hashFiles([mf.onnxPath, ...external.map((f) => path.join(baseDir, f))]);
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
      `${path.join(mf.folder, 'config.json')} says tie_word_embeddings is false, but the graph's lm_head reads the token embedding itself (${u.name}).`,
      'The config does not belong to this model: restore it from the model\'s source.',
    );
  // The tokenizer is checked before anything is written to the cache.
  const tokenizer = CodeTokenizer.fromFiles(mf.tokenizerPath, mf.tokenizerConfigPath, graphVocab, c.bosTokenId, c.eosTokenIds);

  const cacheDir = path.join(opts.cacheDir ?? defaultCacheDir(), hash.slice(0, 24));
  const file = path.join(cacheDir, 'model.instrumented.onnx');
  const metaFile = path.join(cacheDir, 'instrumented.json');
  let graph: ModelGraph;
  const meta = existsSync(metaFile) ? (JSON.parse(readFileSync(metaFile, 'utf8')) as { version: number; graph: ModelGraph }) : undefined;
  if (meta?.version === INSTRUMENT_VERSION && existsSync(file)) {
    graph = meta.graph;
  } else {
    log(`instrumenting ${mf.onnxPath} → ${file}`);
    mkdirSync(cacheDir, { recursive: true });
    const out = instrument(proto, recognised);
    // onnxruntime only reads external data from inside the model's own folder (symlinks resolved), so the
    // cached graph gets a hard link to the weights, or a copy across file systems.
    for (const f of external) {
      const target = path.join(cacheDir, f);
      if (existsSync(target)) unlinkSync(target);
      mkdirSync(path.dirname(target), { recursive: true });
      try {
        linkSync(path.join(baseDir, f), target);
      } catch {
        copyFileSync(path.join(baseDir, f), target);
      }
    }
    await writeFileAtomic(file, onnx.ModelProto.encode(out.model as onnx.ModelProto).finish());
    await writeFileAtomic(metaFile, JSON.stringify({ version: INSTRUMENT_VERSION, source: mf.onnxPath, hash, graph: out.graph }, null, 1));
    graph = out.graph;
  }

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
    hash, eosTokenIds: c.eosTokenIds,
  };
  let session: InstrumentedSession;
  try {
    session = await InstrumentedSession.create(file, graph, { layers: info.layers, neurons, width, vocab }, opts.threads);
  } catch (e) {
    throw new NeuronpatchError(`onnxruntime could not load ${mf.onnxPath}: ${(e as Error).message}`);
  }
  const weights = new Weights(proto, graph, baseDir);
  log(`loaded ${info.name}: ${info.architecture}, ${info.layers} layers × ${neurons} neurons, width ${width}, vocab ${vocab}`);
  return { info, graph, tokenizer, session, weights, cacheDir, onnxPath: mf.onnxPath, release: () => session.release() };
}
