// Baking patches into a new model folder: for every edit, v_j ← v_j + Δv_j in that layer's FFN output weight,
// in the weight's own type (fp32, or fp16 rounded to nearest even) and storage. Every other byte is the
// source's: raw_data weights are patched in place inside the source file's bytes (no protobuf re-encode, which
// would not be byte-identical); external data is copied and only the edited tensors' ranges rewritten, and
// the .onnx file then stays byte-identical (its locations are relative). Only weights kept in
// float_data/int32_data make us re-encode the model. The folder is built under a temp name beside `outDir`
// and renamed at the end, so a failed export leaves nothing behind; the source folder is only read.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { syncDirectory } from '../atomic';
import { isoNow } from '../patches/id';
import { editsOf } from '../patches/patchset';
import { extent, type FfnSite, type ModelGraph } from '../model/graph';
import { findInitializer, loadModel, onnx } from '../onnx/proto';
import { externalRef, readTensor, tensorDims, writeTensorData } from '../onnx/tensor';
import { NeuronpatchError, type Patch } from '../types';
import { bakeAddedNeurons } from './added';
import { copyInto, filesToCopy, syncFile } from './files';
import { addSideBranches, type QuantizedExport, requantize } from './quantized';
import { patchesMarkdown } from './report';

export interface ExportOptions {
  /** The model folder the patches were made on. Only read. */
  sourceFolder: string;
  /** The decoder's .onnx file, absolute or relative to sourceFolder; it keeps its relative path in the copy. */
  onnxPath: string;
  /** Only the FFN sites are used: which initializer holds each layer's W_out, and how. */
  graph: Pick<ModelGraph, 'sites'>;
  /** Patches to bake in; disabled ones are skipped. */
  patches: Patch[];
  /** The new folder: must not exist, or be empty, and must not be inside sourceFolder. */
  outDir: string;
  /** How a patch of a quantized weight is baked (see quantized.ts); default 'side-branch'. */
  quantized?: QuantizedExport;
}

export interface ExportResult {
  outDir: string;
  /** Files of the new folder, relative to it, sorted. */
  files: string[];
  /** Where quantized weights were patched: how, and for 'requantize' the largest weight error it left. */
  quantized?: { method: QuantizedExport; layers: number[]; maxWeightError?: number; blocks?: number };
}

interface LayerEdit {
  site: FfnSite;
  neuron: number;
  /** float64: added to the weight before its single rounding to the stored type. */
  delta: number[];
}

const refuse = (message: string, hint?: string): never => {
  throw new NeuronpatchError(message, hint);
};

