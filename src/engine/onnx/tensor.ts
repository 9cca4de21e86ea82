// FLOAT and FLOAT16 initializers as Float32Array, whatever their storage: raw_data, the typed repeated fields
// (float_data; fp16 bit patterns in int32_data), or external data (a byte range of a file beside the model,
// read without loading the rest of the file). Writing goes back in the tensor's own type and storage.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NeuronpatchError } from '../types';
import { f16ToF32, f32ToF16 } from './float16';
import { onnx, toNumber } from './proto';

const { DataType, DataLocation } = onnx.TensorProto;

/** Where a tensor's values live. */
export type TensorStorage = 'raw' | 'fields' | 'external';

export interface ExternalRef {
  /** `location` as written in the model, relative to the model's folder. */
  location: string;
  /** `location` resolved against the folder it was given. */
  file: string;
  offset: number;
  length: number;
}

// ONNX stores raw_data and external data little-endian; typed-array views use the host's order.
const littleEndian = os.endianness() === 'LE';

function nameOf(t: onnx.ITensorProto): string {
  return t.name ? `initializer "${t.name}"` : 'an unnamed initializer';
}

function fail(t: onnx.ITensorProto, what: string, hint?: string): never {
  throw new NeuronpatchError(`ONNX ${nameOf(t)}: ${what}`, hint);
}

/** The tensor's shape as plain numbers. */
export function tensorDims(t: onnx.ITensorProto): number[] {
  return (t.dims ?? []).map((d) => toNumber(d));
}

function elementCount(t: onnx.ITensorProto): number {
  return tensorDims(t).reduce((a, b) => a * b, 1);
}

function elementSize(t: onnx.ITensorProto): 1 | 2 | 4 {
  if (t.dataType === DataType.FLOAT) return 4;
  if (t.dataType === DataType.FLOAT16) return 2;
  if (t.dataType === DataType.UINT8 || t.dataType === DataType.INT8) return 1;
  const type = DataType[t.dataType ?? 0] ?? `type ${t.dataType}`;
  return fail(t, `element type ${type} is not supported (FLOAT and FLOAT16 weights, INT8 and UINT8 quantized codes are read).`);
}

function floatSize(t: onnx.ITensorProto): 2 | 4 {
  const size = elementSize(t);
  if (size === 1) fail(t, `it holds ${DataType[t.dataType ?? 0]} codes, not float values; dequantize it instead.`);
  return size as 2 | 4;
}

/** Which of the three storages holds the values (the ONNX rule: external, else raw_data if set, else fields). */
export function tensorStorage(t: onnx.ITensorProto): TensorStorage {
  if (t.dataLocation === DataLocation.EXTERNAL) return 'external';
  if (t.rawData && t.rawData.length > 0) return 'raw';
  return 'fields';
}

/** The external data entry of a tensor, resolved against `baseDir` and kept inside it; null when not external. */
export function externalRef(t: onnx.ITensorProto, baseDir: string): ExternalRef | null {
  if (t.dataLocation !== DataLocation.EXTERNAL) return null;
  const entries = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.get('location');
  if (!location) fail(t, 'it is stored as external data but names no location.');
  const file = path.resolve(baseDir, location);
  const rel = path.relative(path.resolve(baseDir), file);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel))
    fail(t, `its external data location "${location}" points outside the model folder ${baseDir}.`, 'Refusing to read or write files outside the model folder.');
  const int = (key: string, fallback: number): number => {
    const v = entries.get(key);
    if (v === undefined || v === '') return fallback;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) fail(t, `its external data ${key} "${v}" is not a byte count.`);
    return n;
  };
  const expected = elementCount(t) * elementSize(t);
  const offset = int('offset', 0);
  const length = int('length', expected);
  if (length !== expected) fail(t, `its external data length is ${length} bytes, but dims [${tensorDims(t)}] need ${expected}.`);
  return { location, file, offset, length };
}

function checkLittleEndian(t: onnx.ITensorProto): void {
  if (!littleEndian) fail(t, 'this machine is big-endian; reading ONNX tensor bytes is only implemented for little-endian hosts.');
}

