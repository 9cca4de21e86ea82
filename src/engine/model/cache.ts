// The instrumented-graph cache: `<root>/<model hash>/model.instrumented.onnx` + `instrumented.json`, so that the
// graph surgery runs once per model version. Nothing in it is trusted: an entry is used only when its metadata
// parses, has this format version, names the same source hash, describes the graph the model's own recognition
// finds (sites, unembedding, cache interface), and the graph file's sha256 is the one recorded. Anything else
// (truncated, empty or garbage metadata, a missing or corrupt graph, another model's entry copied under this key)
// is rebuilt, and so is an entry onnxruntime cannot load. The graph is written before the metadata that vouches
// for it, each atomically, so a process killed in between leaves an entry that fails verification and is rebuilt.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, rmSync, readFileSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { sweepStaleTemps, writeFileAtomic } from '../atomic';
import { MAX_JSON_DEPTH, jsonDepth } from '../jsonlimits';
import { NeuronpatchError } from '../types';
import { quote } from '../untrusted';
import type { ModelGraph } from './graph';
import { instrument } from './instrument';

/** Bumped whenever the instrumented graph's interface changes, so stale cache entries are rebuilt. */
export const INSTRUMENT_VERSION = 10;

const GRAPH_FILE = 'model.instrumented.onnx';
const META_FILE = 'instrumented.json';

interface Meta {
  version: number;
  /** sha256 of the source model (its ONNX file and external data), the key of the entry. */
  hash: string;
  source: string;
  /** sha256 and size of GRAPH_FILE as written. */
  graphSha256: string;
  graphBytes: number;
  graph: ModelGraph;
}

export interface CacheEntry {
  /** The entry's folder (also holds other per-model caches: steer Gram matrix, reference statistics). */
  dir: string;
  /** The instrumented graph file. */
  file: string;
  graph: ModelGraph;
  /** Why the entry was (re)built this time, or undefined when it was reused. */
  built?: string;
}

/** Places no cache may live: kernel and device file systems. */
const FORBIDDEN = ['/proc', '/sys', '/dev'];

/**
 * The cache root, checked: an absolute folder outside /proc, /sys and /dev that is a folder or can be made one.
 * Throws a NeuronpatchError naming NEURONPATCH_CACHE when it came from there.
 */
export function checkCacheRoot(root: string, fromEnv: boolean): string {
  const dir = path.resolve(root);
  const named = fromEnv ? `NEURONPATCH_CACHE (${quote(root, 200)})` : `The cache folder ${quote(root, 200)}`;
  const hint = `Point NEURONPATCH_CACHE at a writable folder (default ${path.join(os.homedir(), '.cache', 'neuronpatch')}), or unset it.`;
  const kernel = FORBIDDEN.find((f) => dir === f || dir.startsWith(`${f}/`));
  if (kernel) throw new NeuronpatchError(`${named} is under ${kernel}, a kernel file system, not a place for a cache.`, hint);
  // The deepest existing ancestor must be a folder (a file there makes every mkdir fail with ENOTDIR/EEXIST).
  for (let d = dir; ; d = path.dirname(d)) {
    if (existsSync(d)) {
      if (!statSync(d).isDirectory()) throw new NeuronpatchError(`${named} ${d === dir ? 'is' : `is under ${d}, which is`} a file, not a folder.`, hint);
      break;
    }
    if (path.dirname(d) === d) break;
  }
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new NeuronpatchError(`${named} cannot be created: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}.`, hint);
  }
  return dir;
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The parts of a graph description that recognition determines: a cached entry must agree on all of them. */
function signature(g: ModelGraph): string {
  return JSON.stringify({
    sites: g.sites.map((s) => [s.layer, s.node, s.activation, s.output, s.weight.name, s.weight.dims, s.weight.layout, s.weight.quant ?? null]),
    unembedding: [g.unembedding.name, g.unembedding.dims, g.unembedding.layout],
    cache: g.cache, inputs: g.inputs, logits: g.logits, floatType: g.floatType, weightFormat: g.weightFormat ?? null, indexType: g.indexType, heads: g.heads, headDim: g.headDim,
  });
}

