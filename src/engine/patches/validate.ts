// Validation of the `neuronpatch/1` patch file: turns an unknown JSON value into a PatchFile, or lists what is
// wrong with it, each problem naming its path (`patches[2].edits[0].delta: expected 192 numbers, got 191`).
// Keys this version does not know are kept as they are (a hand-written "note" survives a save).
import {
  type AddedNeuronEdit,
  NeuronpatchError,
  PATCH_FORMAT,
  PATCH_FORMAT_2,
  READABLE_PATCH_FORMATS,
  type ModelInfo,
  type NeuronEdit,
  type Patch,
  type PatchFile,
  type PatchMetrics,
} from '../types';
import { quote } from '../untrusted';

/** The model dimensions edits are checked against (and the weights' element type, when known, for the deltas' range). */
export type ModelDims = Pick<ModelInfo, 'layers' | 'neurons' | 'width'> & Partial<Pick<ModelInfo, 'weightType'>>;

/**
 * The largest magnitude a value added to a weight of this element type can have: a delta beyond it is finite as
 * a double but becomes Infinity in the weight (1e308 in float32, 70000 in float16). Without a model, float32's.
 */
export function largestFinite(weightType: ModelInfo['weightType'] | undefined): { max: number; type: string } {
  return weightType === 'float16' ? { max: 65504, type: 'float16' } : { max: 3.4028234663852886e38, type: 'float32' };
}

const MAX_PROBLEMS = 20;

/** What a patch file looks like, for a message about a file that is not one. */
export const PATCH_FILE_SHAPE =
  `A patch file is JSON like {"format": "${PATCH_FORMAT_2}", "model": {"name": "…", "hash": "…"}, "patches": [{"id": "…", "case": {…}, "edits": […], …}]}, as a repair writes it`;

/** The top-level keys of `o` for a message: quoted and cut, at most 6. */
function keysOf(o: Obj): string {
  const keys = Object.keys(o);
  if (!keys.length) return 'it is an empty object {}';
  return `its top level has ${keys.slice(0, 6).map((k) => quote(k, 40)).join(', ')}${keys.length > 6 ? ` and ${keys.length - 6} more key(s)` : ''}`;
}
const methods = ['minimal', 'joint', 'keyed'];

type Obj = Record<string, unknown>;

function describe(v: unknown): string {
  if (v === undefined) return 'nothing (the key is missing)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return `the string ${quote(v, 40)}`;
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return `${typeof v} ${String(v)}`;
}

class Checker {
  readonly problems: string[] = [];
  private width: { n: number; at: string } | undefined;

  /** The file's format (set once the top level is read); a lone patch is read as the newest. */
  format: string = PATCH_FORMAT_2;

  constructor(private readonly model: ModelDims | undefined) {
    if (model) this.width = { n: model.width, at: 'the model' };
  }

  problem(path: string, what: string): void {
    this.problems.push(`${path}: ${what}`);
  }

  object(v: unknown, path: string): Obj | undefined {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Obj;
    this.problem(path, `expected an object, got ${describe(v)}`);
    return undefined;
  }

  array(v: unknown, path: string): unknown[] | undefined {
    if (Array.isArray(v)) return v;
    this.problem(path, `expected an array, got ${describe(v)}`);
    return undefined;
  }

  string(o: Obj, key: string, path: string, nonEmpty = false): string {
    const v = o[key];
    if (typeof v !== 'string') this.problem(`${path}.${key}`, `expected a string, got ${describe(v)}`);
    else if (nonEmpty && v.length === 0) this.problem(`${path}.${key}`, 'must not be empty');
    else return v;
    return '';
  }

  boolean(o: Obj, key: string, path: string): boolean {
    const v = o[key];
    if (typeof v === 'boolean') return v;
    this.problem(`${path}.${key}`, `expected true or false, got ${describe(v)}`);
    return false;
  }

  /** A finite number in [min, max]; integers only when `int`. */
  number(o: Obj, key: string, path: string, range: { min?: number; max?: number; int?: boolean }, nullable = false): number | null {
    const v = o[key];
    if (nullable && v === null) return null;
    const kind = range.int ? 'an integer' : 'a number';
    if (typeof v !== 'number' || !Number.isFinite(v) || (range.int && !Number.isInteger(v))) {
      this.problem(`${path}.${key}`, `expected ${kind}${nullable ? ' or null' : ''}, got ${describe(v)}`);
      return nullable ? null : 0;
    }
    if ((range.min !== undefined && v < range.min) || (range.max !== undefined && v > range.max)) {
      const bounds =
        range.max === undefined ? `≥ ${range.min}` : range.min === undefined ? `≤ ${range.max}` : `between ${range.min} and ${range.max}`;
      this.problem(`${path}.${key}`, `expected ${kind} ${bounds}, got ${v}`);
    }
    return v;
  }

