// Real-world inputs neuronpatch once got wrong (../shared/fixtures/inputs/README.md), each with its right result:
// non-finite logits, num_logits_to_keep, graphs without position_ids, the tokenizer's BOS/EOS, StarCoder's fused
// KV cache. Read in place; skipped with a message where ../shared is absent (a user's clone). The same kinds built
// by tools/inputs/make_inputs.py from the repository's own fixtures are tested in inputs-built.test.ts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { loadModel, type Model, repair, trace } from '../../src/engine';
import { generate, preparePrompt } from '../../src/engine/generate';
import { linesAfter, greedyLines, nextTokenShift } from '../../src/engine/repair/verify';
import { floats, maxAbsDiff, plainFeeds, plainGreedyUncached, plainSession, root, sharedFixtures, testCacheDir } from '../helpers/models';

const inputs = path.join(sharedFixtures, 'inputs');
const models = new Map<string, Promise<Model>>();
after(async () => {
  for (const p of models.values()) await (await p.catch(() => undefined))?.dispose();
});

/** The model of an input folder, or undefined (the test skipped with a message) where it is absent. */
export async function inputModel(t: TestContext, dir: string): Promise<Model | undefined> {
  if (!fs.existsSync(dir)) {
    t.skip(`${path.relative(process.cwd(), dir)} is absent: ../shared/fixtures/ exists only beside the project's own checkouts`);
    return undefined;
  }
  let p = models.get(dir);
  if (!p) models.set(dir, (p = loadModel(dir, { cacheDir: testCacheDir() })));
  return p;
}

const readPrompts = (file: string): string[] => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { prompt: string }).prompt);

interface Reference { inputs: { text: string; input_ids: number[]; last_logits: number[] }[] }

/** The engine's last-position logits for each reference sequence against PyTorch's, at export. */
async function referenceDiff(m: Model, dir: string): Promise<number> {
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference_logits.json'), 'utf8')) as Reference;
  let worst = 0;
  for (const x of ref.inputs) {
    const res = await m.loaded.session.forward({ ids: [x.input_ids], lastOnly: true });
    worst = Math.max(worst, maxAbsDiff(res.logits, x.last_logits));
  }
  return worst;
}

describe('fp16-overflow: non-finite logits', () => {
  const dir = path.join(inputs, 'fp16-overflow', 'model');
  test('generate, trace and repair refuse with a clear error before decoding', async (t) => {
    const m = await inputModel(t, dir);
    if (!m) return;
    const prompt = fs.readFileSync(path.join(inputs, 'fp16-overflow', 'prompt.py'), 'utf8');
    const clear = (e: Error) => /logits are not finite/.test(e.message) && /fp32|mixed precision/.test(e.message);
    await assert.rejects(m.generate(prompt), clear);
    await assert.rejects(m.generate(prompt, { heal: false }), clear);
    await assert.rejects(trace(m, { prompt, desired: '    pass' }), clear);
    await assert.rejects(repair(m, { prompt, desired: '    pass' }, { analyse: false }), clear);
  });
});

describe('a solver that diverges says so', () => {
  test('ortgenai-tiny-llama-fp16: the joint solver\'s changes overflow fp16; the repair names the divergence, no zero-neuron patch', async (t) => {
    const m = await inputModel(t, path.join(sharedFixtures, 'ortgenai-tiny-llama-fp16'));
    if (!m) return;
    await assert.rejects(repair(m, { prompt: 'def main():\n    ', desired: 'return 0' }, { method: 'joint', analyse: false }), (e: Error) => {
      t.diagnostic(e.message.split('\n')[0]);
      return /joint solver diverged/.test(e.message) && /No patch was made/.test(e.message);
    });
  });
});