function inside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** realpath of the deepest existing ancestor, with the rest appended: where `p` would be once created. */
async function realpathLoose(p: string): Promise<string> {
  const rest: string[] = [];
  let cur = path.resolve(p);
  for (;;) {
    try {
      return path.join(await fs.realpath(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return path.resolve(p);
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

async function checkOutDir(outDir: string, sourceReal: string): Promise<'absent' | 'empty'> {
  const outReal = await realpathLoose(outDir);
  if (inside(outReal, sourceReal))
    refuse(`Refusing to export into ${outDir}: it is ${outReal === sourceReal ? 'the source model folder' : 'inside the source model folder'} ${sourceReal}.`, 'Export to a new folder beside it; the source model is never modified.');
  if (inside(sourceReal, outReal)) refuse(`Refusing to export into ${outDir}: the source model folder is inside it.`);
  const st = await fs.stat(outDir).catch(() => undefined);
  if (!st) return 'absent';
  if (!st.isDirectory()) refuse(`Cannot export to ${outDir}: a file of that name exists.`, 'Choose a new folder name.');
  if ((await fs.readdir(outDir)).length > 0) refuse(`Refusing to export into ${outDir}: the folder exists and is not empty.`, 'Choose a new folder, or empty this one first.');
  return 'empty';
}

/** Adds the neuron's delta to its value vector in the stored layout. */
function addDelta(values: Float32Array, e: LayerEdit, m: number, d: number): void {
  const j = e.neuron;
  if (e.site.weight.layout === 'rows') for (let i = 0; i < d; i++) values[j * d + i] += e.delta[i]; // [m, d]: row j
  else for (let i = 0; i < d; i++) values[i * m + j] += e.delta[i]; // [d, m]: column j
}

/** Groups the combined edits by weight initializer, checking each against the graph and the stored tensor. */
function planEdits(model: onnx.ModelProto, graph: Pick<ModelGraph, 'sites'>, patches: Patch[], onnxName: string): Map<string, LayerEdit[]> {
  const sites = new Map(graph.sites.map((s) => [s.layer, s]));
  if (sites.size === 0) refuse('The model graph has no FFN output projections to patch.');
  const first = graph.sites[0].weight;
  const [, width] = extent(first);
  const byWeight = new Map<string, LayerEdit[]>();
  for (const { layer, neuron, delta } of editsOf(patches)) {
    if (delta.length !== width)
      refuse(`The patches' deltas have ${delta.length} numbers, but the model's residual width is ${width}.`, 'These patches were made for another model.');
    const site = sites.get(layer) ?? refuse(`The patches edit layer ${layer}, but the model has FFN sites only for layers ${[...sites.keys()].join(', ')}.`, 'These patches were made for another model.');
    const name = site.weight.name;
    const t =
      findInitializer(model, name) ??
      refuse(`Layer ${layer}'s FFN output weight "${name}" is not an initializer of ${onnxName}.`, 'A quantized or computed weight cannot carry a baked patch; apply the patch at run time instead.');
    const dims = tensorDims(t);
    if (!site.weight.quant && (dims.length !== 2 || dims.join(',') !== site.weight.dims.join(',')))
      refuse(`Layer ${layer}'s weight "${name}" has dims [${dims}] in ${onnxName}, but the model graph describes [${site.weight.dims}].`);
    const [m, d] = extent(site.weight);  // the dims were just checked to be the graph's
    if (d !== width) refuse(`Layer ${layer}'s weight "${name}" has residual width ${d}, the patches ${width}.`);
    if (neuron >= m) refuse(`The patches edit neuron ${neuron} of layer ${layer}, which has ${m} neurons.`, 'These patches were made for another model.');
    byWeight.set(name, [...(byWeight.get(name) ?? []), { site, neuron, delta }]);
  }
  return byWeight;
}

/** A new model folder whose weights carry the enabled patches (see the module comment). */
export async function exportPatched(opts: ExportOptions): Promise<ExportResult> {
  const source = path.resolve(opts.sourceFolder);
  const sourceStat = await fs.stat(source).catch(() => undefined);
  if (!sourceStat?.isDirectory()) refuse(`The source model folder ${source} does not exist.`);
  const sourceReal = await fs.realpath(source);
  const onnxAbs = path.resolve(source, opts.onnxPath);
  const onnxRel = path.relative(source, onnxAbs);
  if (!inside(onnxAbs, source) || onnxRel === '') refuse(`The ONNX file ${opts.onnxPath} is not inside the model folder ${source}.`);
  const outDir = path.resolve(opts.outDir);
  const outState = await checkOutDir(outDir, sourceReal);

  const patches = opts.patches.filter((p) => p.enabled);
  if (patches.length === 0) refuse('No enabled patches to export.', 'Enable at least one patch, or export from a patch file that has some.');

  const loaded = await loadModel(onnxAbs);
  const { model, bytes } = loaded;
  const byWeight = planEdits(model, opts.graph, patches, onnxRel);
  const srcDir = path.dirname(onnxAbs);
  const initializers = model.graph?.initializer ?? [];
  const externals = new Set<string>();
  for (const t of initializers) {
    const ref = externalRef(t, srcDir);
    if (ref) externals.add(path.relative(srcDir, ref.file));
  }

  await fs.mkdir(path.dirname(outDir), { recursive: true });
  const temp = await fs.mkdtemp(path.join(path.dirname(outDir), `.${path.basename(outDir)}.tmp-`));
  try {
    const onnxDirRel = path.dirname(onnxRel);
    const tmpOnnxDir = path.join(temp, onnxDirRel);
    const externalRels = [...externals].map((e) => path.join(onnxDirRel, e));
    for (const rel of await filesToCopy(source, new Set(externalRels))) await copyInto(path.join(source, rel), path.join(temp, rel));
    for (const rel of externalRels) await copyInto(path.join(source, rel), path.join(temp, rel));

    let reencode = false;
    let weightType = '';
    const quantEdits = [...byWeight.values()].flat().filter((e) => e.site.weight.quant);
    let quantized: ExportResult['quantized'];
    if (quantEdits.length) {
      const method = opts.quantized ?? 'side-branch';
      const layers = [...new Set(quantEdits.map((e) => e.site.layer))].sort((a, b) => a - b);
      if (method === 'side-branch') {
        addSideBranches(model, quantEdits);
        quantized = { method, layers };
      } else {
        quantized = { method, layers, ...((r) => ({ maxWeightError: r.maxError, blocks: r.blocks }))(requantize(model, quantEdits, srcDir, tmpOnnxDir)) };
      }
      weightType = quantized.method === 'side-branch' ? 'quantized; the patches as a float side branch beside each patched projection'
        : `quantized; ${quantized.blocks} block(s) re-quantized, largest weight error ${quantized.maxWeightError!.toExponential(2)}`;
      reencode = true;
    }
    for (const [name, edits] of byWeight) {
      if (edits[0].site.weight.quant) continue;
      const t = findInitializer(model, name)!;
      weightType = t.dataType === onnx.TensorProto.DataType.FLOAT16 ? 'fp16' : 'fp32';
      const values = readTensor(t, srcDir);
      const [m, d] = extent(edits[0].site.weight);
      for (const e of edits) addDelta(values, e, m, d);
      const storage = writeTensorData(t, values, tmpOnnxDir);
      // raw_data decoded as a view into `bytes` is now patched inside them; anything else needs an encode.
      if (storage === 'fields' || (storage === 'raw' && t.rawData!.buffer !== bytes.buffer)) reencode = true;
    }
    // Keyed patches: their added neurons become a side branch of their layer (export/added.ts).
    if (bakeAddedNeurons(model, opts.graph.sites, patches, extent(opts.graph.sites[0].weight)[1]) > 0) reencode = true;
    const onnxOut = path.join(temp, onnxRel);
    await fs.mkdir(path.dirname(onnxOut), { recursive: true });
    await fs.writeFile(onnxOut, reencode ? onnx.ModelProto.encode(model).finish() : bytes);

    const earlier = await fs.readFile(path.join(source, 'PATCHES.md'), 'utf8').catch(() => undefined);
    const hadModelCard = (await fs.readdir(source)).some((f) => f.toLowerCase() === 'model_card.md');
    const report = patchesMarkdown({ sourceName: path.basename(source), onnxFile: onnxRel, weightType, patches, exportedAt: isoNow(), earlier, hadModelCard });
    await fs.writeFile(path.join(temp, 'PATCHES.md'), report);

    const files = await listFiles(temp);
    for (const f of files) await syncFile(path.join(temp, f));
    if (outState === 'empty') await fs.rmdir(outDir);
    // mkdtemp makes a private (0700) folder: the exported one gets the umask's normal mode, as mkdir would give.
    await fs.chmod(temp, 0o777 & ~process.umask());
    await fs.rename(temp, outDir);
    await syncDirectory(path.dirname(outDir));
    return { outDir, files, quantized };
  } catch (e) {
    await fs.rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

async function listFiles(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(root, r)));
    else out.push(r);
  }
  return out.sort();
}