  delta(v: unknown, path: string): number[] {
    const a = this.array(v, path);
    if (!a) return [];
    const bad = a.findIndex((x) => typeof x !== 'number' || !Number.isFinite(x));
    if (bad >= 0) {
      this.problem(`${path}[${bad}]`, `expected a finite number, got ${describe(a[bad])}`);
      return [];
    }
    const range = largestFinite(this.model?.weightType);
    const over = a.findIndex((x) => Math.abs(x as number) > range.max);
    if (over >= 0) {
      this.problem(`${path}[${over}]`, `${a[over]} does not fit the model's ${range.type} weights (largest ${range.max.toPrecision(5)})`);
      return [];
    }
    if (a.length === 0) {
      this.problem(path, 'must not be empty');
      return [];
    }
    if (!this.width) this.width = { n: a.length, at: path };
    else if (a.length !== this.width.n) {
      const why = this.width.at === 'the model' ? "the model's residual width" : `the length of ${this.width.at}`;
      this.problem(path, `expected ${this.width.n} numbers, got ${a.length} (${why})`);
    }
    return (a as number[]).slice();
  }

  edit(v: unknown, path: string): NeuronEdit | undefined {
    const o = this.object(v, path);
    if (!o) return undefined;
    const m = this.model;
    const layer = this.number(o, 'layer', path, { int: true, min: 0, max: m ? m.layers - 1 : undefined }) as number;
    const neuron = this.number(o, 'neuron', path, { int: true, min: 0, max: m ? m.neurons - 1 : undefined }) as number;
    const delta = this.delta(o.delta, `${path}.delta`);
    return { ...o, layer, neuron, delta };
  }

  /** An added neuron (neuronpatch/2): a layer, a key and a value of the residual width, a finite threshold. */
  added(v: unknown, path: string): AddedNeuronEdit | undefined {
    const o = this.object(v, path);
    if (!o) return undefined;
    const m = this.model;
    const layer = this.number(o, 'layer', path, { int: true, min: 0, max: m ? m.layers - 1 : undefined }) as number;
    const key = this.delta(o.key, `${path}.key`);
    const { max } = largestFinite(m?.weightType);
    const threshold = this.number(o, 'threshold', path, { min: -max, max }) as number;
    const value = this.delta(o.value, `${path}.value`);
    return { ...o, layer, key, threshold, value };
  }

  metrics(v: unknown, path: string): PatchMetrics | undefined {
    const o = this.object(v, path);
    if (!o) return undefined;
    return {
      ...o,
      success: this.boolean(o, 'success', path),
      failingTokens: this.number(o, 'failingTokens', path, { int: true, min: 0 }) as number,
      specificity: this.number(o, 'specificity', path, { min: 0, max: 1 }, true),
      meanKl: this.number(o, 'meanKl', path, { min: 0 }, true),
      generalization: this.number(o, 'generalization', path, { min: 0, max: 1 }, true),
      repairMs: this.number(o, 'repairMs', path, { min: 0 }) as number,
      ...(o.margin === undefined ? {} : { margin: this.number(o, 'margin', path, { min: 0 }) as number }),
    };
  }