describe('num-logits-to-keep: an extra scalar input', () => {
  const dir = path.join(inputs, 'num-logits-to-keep', 'model');
  test('the engine feeds it: logits as PyTorch\'s, generate = a plain greedy loop, trace and repair run', async (t) => {
    const m = await inputModel(t, dir);
    if (!m) return;
    assert.deepEqual(m.loaded.graph.scalars?.map((s) => s.name), ['num_logits_to_keep']);
    const diff = await referenceDiff(m, dir);
    assert.ok(diff < 1e-3, `max |engine − PyTorch| = ${diff}`);
    const prompt = fs.readFileSync(path.join(inputs, 'num-logits-to-keep', 'prompt.py'), 'utf8');
    const c = await m.generate(prompt, { heal: false, maxNewTokens: 12, multiline: true });
    const plain = await plainGreedyUncached(m.loaded.onnxPath, preparePrompt(m.loaded, prompt, 12, false).ids, 12, m.info.eosTokenIds);
    assert.deepEqual(c.tokens.map((x) => x.id), plain);
    const desired = ' a + b';
    const tr = await trace(m, { prompt, desired });
    assert.ok(tr.failing.length > 0 && tr.at, `the completion ${JSON.stringify(tr.completion)} fails on ${JSON.stringify(desired)}`);
    const r = await repair(m, { prompt, desired }, { analyse: false });
    assert.ok(r.success, `repaired: ${JSON.stringify(r.after)}`);
    assert.equal((await m.generate(prompt, { patches: [r.patch] })).completion, desired);
    t.diagnostic(`max |logit − PyTorch| ${diff.toExponential(2)}; ${JSON.stringify(c.completion)}; repair: ${r.patch.edits.length} neuron(s), ${JSON.stringify(r.before)} → ${JSON.stringify(r.after)}`);
  });
});

describe('no-position-ids: batched decoding = one at a time', () => {
  const dir = path.join(inputs, 'no-position-ids', 'model');
  test('generate, regression lines and next-token shifts agree between batched and single rows', async (t) => {
    const m = await inputModel(t, dir);
    if (!m) return;
    assert.equal(m.loaded.graph.inputs.positions, undefined);
    const diff = await referenceDiff(m, dir);
    assert.ok(diff < 1e-3, `max |engine − PyTorch| = ${diff}`);
    const prompts = readPrompts(path.join(inputs, 'no-position-ids', 'prompts.jsonl'));
    const batched = await m.generateMany(prompts);
    const single: string[] = [];
    for (const p of prompts) single.push((await m.generate(p)).completion);
    const agree = batched.filter((b, i) => b.completion === single[i]).length;
    t.diagnostic(`no-position-ids: batched vs single ${agree}/${prompts.length} identical completions`);
    assert.equal(agree, prompts.length);
    // The side-effect check's teacher-forced rows (padded, one forward) against one row at a time.
    const before = await greedyLines(m.loaded, prompts);
    const edits = new Map([[1, { indices: [3, 7], deltas: Float32Array.from({ length: 2 * m.info.width }, (_, i) => Math.sin(i) * 0.5) }]]);
    const now = await linesAfter(m.loaded, prompts, before, edits);
    const alone = await Promise.all(prompts.map(async (p) => (await generate(m.loaded, [p], { edits }))[0].completion));
    assert.deepEqual(now, alone);
    const shift = await nextTokenShift(m.loaded, prompts, undefined, edits);
    let kl = 0;
    for (const p of prompts) kl += (await nextTokenShift(m.loaded, [p], undefined, edits)).meanKl;
    assert.ok(Math.abs(shift.meanKl - kl / prompts.length) < 1e-4, `batched KL ${shift.meanKl} vs single ${kl / prompts.length}`);
  });
});

describe('bos-from-tokenizer: prompts as the tokenizer encodes them for generation', () => {
  test('the post-processor\'s <s> starts the prompt', async (t) => {
    const m = await inputModel(t, path.join(inputs, 'bos-from-tokenizer', 'model'));
    if (!m) return;
    assert.deepEqual(m.tokenizer.prefix, [1]);
    assert.deepEqual(preparePrompt(m.loaded, 'def main():', 4, false).ids, [1, 822, 1667, 7295]);
  });
  test('ortgenai-tiny-llama-fp16: the tokenizer\'s <s> = 1 and </s> = 2, not genai_config\'s 0 and 1, said once', async (t) => {
    const m = await inputModel(t, path.join(sharedFixtures, 'ortgenai-tiny-llama-fp16'));
    if (!m) return;
    assert.deepEqual(m.tokenizer.prefix, [1]);
    assert.equal(preparePrompt(m.loaded, 'def main():', 4, false).ids[0], 1);
    assert.deepEqual(m.info.eosTokenIds, [2]);
    assert.match(m.info.notice ?? '', /disagree; following the tokenizer/);
  });
});

