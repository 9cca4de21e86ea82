// Broken model folders: each gives a NeuronpatchError whose message says what is wrong, never a crash or a raw
// onnxruntime/protobuf error, and nothing is written into the model folder (its listing, sizes and times are
// compared before and after). Every case works on a copy in a temp folder.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { onnx } from 'onnx-proto';
import { loadModel, NeuronpatchError } from '../../src/engine';
import { copyModelFolder, entry, listing, MODELS, onnxFile, present, skipIfAbsent, tempDir, type ModelEntry } from '../helpers/models';
import { skipIfMissing } from '../helpers/need';

/** Loading `dir` fails with a NeuronpatchError matching every pattern, and leaves the folder as it was. */
async function refused(t: TestContext, dir: string, patterns: RegExp[], what: string): Promise<void> {
  const before = fs.existsSync(dir) ? listing(dir) : [];
  const cacheDir = tempDir('cache');
  let error: unknown;
  try {
    const m = await loadModel(dir, { cacheDir });
    await m.dispose();
  } catch (e) {
    error = e;
  }
  assert.ok(error, `${what}: loading must fail`);
  assert.ok(error instanceof NeuronpatchError, `${what}: a NeuronpatchError, not ${(error as Error).name}: ${(error as Error).message}`);
  for (const p of patterns) assert.match(error.message, p, `${what}: the message says so`);
  assert.deepEqual(fs.existsSync(dir) ? listing(dir) : [], before, `${what}: nothing written into the model folder`);
  const cached = listing(cacheDir).filter((f) => !f.endsWith('/'));
  t.diagnostic(`${what}: ${JSON.stringify(error.message.split('\n')[0])}${cached.length ? ` (the cache got ${cached.length} file(s))` : ''}`);
}

const rel = (e: ModelEntry): string => path.relative(e.dir, onnxFile(e));

/** The small fp32 model the single-folder cases copy. */
function small(t: TestContext): ModelEntry | undefined {
  const e = ['tiny-qwen2', 'ortgenai-tiny-gpt2-fp32', 'tiny-gpt-neox', 'demo'].map(entry).find(present);
  skipIfMissing(t, e ? undefined : 'no small model folder is present (test/fixtures/tiny-qwen2 is committed: a broken checkout)', 'repo');
  return e;
}

for (const e of MODELS) {
  describe(e.name, () => {
    test('a truncated .onnx file', async (t) => {
      if (skipIfAbsent(t, e)) return;
      const dir = copyModelFolder(e, 'truncated');
      const file = path.join(dir, rel(e));
      const bytes = fs.readFileSync(file);
      for (const [cut, at] of [['in half', bytes.length >> 1], ['to 100 bytes', 100], ['by its last byte', bytes.length - 1]] as const) {
        fs.writeFileSync(file, bytes.subarray(0, at));
        await refused(t, dir, [new RegExp(path.basename(file).replace(/\./g, '\\.')), /not a valid ONNX model|truncated/i], `${e.name}: .onnx cut ${cut}`);
      }
    });

    test('a config that disagrees with the graph', async (t) => {
      if (skipIfAbsent(t, e)) return;
      const dir = copyModelFolder(e, 'config');
      const hf = path.join(dir, 'config.json');
      const genai = path.join(dir, 'genai_config.json');
      const file = fs.existsSync(hf) ? hf : genai;
      const original = fs.readFileSync(file, 'utf8');
      const cfg = () => JSON.parse(original) as Record<string, unknown>;
      // [what, key path, change, the message must say]
      const cases: [string, string[], (v: number) => number, RegExp][] = file === hf
        ? [
          ['layers', ['num_hidden_layers'], (v) => v + 1, /layers/],
          ['layers', ['n_layer'], (v) => v + 1, /layers/],
          ['width', ['hidden_size'], (v) => v * 2, /width|hidden/],
          ['width', ['n_embd'], (v) => v * 2, /width|hidden/],
          ['vocabulary', ['vocab_size'], (v) => v - 7, /vocab/],
        ]
        : [
          ['layers', ['model', 'decoder', 'num_hidden_layers'], (v) => v + 1, /layers/],
          ['width', ['model', 'decoder', 'hidden_size'], (v) => v * 2, /width|hidden/],
          ['vocabulary', ['model', 'vocab_size'], (v) => v - 7, /vocab/],
        ];
      let tried = 0;
      for (const [what, keys, change, says] of cases) {
        const c = cfg();
        const holder = keys.slice(0, -1).reduce<Record<string, unknown> | undefined>((o, k) => o?.[k] as Record<string, unknown> | undefined, c);
        const last = keys[keys.length - 1];
        if (typeof holder?.[last] !== 'number') continue;
        holder[last] = change(holder[last] as number);
        fs.writeFileSync(file, JSON.stringify(c, null, 2));
        await refused(t, dir, [says], `${e.name}: ${path.basename(file)} with a wrong ${keys.join('.')}`);
        tried++;
      }
      fs.writeFileSync(file, original);
      assert.ok(tried >= 2, `at least the layers and one more size are checked (${tried})`);
    });
  });
}