  patch(v: unknown, path: string): Patch | undefined {
    const o = this.object(v, path);
    if (!o) return undefined;
    const id = this.string(o, 'id', path, true);
    const createdAt = this.string(o, 'createdAt', path, true);
    if (createdAt && Number.isNaN(Date.parse(createdAt)))
      this.problem(`${path}.createdAt`, `expected an ISO 8601 time, got ${describe(createdAt)}`);
    const enabled = this.boolean(o, 'enabled', path);
    const method = o.method as Patch['method'];
    if (!methods.includes(method as string))
      this.problem(`${path}.method`, `expected "minimal", "joint" or "keyed", got ${describe(o.method)}`);
    const c = this.object(o.case, `${path}.case`);
    const kase = c && {
      ...c,
      prompt: this.string(c, 'prompt', `${path}.case`),
      desired: this.string(c, 'desired', `${path}.case`),
      before: this.string(c, 'before', `${path}.case`),
      after: this.string(c, 'after', `${path}.case`),
    };
    const edits: NeuronEdit[] = [];
    const seen = new Map<string, number>();
    (this.array(o.edits, `${path}.edits`) ?? []).forEach((e, i) => {
      const edit = this.edit(e, `${path}.edits[${i}]`);
      if (!edit) return;
      const key = `${edit.layer}:${edit.neuron}`;
      const first = seen.get(key);
      if (first !== undefined)
        this.problem(`${path}.edits[${i}]`, `edits layer ${edit.layer} neuron ${edit.neuron} again (already in ${path}.edits[${first}]); one patch edits a neuron once`);
      else seen.set(key, i);
      edits.push(edit);
    });
    let added: AddedNeuronEdit[] | undefined;
    if (o.added !== undefined) {
      if (this.format !== PATCH_FORMAT_2) this.problem(`${path}.added`, `added neurons need format "${PATCH_FORMAT_2}", the file says "${this.format}"`);
      added = [];
      (this.array(o.added, `${path}.added`) ?? []).forEach((a, i) => {
        const n = this.added(a, `${path}.added[${i}]`);
        if (n) added!.push(n);
      });
    }
    const metrics = this.metrics(o.metrics, `${path}.metrics`);
    if (!kase || !metrics) return undefined;
    return { ...o, id, createdAt, enabled, method, case: kase, edits, ...(added ? { added } : {}), metrics };
  }
}

function assemble(value: unknown, c: Checker): PatchFile | undefined {
  const o = c.object(value, '(top level)');
  if (!o) return undefined;
  if (typeof o.format !== 'string' || !READABLE_PATCH_FORMATS.includes(o.format)) {
    const f = o.format;
    const why =
      typeof f === 'string' && f.startsWith('neuronpatch/')
        ? `this version reads "${READABLE_PATCH_FORMATS.join('" and "')}", the file is "${f}" (written by another version of neuronpatch)`
        : f === undefined
          ? `missing (${keysOf(o)}; a patch file has "format", "model" and "patches")`
          : `expected "${PATCH_FORMAT}" or "${PATCH_FORMAT_2}", got ${describe(f)}: not a neuronpatch patch file`;
    c.problem('format', why);
    return undefined;
  }
  c.format = o.format;
  const m = c.object(o.model, 'model');
  const model = m && { ...m, name: c.string(m, 'name', 'model'), hash: c.string(m, 'hash', 'model', true) };
  const patches: Patch[] = [];
  const ids = new Map<string, number>();
  (c.array(o.patches, 'patches') ?? []).forEach((p, i) => {
    const patch = c.patch(p, `patches[${i}]`);
    if (!patch) return;
    const first = ids.get(patch.id);
    if (first !== undefined && patch.id) c.problem(`patches[${i}].id`, `${quote(patch.id)} is also the id of patches[${first}]; ids must be unique`);
    else ids.set(patch.id, i);
    patches.push(patch);
  });
  if (!model) return undefined;
  return { ...o, format: o.format as PatchFile['format'], model, patches };
}

/** What is wrong with `value` as a patch file (empty when nothing), and the file when nothing is. */
export function checkPatchFile(value: unknown, model?: ModelDims): { file: PatchFile | undefined; problems: string[] } {
  const c = new Checker(model);
  const file = assemble(value, c);
  return { file: c.problems.length === 0 ? file : undefined, problems: c.problems };
}

/** A short list of problems for a message: the first MAX_PROBLEMS, then how many more. */
export function formatProblems(problems: string[]): string {
  const shown = problems.slice(0, MAX_PROBLEMS).map((p) => `  - ${p}`);
  if (problems.length > MAX_PROBLEMS) shown.push(`  … and ${problems.length - MAX_PROBLEMS} more`);
  return shown.join('\n');
}

/**
 * Validates a parsed patch file; edits are checked against the model's layers, neurons and width when given.
 * `source` names the file in the error.
 */
export function validatePatchFile(value: unknown, model?: ModelDims, source = 'patch file'): PatchFile {
  const { file, problems } = checkPatchFile(value, model);
  if (file) return file;
  throw new NeuronpatchError(
    `${source} is not a valid ${PATCH_FORMAT} patch file:\n${formatProblems(problems)}`,
    'Fix the file by hand (every problem names its place in the JSON) or move it aside.',
  );
}

/** Validates one patch (what a repair produced) before it joins a file. */
export function validatePatch(value: unknown, model?: ModelDims, label = 'patch'): Patch {
  const c = new Checker(model);
  const patch = c.patch(value, label);
  if (patch && c.problems.length === 0) return patch;
  throw new NeuronpatchError(`The ${label} is not valid:\n${formatProblems(c.problems)}`);
}