describe('starcoder-fused-kv: past_key_values.N.key_value', () => {
  const dir = path.join(inputs, 'starcoder-fused-kv', 'model');
  test('loads, generates as a plain greedy loop, traces and repairs', async (t) => {
    const m = await inputModel(t, dir);
    if (!m) return;
    assert.equal(m.loaded.graph.cache.kind, 'fused');
    const diff = await referenceDiff(m, dir);
    assert.ok(diff < 1e-3, `max |engine − PyTorch| = ${diff}`);
    const prompt = 'def add(a, b):\n    return';
    const c = await m.generate(prompt, { heal: false, maxNewTokens: 10, multiline: true });
    const plain = await plainGreedyUncached(m.loaded.onnxPath, preparePrompt(m.loaded, prompt, 10, false).ids, 10, m.info.eosTokenIds);
    assert.deepEqual(c.tokens.map((x) => x.id), plain, 'KV-cached decoding = the plain loop without a cache');
    const desired = ' a + b';
    const tr = await trace(m, { prompt, desired });
    assert.ok(tr.at, 'a failing position is traced');
    const r = await repair(m, { prompt, desired }, { analyse: false });
    assert.ok(r.success, `repaired: ${JSON.stringify(r.after)}`);
    assert.equal((await m.generate(prompt, { patches: [r.patch] })).completion, desired);
    t.diagnostic(`starcoder-fused-kv: max |logit − PyTorch| ${diff.toExponential(2)}; repair ${r.patch.edits.length} neuron(s)`);
  });
});

describe('crlf-prompt: CRLF documents get the LF completions, in CRLF', () => {
  const dir = path.join(inputs, 'crlf-prompt');
  test('the same completions as LF, given back in the prompt\'s own line ending; nothing to repair on the \\r', async (t) => {
    if (!fs.existsSync(dir)) return t.skip('../shared/fixtures/inputs/crlf-prompt is absent');
    const m = await inputModel(t, path.join(root, 'models', 'demo'));
    if (!m) return;
    const lf = fs.readFileSync(path.join(dir, 'prompt-lf.py'), 'utf8');
    const crlf = fs.readFileSync(path.join(dir, 'prompt-crlf.py'), 'utf8');
    assert.ok(crlf.includes('\r\n'));
    const a = await m.generate(lf);
    assert.equal((await m.generate(crlf)).completion, a.completion);
    // The fixture's failure was an empty CRLF completion where LF gave a line (`return 1` on the demo model of its day).
    assert.match(a.completion, /^ {8}\S/, 'the LF prompt completes the indented line');
    const multi = await m.generate(lf, { multiline: true, maxNewTokens: 24 });
    const multiCrlf = await m.generate(crlf, { multiline: true, maxNewTokens: 24 });
    assert.equal(multiCrlf.completion, multi.completion.replace(/\n/g, '\r\n'), 'a multi-line completion comes back in CRLF');
    const lfLines = (await m.generateMany(readPrompts(path.join(dir, 'regression30-lf.jsonl')))).map((c) => c.completion);
    const crlfLines = (await m.generateMany(readPrompts(path.join(dir, 'regression30-crlf.jsonl')))).map((c) => c.completion);
    assert.deepEqual(crlfLines, lfLines);
    const tr = await trace(m, { prompt: crlf, desired: a.completion });
    assert.equal(tr.failing.length, 0, 'the CRLF prompt already produces the LF completion: no neuron is spent on \\r');
    t.diagnostic(`crlf: ${crlfLines.filter((l) => !l.trim()).length} of 30 CRLF regression lines blank, ${lfLines.filter((l) => !l.trim()).length} LF; ${crlfLines.filter((l, i) => l === lfLines[i]).length}/30 identical`);
  });
});