describe('broken folders', () => {
  test('a missing folder, and folders without a model, a tokenizer or a config', async (t) => {
    const e = small(t);
    if (!e) return;
    await refused(t, path.join(tempDir('missing'), 'no-such-model'), [/Model folder not found/, /no-such-model/], 'missing folder');
    const noOnnx = copyModelFolder(e, 'no-onnx');
    fs.rmSync(path.join(noOnnx, rel(e)));
    await refused(t, noOnnx, [/No ONNX decoder/], 'no .onnx');
    const noTok = copyModelFolder(e, 'no-tokenizer');
    fs.rmSync(path.join(noTok, 'tokenizer.json'));
    await refused(t, noTok, [/tokenizer\.json/], 'no tokenizer.json');
    const noCfg = copyModelFolder(e, 'no-config');
    for (const f of ['config.json', 'genai_config.json']) fs.rmSync(path.join(noCfg, f), { force: true });
    await refused(t, noCfg, [/config\.json/], 'no config');
    const badCfg = copyModelFolder(e, 'bad-config');
    const cfgName = fs.existsSync(path.join(badCfg, 'config.json')) ? 'config.json' : 'genai_config.json';
    fs.writeFileSync(path.join(badCfg, cfgName), '{"model_type": "llama", ');
    await refused(t, badCfg, [new RegExp(cfgName.replace('.', '\\.')), /not valid JSON/], `${cfgName} that does not parse`);
  });

  test('a tokenizer.json that does not parse, or is not a tokenizer', async (t) => {
    const e = small(t);
    if (!e) return;
    const dir = copyModelFolder(e, 'tokenizer');
    const file = path.join(dir, 'tokenizer.json');
    const good = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, good.slice(0, good.length >> 1));
    await refused(t, dir, [/tokenizer\.json/, /does not parse/], 'tokenizer.json cut in half');
    fs.writeFileSync(file, '{"version": "1.0", "added_tokens": []}');
    await refused(t, dir, [/tokenizer\.json/, /not a Hugging Face tokenizer/], 'tokenizer.json without a model');
    fs.writeFileSync(file, '{"version": "1.0", "model": {"type": "BPE", "vocab": 7, "merges": "x"}}');
    await refused(t, dir, [/tokenizer\.json/], 'tokenizer.json with a broken model section');
  });

  test('a graph with no recognisable FFN: a real model whose lm_head weight is gone, and a graph with none', async (t) => {
    const e = small(t);
    if (!e) return;
    // A real model without its lm_head weight.
    const dir = copyModelFolder(e, 'no-lm-head');
    const file = path.join(dir, rel(e));
    const model = onnx.ModelProto.decode(fs.readFileSync(file));
    const g = model.graph!;
    const nodes = g.node ?? [];
    const ins = (n: onnx.INodeProto): string[] => (n.input ?? []).map(String);
    const outs = (n: onnx.INodeProto): string[] => (n.output ?? []).map(String);
    // The MatMul that makes the logits, directly or through the lm_head's bias Add.
    const head = nodes.find((n) => n.opType === 'MatMul' && outs(n).includes('logits'))
      ?? nodes.find((n) => n.opType === 'MatMul' && nodes.some((m) => outs(m).includes('logits') && ins(m).includes(outs(n)[0])));
    assert.ok(head, 'the lm_head MatMul');
    g.initializer = (g.initializer ?? []).filter((i) => !ins(head).includes(String(i.name)));
    fs.writeFileSync(file, onnx.ModelProto.encode(model).finish());
    await refused(t, dir, [/unembedding|lm_head/, /Known architectures/], 'no lm_head weight');

    // A decoder-shaped graph with an embedding and an lm_head and nothing between them.
    const bare = copyModelFolder(e, 'no-ffn');
    for (const f of fs.readdirSync(bare)) if (/\.onnx|onnx_data|\.data$|genai_config/.test(f)) fs.rmSync(path.join(bare, f), { recursive: true });
    const d = 8;
    const V = 16;
    const T = onnx.TensorProto.DataType;
    const vi = (name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto => ({
      name, type: { tensorType: { elemType, shape: { dim: dims.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })) } } },
    });
    const weights = (name: string, dims: number[]): onnx.ITensorProto => ({
      name, dataType: T.FLOAT, dims, floatData: Array.from({ length: dims[0] * dims[1] }, (_, i) => Math.sin(i)),
    });
    const tiny: onnx.IModelProto = {
      irVersion: 8, opsetImport: [{ domain: '', version: 14 }], producerName: 'neuronpatch-test',
      graph: {
        name: 'no-ffn',
        node: [
          { opType: 'Gather', input: ['embed', 'input_ids'], output: ['h'], name: '/model/embed_tokens/Gather' },
          { opType: 'MatMul', input: ['h', 'lm_head'], output: ['logits'], name: '/lm_head/MatMul' },
          { opType: 'Identity', input: ['past_key_values.0.key'], output: ['present.0.key'], name: 'k' },
          { opType: 'Identity', input: ['past_key_values.0.value'], output: ['present.0.value'], name: 'v' },
        ],
        initializer: [weights('embed', [V, d]), weights('lm_head', [d, V])],
        input: [
          vi('input_ids', T.INT64, ['batch_size', 'sequence_length']),
          vi('attention_mask', T.INT64, ['batch_size', 'total_sequence_length']),
          vi('past_key_values.0.key', T.FLOAT, ['batch_size', 1, 'past_sequence_length', d]),
          vi('past_key_values.0.value', T.FLOAT, ['batch_size', 1, 'past_sequence_length', d]),
        ],
        output: [
          vi('logits', T.FLOAT, ['batch_size', 'sequence_length', V]),
          vi('present.0.key', T.FLOAT, ['batch_size', 1, 'total_sequence_length', d]),
          vi('present.0.value', T.FLOAT, ['batch_size', 1, 'total_sequence_length', d]),
        ],
      },
    };
    fs.writeFileSync(path.join(bare, 'model.onnx'), onnx.ModelProto.encode(tiny).finish());
    fs.writeFileSync(path.join(bare, 'config.json'), JSON.stringify({ model_type: 'llama', num_hidden_layers: 1, hidden_size: d, vocab_size: V }));
    await refused(t, bare, [/No FFN output projection/, /residual width 8/, /Known architectures/], 'a graph with no FFN');
  });

  // The committed fp16 fixture everywhere, onnxruntime-genai's LLaMA where ../shared is present.
  for (const e of [entry('tiny-qwen2-fp16'), entry('ortgenai-tiny-llama-fp16')]) {
    test(`fp16 external data that is missing or truncated: ${e.name}`, async (t) => {
      if (skipIfAbsent(t, e)) return;
      const dir = copyModelFolder(e, 'external');
      const data = path.join(dir, 'model.onnx.data');
      const bytes = fs.readFileSync(data);
      fs.rmSync(data);
      await refused(t, dir, [/model\.onnx\.data/, /missing/], 'external data missing');
      fs.writeFileSync(data, bytes.subarray(0, bytes.length >> 1));
      // onnxruntime's own message names neither the file nor the truncation: the engine checks the ranges first.
      await refused(t, dir, [/model\.onnx\.data/, /truncated|bytes/], 'external data cut in half');
    });
  }
});
