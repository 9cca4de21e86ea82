// onnxruntime against PyTorch: the logits that the model-building scripts saved at export (reference_logits.json)
// are reproduced by a plain onnxruntime session on the model file and by the engine's instrumented session, on
// every model folder that has them (models/demo, models/demo-gpt2, test/fixtures/*).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { absence, argmax, maxAbsDiff, MODELS, modelOf, plainLoadError, plainLogits, releaseAll } from '../helpers/models';

after(releaseAll);

/** fp32 models: onnxruntime's and PyTorch's fp32 arithmetic differ in rounding only. */
const TOLERANCE = 1e-4;
/**
 * fp16 models (reference: PyTorch fp32 arithmetic on the fp16 weights): onnxruntime rounds every activation to fp16
 * as well, so they agree to a few units in the last place of fp16 at the logits' magnitude, 8 of them here.
 */
const fp16Tolerance = (logits: number[]): number => 8 * 2 ** (Math.floor(Math.log2(Math.max(...logits.map(Math.abs)))) - 10);

interface Reference {
  inputs: { text?: string; input_ids: number[]; argmax: number | number[]; last_logits: number[] }[];
}

for (const e of MODELS) {
  describe(e.name, () => {
    test('onnxruntime reproduces the saved PyTorch logits', async (t) => {
      const file = path.join(e.dir, 'reference_logits.json');
      if (!absence(e) && !fs.existsSync(file)) {
        t.skip(`${e.name} has no reference_logits.json (third-party folder: checked against a plain session in instrument.test)`);
        return;
      }
      const m = await modelOf(t, e);
      if (!m) return;
      const ref = JSON.parse(fs.readFileSync(file, 'utf8')) as Reference;
      assert.ok(ref.inputs.length > 0, 'the reference has inputs');
      let worstPlain = 0;
      let worstEngine = 0;
      let tolerance = TOLERANCE;
      for (const x of ref.inputs) {
        const V = x.last_logits.length;
        assert.equal(V, m.info.vocab, 'the reference has one logit per vocabulary row');
        if (x.text !== undefined) assert.deepEqual(m.tokenizer.encode(x.text), x.input_ids, `the tokenizer gives the saved ids of ${JSON.stringify(x.text)}`);
        const T = x.input_ids.length;
        const plain = (await plainLogits(m.loaded.onnxPath, [x.input_ids])).subarray((T - 1) * V, T * V);
        const engine = (await m.loaded.session.forward({ ids: [x.input_ids] })).logits.subarray((T - 1) * V, T * V);
        if (m.info.weightType === 'float16') tolerance = Math.max(tolerance, fp16Tolerance(x.last_logits));
        const dPlain = maxAbsDiff(plain, x.last_logits);
        const dEngine = maxAbsDiff(engine, x.last_logits);
        worstPlain = Math.max(worstPlain, dPlain);
        worstEngine = Math.max(worstEngine, dEngine);
        const want = Array.isArray(x.argmax) ? x.argmax[x.argmax.length - 1] : x.argmax;
        assert.equal(argmax(plain), want, `argmax of ${JSON.stringify(x.text ?? x.input_ids)}`);
        assert.equal(argmax(engine), want, `engine argmax of ${JSON.stringify(x.text ?? x.input_ids)}`);
      }
      const loadError = plainLoadError(m.loaded.onnxPath);
      t.diagnostic(`${e.name}: ${ref.inputs.length} inputs, max |logit(onnxruntime) − logit(PyTorch)| = ${worstPlain.toExponential(2)} ` +
        `(plain session${loadError ? ', optimizations disabled' : ''}), ${worstEngine.toExponential(2)} (instrumented session); tolerance ${tolerance.toExponential(1)}`);
      assert.equal(loadError, undefined, `${m.loaded.onnxPath} must load in a plain onnxruntime session with default options`);
      assert.ok(worstPlain < tolerance, `plain session: max abs diff ${worstPlain} ≥ ${tolerance}`);
      assert.ok(worstEngine < tolerance, `instrumented session: max abs diff ${worstEngine} ≥ ${tolerance}`);
    });
  });
}
