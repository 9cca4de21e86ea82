// Reading and writing ONNX ModelProto files with onnx-proto (protobufjs 6, ONNX 1.10 schema).
// Decoding keeps `rawData` as views into the file's bytes, which export relies on to patch weights in place
// and write every other byte back unchanged (re-encoding is not byte-identical, and drops fields newer than
// the 1.10 schema).
import * as fs from 'node:fs/promises';
import { onnx } from 'onnx-proto';
import { NeuronpatchError } from '../types';
import { writeFileAtomic } from '../atomic';

export { onnx };

/** A decoded model together with the bytes it was decoded from (its `rawData` fields are views into them). */
export interface LoadedModel {
  model: onnx.ModelProto;
  bytes: Uint8Array;
  path: string;
}

/** Reads and decodes an ONNX file; a missing, unreadable, truncated or foreign file is a NeuronpatchError. */
export async function loadModelProto(path: string): Promise<onnx.ModelProto> {
  return (await loadModel(path)).model;
}

/** As loadModelProto, keeping the file's bytes. */
export async function loadModel(path: string): Promise<LoadedModel> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NeuronpatchError(`ONNX model not found: ${path}`, 'Check the model folder and the decoder file name.');
    if (code === 'EISDIR') throw new NeuronpatchError(`${path} is a folder, not an ONNX model file.`);
    if (code === 'ERR_FS_FILE_TOO_LARGE')
      throw new NeuronpatchError(`${path} is too large to read into memory (over 2 GiB).`, 'Models that large keep their weights in external data; export it that way.');
    throw new NeuronpatchError(`Cannot read the ONNX model ${path}: ${(e as Error).message}`);
  }
  return { model: decodeModelProto(bytes, path), bytes, path };
}

/** Decodes ONNX bytes; `path` names the file in errors. */
export function decodeModelProto(bytes: Uint8Array, path: string): onnx.ModelProto {
  const invalid = (why: string): NeuronpatchError =>
    new NeuronpatchError(
      `${path} is not a valid ONNX model (${why}).`,
      'The file may be truncated (an interrupted download or copy) or not an ONNX file at all; fetch or export it again.',
    );
  if (bytes.length === 0) throw invalid('the file is empty');
  let model: onnx.ModelProto;
  try {
    // A plain Uint8Array view: protobufjs decodes a Buffer through the deprecated Buffer() constructor.
    model = onnx.ModelProto.decode(Buffer.isBuffer(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes);
  } catch (e) {
    throw invalid(`protobuf decoding failed: ${(e as Error).message}`);
  }
  // Arbitrary bytes sometimes decode without error into a message with nothing in it.
  if (!model.graph) throw invalid('it has no graph');
  if ((model.graph.node ?? []).length === 0) throw invalid('its graph has no nodes');
  if (toNumber(model.irVersion) <= 0) throw invalid('it has no IR version');
  return model;
}

/** Encodes a model and writes it atomically (temp file beside it, fsync, rename). */
export async function saveModelProto(model: onnx.IModelProto, path: string): Promise<void> {
  await writeFileAtomic(path, onnx.ModelProto.encode(model).finish());
}

/** An int64 field as protobufjs gives it (number, Long, or numeric string) as a number; throws past 2^53. */
export function toNumber(v: number | { toNumber(): number; toString(): string } | string | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  const n = typeof v === 'string' ? Number(v) : v.toNumber();
  if (!Number.isSafeInteger(n)) throw new RangeError(`integer ${String(v)} is beyond 2^53`);
  return n;
}

/** The graph's initializer with this name, if any. */
export function findInitializer(model: onnx.IModelProto, name: string): onnx.ITensorProto | undefined {
  return model.graph?.initializer?.find((t) => t.name === name);
}