function readRange(t: onnx.ITensorProto, ref: ExternalRef): Uint8Array {
  let fd: number;
  try {
    fd = fs.openSync(ref.file, 'r');
  } catch (e) {
    return fail(t, `cannot open its external data file ${ref.file}: ${(e as Error).message}`, 'Keep the data file beside the .onnx file, under the name the model gives it.');
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (ref.offset + ref.length > size)
      fail(t, `its external data ends at byte ${ref.offset + ref.length}, but ${ref.file} has only ${size} bytes (truncated?).`);
    const out = new Uint8Array(ref.length);
    let done = 0;
    while (done < ref.length) {
      const n = fs.readSync(fd, out, done, Math.min(ref.length - done, 1 << 30), ref.offset + done);
      if (n === 0) fail(t, `unexpected end of ${ref.file} at byte ${ref.offset + done}.`);
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Little-endian bytes → values; copies so that unaligned views (rawData inside a file buffer) are fine. */
function decodeBytes(t: onnx.ITensorProto, bytes: Uint8Array, count: number): Float32Array {
  const size = floatSize(t);
  if (bytes.length !== count * size)
    fail(t, `it holds ${bytes.length} bytes, but dims [${tensorDims(t)}] need ${count * size}.`, 'The model file is corrupt or truncated.');
  const aligned = new Uint8Array(bytes.length);
  aligned.set(bytes);
  if (size === 4) return new Float32Array(aligned.buffer, 0, count);
  return f16ToF32(new Uint16Array(aligned.buffer, 0, count));
}

/** The values of a FLOAT or FLOAT16 initializer as fp32. `baseDir` is the folder of the .onnx file. */
export function readTensor(t: onnx.ITensorProto, baseDir: string): Float32Array {
  const count = elementCount(t);
  const size = floatSize(t);
  if (t.segment) fail(t, 'it is a segment of a chunked tensor, which is not supported.');
  const storage = tensorStorage(t);
  if (storage !== 'fields') checkLittleEndian(t);
  if (storage === 'external') return decodeBytes(t, readRange(t, externalRef(t, baseDir)!), count);
  if (storage === 'raw') return decodeBytes(t, t.rawData!, count);
  if (size === 4) {
    const data = t.floatData ?? [];
    if (data.length !== count) fail(t, `float_data has ${data.length} values, but dims [${tensorDims(t)}] need ${count}.`);
    return Float32Array.from(data);
  }
  // FLOAT16 in int32_data: one fp16 bit pattern in the low 16 bits of each int32.
  const data = t.int32Data ?? [];
  if (data.length !== count) fail(t, `int32_data has ${data.length} values, but dims [${tensorDims(t)}] need ${count}.`);
  return f16ToF32(Uint16Array.from(data, (v) => v & 0xffff));
}

/**
 * The stored bytes of an INT8 or UINT8 initializer (quantized codes: read them as Int8Array through the buffer for
 * INT8), whatever its storage; a copy.
 */
export function readTensorBytes(t: onnx.ITensorProto, baseDir: string): Uint8Array {
  const count = elementCount(t);
  if (elementSize(t) !== 1) fail(t, 'it is not an INT8 or UINT8 tensor.');
  if (t.segment) fail(t, 'it is a segment of a chunked tensor, which is not supported.');
  const storage = tensorStorage(t);
  const bytes = storage === 'external' ? readRange(t, externalRef(t, baseDir)!) : storage === 'raw' ? Uint8Array.from(t.rawData!) : Uint8Array.from(t.int32Data ?? [], (v) => v & 0xff);
  if (bytes.length !== count) fail(t, `it holds ${bytes.length} bytes, but dims [${tensorDims(t)}] need ${count}.`, 'The model file is corrupt or truncated.');
  return bytes;
}

function encodeBytes(t: onnx.ITensorProto, values: Float32Array): Uint8Array {
  if (floatSize(t) === 4) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const h = f32ToF16(values);
  return new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
}

/**
 * Writes `values` back into the tensor, in its own element type (fp16 rounded to nearest even) and storage:
 * - raw_data: overwritten in place, same length (when rawData is a view into a loaded file's bytes, those bytes
 *   now hold the new values);
 * - float_data / int32_data: replaced (the model must be re-encoded to carry them);
 * - external data: written at the tensor's offset into `baseDir`/location, which must already exist and be long
 *   enough. `baseDir` is the folder of the file being written (a copy of the source data made by the caller),
 *   never the source model's folder.
 * Returns the storage written, so the caller knows whether the model bytes, the proto, or a data file changed.
 */
export function writeTensorData(t: onnx.ITensorProto, values: Float32Array, baseDir: string): TensorStorage {
  const count = elementCount(t);
  if (values.length !== count) fail(t, `cannot write ${values.length} values into a tensor of dims [${tensorDims(t)}] (${count} values).`);
  if (t.segment) fail(t, 'it is a segment of a chunked tensor, which is not supported.');
  const storage = tensorStorage(t);
  if (storage === 'fields') {
    if (floatSize(t) === 4) t.floatData = Array.from(values);
    else t.int32Data = Array.from(f32ToF16(values));
    return storage;
  }
  checkLittleEndian(t);
  const bytes = encodeBytes(t, values);
  if (storage === 'raw') {
    if (t.rawData!.length !== bytes.length) fail(t, `raw_data has ${t.rawData!.length} bytes, but dims [${tensorDims(t)}] need ${bytes.length}.`);
    t.rawData!.set(bytes);
    return storage;
  }
  const ref = externalRef(t, baseDir)!;
  let fd: number;
  try {
    fd = fs.openSync(ref.file, 'r+');
  } catch (e) {
    return fail(t, `cannot open the external data file ${ref.file} for writing: ${(e as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (ref.offset + ref.length > size)
      fail(t, `its external data ends at byte ${ref.offset + ref.length}, but ${ref.file} has only ${size} bytes.`, 'Copy the source data file there before writing.');
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), ref.offset + done);
  } finally {
    fs.closeSync(fd);
  }
  return storage;
}

/**
 * Writes the bytes of an INT8 or UINT8 tensor back in its own storage (as writeTensorData does for floats): raw_data
 * in place, int32_data replaced, or external data at its offset under `baseDir` (the export's copy).
 */
export function writeTensorBytes(t: onnx.ITensorProto, bytes: Uint8Array, baseDir: string): TensorStorage {
  const count = elementCount(t);
  if (elementSize(t) !== 1) fail(t, 'it is not an INT8 or UINT8 tensor.');
  if (bytes.length !== count) fail(t, `cannot write ${bytes.length} bytes into a tensor of dims [${tensorDims(t)}] (${count} values).`);
  const storage = tensorStorage(t);
  if (storage === 'fields') {
    t.int32Data = t.dataType === DataType.INT8 ? Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length)) : Array.from(bytes);
    return storage;
  }
  if (storage === 'raw') {
    if (t.rawData!.length !== bytes.length) fail(t, `raw_data has ${t.rawData!.length} bytes, ${bytes.length} given.`);
    t.rawData!.set(bytes);
    return storage;
  }
  const ref = externalRef(t, baseDir)!;
  const fd = fs.openSync(ref.file, 'r+');
  try {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, ref.offset + done);
  } finally {
    fs.closeSync(fd);
  }
  return storage;
}
