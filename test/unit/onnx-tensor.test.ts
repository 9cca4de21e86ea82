// fp16 conversion, ONNX model loading, and tensor I/O in every storage: external data on the committed fp16 fixture
// (and onnxruntime-genai's LLaMA where ../shared is present), raw_data on the third-party GPT-2.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f16BitsToNumber, f16ToF32, f32ToF16, numberToF16Bits } from '../../src/engine/onnx/float16';
import { findInitializer, loadModel, loadModelProto, onnx, saveModelProto } from '../../src/engine/onnx/proto';
import { externalRef, readTensor, tensorDims, tensorStorage, writeTensorData } from '../../src/engine/onnx/tensor';
import { NeuronpatchError } from '../../src/engine/types';
import { entry, skipIfAbsent } from '../helpers/models';

const gpt2Dir = entry('ortgenai-tiny-gpt2-fp32').dir;

/** fp16 bits → value by the textbook formula: an implementation independent of the table in float16.ts. */
function refHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}

describe('float16', () => {
  it('converts known values both ways', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff], // largest finite
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [1023 * 2 ** -24, 0x03ff], // largest subnormal
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [x, h] of cases) {
      assert.equal(numberToF16Bits(x), h, `${x} → 0x${h.toString(16)}`);
      assert.ok(Object.is(f16BitsToNumber(h), x), `0x${h.toString(16)} → ${x}`);
    }
    assert.equal(f16BitsToNumber(0x3555), 0.333251953125);
    assert.equal(numberToF16Bits(0.1), 0x2e66);
    assert.equal(numberToF16Bits(1 / 3), 0x3555);
    assert.ok(Number.isNaN(f16BitsToNumber(0x7e00)));
    assert.equal(numberToF16Bits(NaN) & 0x7c00, 0x7c00);
    assert.notEqual(numberToF16Bits(NaN) & 0x3ff, 0);
  });

  it('rounds to nearest, ties to even, with overflow to infinity and underflow to zero', () => {
    assert.equal(numberToF16Bits(1 + 2 ** -11), 0x3c00, 'tie between 1 and 1+2^-10 goes to the even 1');
    assert.equal(numberToF16Bits(1 + 3 * 2 ** -11), 0x3c02, 'tie between 1+2^-10 and 1+2^-9 goes to the even one');
    assert.equal(numberToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01, 'just above a tie rounds up');
    assert.equal(numberToF16Bits(2049), 0x6800, '2049 is a tie between 2048 and 2050: even');
    assert.equal(numberToF16Bits(2051), 0x6802);
    assert.equal(numberToF16Bits(65519), 0x7bff);
    assert.equal(numberToF16Bits(65520), 0x7c00, '65520 ties between 65504 and 65536 (infinity): even is infinity');
    assert.equal(numberToF16Bits(1e9), 0x7c00);
    assert.equal(numberToF16Bits(2 ** -25), 0x0000, 'half the smallest subnormal ties to even zero');
    assert.equal(numberToF16Bits(1.5 * 2 ** -25), 0x0001);
    assert.equal(numberToF16Bits(3 * 2 ** -25), 0x0002, 'subnormal tie 1.5 ulp goes to even 2');
    assert.equal(numberToF16Bits(-1e-10), 0x8000);
    assert.equal(numberToF16Bits(2 ** -14 - 2 ** -25), 0x0400, 'rounding carries from the subnormals into the normals');
  });

  it('gives every fp16 bit pattern back through fp32, NaN payloads included', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const ref = refHalf(h);
      if (Number.isNaN(ref)) assert.ok(Number.isNaN(wide[h]));
      else assert.ok(Object.is(wide[h], ref), `0x${h.toString(16)}: ${wide[h]} vs ${ref}`);
    }
    const back = f32ToF16(wide);
    for (let h = 0; h < 65536; h++) if (back[h] !== h) assert.fail(`0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
  });

  it('picks the nearest fp16 for random floats', () => {
    let s = 7;
    const xs = Float32Array.from({ length: 20000 }, () => {
      s = (s * 1664525 + 1013904223) % 4294967296;
      return (s / 4294967296 - 0.5) * 2 ** ((s % 40) - 26);
    });
    const hs = f32ToF16(xs);
    xs.forEach((x, i) => {
      const h = hs[i];
      const err = Math.abs(refHalf(h) - x);
      for (const n of [h - 1, h + 1]) {
        if ((n & 0x7fff) >= 0x7c00 || (n & 0x7fff) === 0x7fff || n < 0 || n > 0xffff || ((n ^ h) & 0x8000) !== 0) continue;
        assert.ok(err <= Math.abs(refHalf(n) - x), `${x}: 0x${h.toString(16)} while 0x${n.toString(16)} is nearer`);
      }
    });
  });

  it('converts into a given output and refuses a wrong length', () => {
    const out = new Float32Array(2);
    assert.equal(f16ToF32(Uint16Array.of(0x3c00, 0xc000), out), out);
    assert.deepEqual([...out], [1, -2]);
    assert.throws(() => f32ToF16(new Float32Array(3), new Uint16Array(2)), RangeError);
  });
});

/** The fp16 folders with external data: the committed tiny-qwen2-fp16 everywhere, onnxruntime-genai's LLaMA where present. */
const FP16_EXTERNAL = [entry('tiny-qwen2-fp16'), entry('ortgenai-tiny-llama-fp16')];

/** Layer L's down_proj weight: the initializer its MatMul node reads (the node name is the HF module path). */
function downProj(model: onnx.IModelProto, layer: number): onnx.ITensorProto {
  const node = model.graph!.node!.find((n) => n.name === `/model/layers.${layer}/mlp/down_proj/MatMul`);
  assert.ok(node, `layer ${layer} has a down_proj MatMul`);
  const t = findInitializer(model, node.input![1]);
  assert.ok(t, `its weight ${node.input![1]} is an initializer`);
  return t;
}

for (const e of FP16_EXTERNAL) {
  describe(`fp16 tensors in external data: ${e.name}`, () => {
    let tmp: string;
    before(() => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'np-onnx-'));
    });
    after(() => fs.rmSync(tmp, { recursive: true, force: true }));

    it('reads fp16 weights from external data (only the byte range of the tensor)', async (t) => {
      if (skipIfAbsent(t, e)) return;
      const model = await loadModelProto(path.join(e.dir, 'model.onnx'));
      const w = downProj(model, 0);
      assert.equal(tensorStorage(w), 'external');
      const n = tensorDims(w).reduce((a, b) => a * b, 1);
      const ref = externalRef(w, e.dir)!;
      assert.deepEqual({ location: ref.location, file: path.basename(ref.file), length: ref.length }, { location: 'model.onnx.data', file: 'model.onnx.data', length: 2 * n });
      const values = readTensor(w, e.dir);
      const data = fs.readFileSync(path.join(e.dir, 'model.onnx.data'));
      assert.equal(values.length, n);
      for (let i = 0; i < values.length; i++) assert.equal(values[i], Math.fround(refHalf(data.readUInt16LE(ref.offset + 2 * i))));
      assert.ok(values.some((v) => v !== 0));
      if (e.name === 'ortgenai-tiny-llama-fp16') {
        assert.deepEqual([tensorDims(w), ref.offset], [[64, 16], 1095744]);
        // The unembedding, the largest tensor: [16, 32000].
        const lm = readTensor(findInitializer(model, 'lm_head.MatMul.weight')!, e.dir);
        assert.equal(lm.length, 16 * 32000);
        assert.equal(lm[lm.length - 1], Math.fround(refHalf(data.readUInt16LE(1106080 + 1024000 - 2))));
      }
    });

    it('writes an external tensor into a copy of the data file, changing only its range', async (t) => {
      if (skipIfAbsent(t, e)) return;
      const model = await loadModelProto(path.join(e.dir, 'model.onnx'));
      const w = downProj(model, 1);
      const dir = fs.mkdtempSync(path.join(tmp, 'ext-'));
      fs.copyFileSync(path.join(e.dir, 'model.onnx.data'), path.join(dir, 'model.onnx.data'));
      fs.chmodSync(path.join(dir, 'model.onnx.data'), 0o644);
      const values = readTensor(w, e.dir);
      values[17] = 0.125; // exact in fp16
      values[1000] += 0.01;
      assert.equal(writeTensorData(w, values, dir), 'external');
      const before = fs.readFileSync(path.join(e.dir, 'model.onnx.data'));
      const afterBytes = fs.readFileSync(path.join(dir, 'model.onnx.data'));
      assert.equal(afterBytes.length, before.length);
      const changed: number[] = [];
      for (let i = 0; i < before.length; i++) if (before[i] !== afterBytes[i]) changed.push(i);
      const { offset } = externalRef(w, dir)!;
      assert.ok(changed.length > 0);
      assert.ok(changed.every((i) => i === offset + 34 || i === offset + 35 || i === offset + 2000 || i === offset + 2001), `changed bytes ${changed}`);
      const back = readTensor(w, dir);
      assert.equal(back[17], 0.125);
      assert.ok(Math.abs(back[1000] - values[1000]) <= Math.abs(values[1000]) * 2 ** -11);
    });

    it('names the initializer and the file when external data is missing, truncated, or outside the folder', async (t) => {
      if (skipIfAbsent(t, e)) return;
      const model = await loadModelProto(path.join(e.dir, 'model.onnx'));
      // The tensor whose data ends last in the file.
      const external = model.graph!.initializer!.filter((x) => tensorStorage(x) === 'external');
      const last = external.reduce((a, b) => (externalRef(a, e.dir)!.offset > externalRef(b, e.dir)!.offset ? a : b));
      const { offset, length } = externalRef(last, e.dir)!;
      const name = last.name!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const dir = fs.mkdtempSync(path.join(tmp, 'trunc-'));
      assert.throws(() => readTensor(last, dir), (err: unknown) => err instanceof NeuronpatchError && new RegExp(`initializer "${name}": cannot open its external data file .*model\\.onnx\\.data`).test(err.message));
      const cut = offset + length - 2;
      fs.writeFileSync(path.join(dir, 'model.onnx.data'), fs.readFileSync(path.join(e.dir, 'model.onnx.data')).subarray(0, cut));
      assert.throws(() => readTensor(last, dir), new RegExp(`initializer "${name}": its external data ends at byte ${offset + length}, but .*model\\.onnx\\.data has only ${cut} bytes \\(truncated\\?\\)`));
      const escaping = onnx.TensorProto.create({ ...last, externalData: [{ key: 'location', value: '../secret.bin' }] });
      assert.throws(() => readTensor(escaping, dir), /points outside the model folder/);
      const wrongLength = onnx.TensorProto.create({ ...last, externalData: [{ key: 'location', value: 'model.onnx.data' }, { key: 'length', value: '12' }] });
      assert.throws(() => readTensor(wrongLength, e.dir), new RegExp(`external data length is 12 bytes, but dims \\[${tensorDims(last).join(',')}\\] need ${length}`));
    });
  });
}

describe('ONNX models and tensors on the fp32 GPT-2 with raw_data', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'np-onnx-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const gpt2 = entry('ortgenai-tiny-gpt2-fp32');

  it('reads fp32 weights from raw_data', async (ctx) => {
    if (skipIfAbsent(ctx, gpt2)) return;
    const { model, bytes } = await loadModel(path.join(gpt2Dir, 'past.onnx'));
    const t = findInitializer(model, 'transformer.h.4.mlp.c_proj.weight')!;
    assert.equal(tensorStorage(t), 'raw');
    assert.deepEqual(tensorDims(t), [128, 32]);
    const values = readTensor(t, gpt2Dir);
    const raw = t.rawData!;
    assert.equal(raw.buffer, bytes.buffer, 'rawData is a view into the file bytes');
    const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = raw.byteOffset - bytes.byteOffset;
    for (let i = 0; i < values.length; i++) assert.equal(values[i], view.readFloatLE(at + 4 * i));
    assert.ok(tensorDims(findInitializer(model, 'transformer.wte.weight')!).every((d) => typeof d === 'number'));
  });

  it('refuses a missing, truncated, or non-ONNX model file with the path', async (t) => {
    if (skipIfAbsent(t, gpt2)) return;
    await assert.rejects(loadModelProto(path.join(tmp, 'nope.onnx')), (e: unknown) => e instanceof NeuronpatchError && e.message.includes(`ONNX model not found: ${path.join(tmp, 'nope.onnx')}`));
    const full = fs.readFileSync(path.join(gpt2Dir, 'past.onnx'));
    const cut = path.join(tmp, 'cut.onnx');
    fs.writeFileSync(cut, full.subarray(0, Math.floor(full.length / 2)));
    await assert.rejects(loadModelProto(cut), (e: unknown) => e instanceof NeuronpatchError && e.message.startsWith(`${cut} is not a valid ONNX model`) && /truncated/.test(e.message));
    await assert.rejects(loadModelProto(path.join(gpt2Dir, 'genai_config.json')), /genai_config\.json is not a valid ONNX model/);
    const empty = path.join(tmp, 'empty.onnx');
    fs.writeFileSync(empty, '');
    await assert.rejects(loadModelProto(empty), /empty\.onnx is not a valid ONNX model \(the file is empty\)/);
  });

  it('saves a model atomically and it loads back', async (t) => {
    if (skipIfAbsent(t, gpt2)) return;
    const model = await loadModelProto(path.join(gpt2Dir, 'past.onnx'));
    const dir = fs.mkdtempSync(path.join(tmp, 'save-'));
    await saveModelProto(model, path.join(dir, 'copy.onnx'));
    assert.deepEqual(fs.readdirSync(dir), ['copy.onnx']);
    const again = await loadModelProto(path.join(dir, 'copy.onnx'));
    assert.equal(again.graph!.node!.length, model.graph!.node!.length);
    const name = 'transformer.h.2.mlp.c_proj.weight';
    assert.deepEqual(readTensor(findInitializer(again, name)!, dir), readTensor(findInitializer(model, name)!, gpt2Dir));
  });
});

describe('tensor storages', () => {
  const { FLOAT, FLOAT16, INT64 } = onnx.TensorProto.DataType;
  const values = Float32Array.of(1, -2.5, 0.1, 65504, 3e-6, 0);

  it('reads and writes float_data, fp16 in int32_data, and raw_data of both types', () => {
    const f16 = f32ToF16(values);
    const tensors = [
      onnx.TensorProto.create({ name: 'f32_fields', dims: [2, 3], dataType: FLOAT, floatData: Array.from(values) }),
      onnx.TensorProto.create({ name: 'f16_fields', dims: [2, 3], dataType: FLOAT16, int32Data: Array.from(f16) }),
      onnx.TensorProto.create({ name: 'f32_raw', dims: [6], dataType: FLOAT, rawData: new Uint8Array(values.buffer.slice(0)) }),
      // An odd byte offset: raw_data inside a file buffer is not aligned.
      onnx.TensorProto.create({ name: 'f16_raw', dims: [3, 2], dataType: FLOAT16, rawData: new Uint8Array([0, ...new Uint8Array(f16.buffer)]).subarray(1) }),
    ];
    for (const t of tensors) {
      const half = t.dataType === FLOAT16;
      const expect = half ? f16ToF32(f16) : values;
      assert.deepEqual(readTensor(t, '/nonexistent'), expect, t.name);
      const next = Float32Array.from(expect, (v) => v * 2 + 1);
      const storage = writeTensorData(t, next, '/nonexistent');
      assert.equal(storage, t.name.endsWith('fields') ? 'fields' : 'raw');
      assert.deepEqual(readTensor(t, '/nonexistent'), half ? f16ToF32(f32ToF16(next)) : next, t.name);
      // Through an encode and decode, as in a saved model.
      const decoded = onnx.TensorProto.decode(onnx.TensorProto.encode(t).finish());
      assert.deepEqual(readTensor(decoded, '/nonexistent'), readTensor(t, '/nonexistent'));
    }
  });

  it('refuses other element types, wrong lengths and segments, naming the initializer', () => {
    const ints = onnx.TensorProto.create({ name: 'positions', dims: [2], dataType: INT64, int64Data: [1, 2] });
    assert.throws(() => readTensor(ints, '.'), /initializer "positions": element type INT64 is not supported/);
    const short = onnx.TensorProto.create({ name: 'w', dims: [4], dataType: FLOAT, floatData: [1, 2, 3] });
    assert.throws(() => readTensor(short, '.'), /initializer "w": float_data has 3 values, but dims \[4\] need 4/);
    const raw = onnx.TensorProto.create({ name: 'r', dims: [4], dataType: FLOAT16, rawData: new Uint8Array(6) });
    assert.throws(() => readTensor(raw, '.'), /initializer "r": it holds 6 bytes, but dims \[4\] need 8/);
    assert.throws(() => writeTensorData(short, new Float32Array(3), '.'), /cannot write 3 values into a tensor of dims \[4\]/);
    const seg = onnx.TensorProto.create({ name: 's', dims: [1], dataType: FLOAT, floatData: [1], segment: { begin: 0, end: 1 } });
    assert.throws(() => readTensor(seg, '.'), /initializer "s": it is a segment/);
  });
});