/** Why the entry in `dir` cannot be used for the model `hash` recognised as `recognised`, or undefined with its graph. */
function verify(dir: string, hash: string, recognised: ModelGraph): { why: string } | { graph: ModelGraph } {
  const metaFile = path.join(dir, META_FILE);
  const file = path.join(dir, GRAPH_FILE);
  if (!existsSync(metaFile)) return { why: 'no entry yet' };
  let meta: Meta;
  try {
    const value = JSON.parse(readFileSync(metaFile, 'utf8')) as unknown;
    if (jsonDepth(value) > MAX_JSON_DEPTH) return { why: `${META_FILE} nests too deep` };
    meta = value as Meta;
  } catch (e) {
    return { why: `${META_FILE} does not parse (${(e as Error).message.slice(0, 80)})` };
  }
  if (!meta || typeof meta !== 'object' || Array.isArray(meta)) return { why: `${META_FILE} is not an object` };
  if (meta.version !== INSTRUMENT_VERSION) return { why: `format version ${quote(meta.version)}, this version writes ${INSTRUMENT_VERSION}` };
  if (meta.hash !== hash) return { why: `the entry is for another model (hash ${quote(String(meta.hash), 16)})` };
  const g = meta.graph;
  if (!g || typeof g !== 'object' || !Array.isArray(g.sites) || !g.sites.length || !g.unembedding || !g.finalNorm) return { why: `${META_FILE} holds no graph description` };
  try {
    if (signature(g) !== signature(recognised)) return { why: 'the entry describes another graph than the model\'s' };
  } catch {
    return { why: `${META_FILE} holds a malformed graph description` };
  }
  if (!existsSync(file)) return { why: `${GRAPH_FILE} is missing` };
  if (statSync(file).size !== meta.graphBytes) return { why: `${GRAPH_FILE} has ${statSync(file).size} bytes, ${quote(meta.graphBytes)} were written` };
  if (sha256(file) !== meta.graphSha256) return { why: `${GRAPH_FILE} does not match its recorded sha256` };
  return { graph: g };
}

export interface EntrySource {
  /** sha256 of the source model: the key. */
  hash: string;
  /** The source ONNX file and its parsed graph. */
  onnxPath: string;
  proto: onnx.IModelProto;
  recognised: ModelGraph;
  /** External data files, relative to the source's folder. */
  external: string[];
  /** Link the external data into the entry (symlinked weights) instead of reading them in place. */
  linkExternal: boolean;
  log: (line: string) => void;
}

/**
 * Builds the entry: instruments the graph, links (or copies) symlinked external weights beside it, writes the
 * graph and then the metadata, atomically. `why` is logged.
 */
export async function buildEntry(root: string, src: EntrySource, why: string): Promise<CacheEntry> {
  const dir = path.join(root, src.hash.slice(0, 24));
  const file = path.join(dir, GRAPH_FILE);
  src.log(`instrumenting ${src.onnxPath} → ${file} (${why})`);
  try {
    mkdirSync(dir, { recursive: true });
    const out = instrument(src.proto, src.recognised);
    const baseDir = path.dirname(src.onnxPath);
    // Where the weights are plain files in the model's folder, onnxruntime reads them there (the session is given
    // that folder): the entry holds the graph only, and links or copies older versions made are removed. Where they
    // are symlinks out of the folder (a hub cache's blobs/…), onnxruntime refuses them (it resolves symlinks and
    // keeps to the folder), so the entry gets a hard link to the real file, or a copy across file systems.
    for (const f of src.external) {
      const target = path.join(dir, f);
      if (lstatSync(target, { throwIfNoEntry: false })) unlinkSync(target);
      if (!src.linkExternal) continue;
      mkdirSync(path.dirname(target), { recursive: true });
      const real = realpathSync(path.join(baseDir, f));
      try {
        linkSync(real, target);
      } catch {
        copyFileSync(real, target);
      }
    }
    for (const f of [GRAPH_FILE, META_FILE]) await sweepStaleTemps(path.join(dir, f));
    // The per-model caches derived from the old entry (steer factor, reference statistics) go with it.
    for (const f of readdirSync(dir)) if (/^(steer-|reference-)/.test(f)) rmSync(path.join(dir, f), { force: true });
    const bytes = onnx.ModelProto.encode(out.model as onnx.ModelProto).finish();
    await writeFileAtomic(file, bytes);
    const meta: Meta = {
      version: INSTRUMENT_VERSION, hash: src.hash, source: src.onnxPath,
      graphSha256: createHash('sha256').update(bytes).digest('hex'), graphBytes: bytes.length, graph: out.graph,
    };
    await writeFileAtomic(path.join(dir, META_FILE), JSON.stringify(meta, null, 1));
    return { dir, file, graph: out.graph, built: why };
  } catch (e) {
    if (e instanceof NeuronpatchError) throw e;
    throw new NeuronpatchError(
      `Cannot write the instrumented graph into ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}.`,
      'Point NEURONPATCH_CACHE at a writable folder with room for a copy of the model graph.',
    );
  }
}

/** The verified entry for the model, or a new one built when there is none or it fails verification. */
export async function openEntry(root: string, src: EntrySource): Promise<CacheEntry> {
  const dir = path.join(root, src.hash.slice(0, 24));
  const v = verify(dir, src.hash, src.recognised);
  if ('graph' in v) return { dir, file: path.join(dir, GRAPH_FILE), graph: v.graph };
  return buildEntry(root, src, v.why);
}
