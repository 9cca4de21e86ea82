// Decoding, on every model folder present: greedy decoding with the KV cache is greedy decoding without it; a batch
// of prompts of different lengths decodes as each prompt alone; no patches is the plain model; token healing
// re-spells the prompt's backed-off text (and, on the trained demo models, heals `if __name__ == `); prompts longer
// than the context window are cut with a notice; token ids beyond the model's vocabulary are refused.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type Completion, type Model, NeuronpatchError, type Patch } from '../../src/engine';
import { preparePrompt } from '../../src/engine/generate';
import { argmax, gaussian, MODELS, modelOf, releaseAll, row, textPrompt } from '../helpers/models';

after(releaseAll);

const fp16 = (m: Model): boolean => m.info.weightType === 'float16';

/** Logit gap below which two computations may pick either token (random-weight fp16 models are near ties). */
const tieGap = (m: Model): number => (fp16(m) ? 2e-3 : 1e-5);
/** Tolerance of a probability computed two ways. */
const probTol = (m: Model): number => (fp16(m) ? 1e-3 : 1e-5);

function softmaxAt(logits: ArrayLike<number>, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return Math.exp(logits[id] - max) / sum;
}

/** Prefixes of a prompt at whitespace, of three different lengths, longest last. */
function prefixes(p: string): string[] {
  const cuts = [...p.matchAll(/\s/g)].map((x) => x.index!).filter((i) => i > 0);
  return [p.slice(0, cuts[Math.floor(cuts.length / 3)]), p.slice(0, cuts[Math.floor((2 * cuts.length) / 3)]), p];
}

const strip = (c: Completion) => ({ completion: c.completion, tokens: c.tokens, notice: c.notice });

/** Compares two decodings of the same prompt token by token; a different token is allowed only at a near tie. */
function sameDecoding(m: Model, a: Completion, b: Completion, what: string): number {
  let ties = 0;
  const n = Math.min(a.tokens.length, b.tokens.length);
  for (let k = 0; k < n; k++) {
    const x = a.tokens[k];
    const y = b.tokens[k];
    if (x.id !== y.id) {
      // Only an fp16 model may break a tie another way; the decodings part there, so stop comparing.
      assert.ok(fp16(m) && Math.abs(x.prob - y.prob) < probTol(m), `${what}: token ${k} is ${x.id} vs ${y.id} (p ${x.prob} vs ${y.prob})`);
      return ties + 1;
    }
    assert.ok(Math.abs(x.prob - y.prob) < probTol(m), `${what}: token ${k} prob ${x.prob} vs ${y.prob}`);
  }
  assert.equal(a.tokens.length, b.tokens.length, `${what}: number of tokens`);
  assert.equal(a.completion, b.completion, what);
  return ties;
}

for (const e of MODELS) {
  describe(e.name, () => {
    test('greedy decoding with the KV cache = greedy decoding that recomputes the whole sequence', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const N = 12;
      const V = m.info.vocab;
      const prompt = textPrompt(m);
      const c = await m.generate(prompt, { heal: false, maxNewTokens: N, multiline: true });
      assert.ok(c.tokens.length > 0, 'generated something');
      if (c.tokens.length < N) assert.ok(m.info.eosTokenIds.includes(c.tokens[c.tokens.length - 1].id), 'stopped early only at end of sequence');
      const seq = [...preparePrompt(m.loaded, prompt, N, false).ids];
      let ties = 0;
      let worstProb = 0;
      for (const [k, tok] of c.tokens.entries()) {
        const res = await m.loaded.session.forward({ ids: [seq] });
        const last = row(res.logits, res.seq, V, 0, res.seq - 1);
        const a = argmax(last);
        if (a !== tok.id) {
          assert.ok(last[a] - last[tok.id] < tieGap(m), `step ${k}: cached decoding chose ${tok.id}, the full recomputation ${a} ` +
            `(logits ${last[tok.id]} vs ${last[a]})`);
          ties++;
        }
        worstProb = Math.max(worstProb, Math.abs(softmaxAt(last, tok.id) - tok.prob));
        seq.push(tok.id);
      }
      t.diagnostic(`${e.name}: ${c.tokens.length} greedy tokens agree with and without the cache (${ties} near ties); ` +
        `max |p(cached) − p(recomputed)| = ${worstProb.toExponential(2)}`);
      assert.ok(worstProb < probTol(m), `token probabilities differ by ${worstProb}`);
      if (!fp16(m)) assert.equal(ties, 0, 'an fp32 model decodes the same tokens');
    });

    test('a batch of prompts of different lengths decodes as each prompt alone', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const prompts = prefixes(textPrompt(m));
      const lengths = prompts.map((p) => m.tokenizer.encode(p).length);
      assert.equal(new Set(lengths).size, 3, `three different lengths (${lengths})`);
      let ties = 0;
      for (const heal of [false, true]) {
        const opts = { heal, maxNewTokens: 8, multiline: true };
        const batch = await m.generateMany(prompts, opts);
        assert.equal(batch.length, prompts.length);
        for (const [i, p] of prompts.entries()) ties += sameDecoding(m, batch[i], await m.generate(p, opts), `heal ${heal}, prompt ${i}`);
      }
      t.diagnostic(`${e.name}: prompts of ${lengths.join(', ')} tokens, batched = alone, with and without healing (${ties} near ties)`);
    });

    test('no patches, an empty patch list and a disabled or all-zero patch all decode as the plain model', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const { layers, width } = m.info;
      const prompt = textPrompt(m);
      const opts = { maxNewTokens: 8, multiline: true };
      const patch = (enabled: boolean, scale: number, seed: number): Patch => ({
        id: `p${seed}`, createdAt: new Date(0).toISOString(), enabled, method: 'minimal',
        case: { prompt: 'p', desired: 'd', before: 'b', after: 'd' },
        edits: [0, layers - 1].map((layer, k) => ({ layer, neuron: 1 + k, delta: Array.from(gaussian(width, seed + k, scale)) })),
        metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 0 },
      });
      const plain = strip(await m.generate(prompt, opts));
      assert.deepEqual(strip(await m.generate(prompt, { ...opts, patches: [] })), plain, 'empty patch list');
      assert.deepEqual(strip(await m.generate(prompt, { ...opts, patches: [patch(false, 50, 1)] })), plain, 'a disabled patch');
      assert.deepEqual(strip(await m.generate(prompt, { ...opts, patches: [patch(true, 0, 2)] })), plain, 'a patch of zero deltas');
      // And the patches do reach the graph: a strong one changes the tokens generated (ids, not float noise in their
      // probabilities).
      const strong = strip(await m.generate(prompt, { ...opts, patches: [patch(true, 50, 3)] }));
      const ids = (c: { tokens: { id: number }[] }) => c.tokens.map((x) => x.id);
      t.diagnostic(`${e.name}: plain ids ${ids(plain).join(' ')}; with a strong patch ${ids(strong).join(' ')}`);
      assert.notDeepEqual(ids(strong), ids(plain), 'a strong enabled patch changes the decoded token ids');
    });

    test('healing re-spells the backed-off text: the decoded tokens continue the prompt exactly', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const base = textPrompt(m);
      // Ends inside a word, after indentation, after a space.
      const cut = base.search(/\w\w\w\s/) + 2;
      const prompts = [base.slice(0, cut), base.endsWith('\n') ? `${base}    ` : `${base} `, base.trimEnd()].filter(
        (p) => m.tokenizer.encode(p).every((id) => id < m.info.vocab),
      );
      const healedTexts: string[] = [];
      for (const prompt of prompts) {
        const prepared = preparePrompt(m.loaded, prompt, 10, true);
        const c = await m.generate(prompt, { maxNewTokens: 10, multiline: true });
        const full = m.tokenizer.decode([...prepared.ids, ...c.tokens.map((x) => x.id)]);
        healedTexts.push(JSON.stringify(prepared.healed));
        if (full.length < prompt.length) {
          assert.equal(c.completion, '', `${JSON.stringify(prompt)}: stopped before re-spelling ${JSON.stringify(prepared.healed)}`);
          continue;
        }
        assert.equal(full.slice(0, prompt.length), prompt, `${JSON.stringify(prompt)}: prompt tokens + generated tokens start with the prompt ` +
          `(healed ${JSON.stringify(prepared.healed)}, generated ${JSON.stringify(c.tokens.map((x) => x.text))})`);
        assert.ok(full.slice(prompt.length).startsWith(c.completion), `${JSON.stringify(prompt)}: the completion is what follows the prompt`);
      }
      t.diagnostic(`${e.name}: healed ${healedTexts.join(', ')}`);
    });

    test('a prompt longer than the context window is cut from the left, with a notice', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const { context } = m.info;
      const unit = textPrompt(m);
      const long = unit.repeat(Math.ceil((context + 40) / m.tokenizer.encode(unit).length));
      const n = m.tokenizer.encode(long).length;
      assert.ok(n > context, `the prompt has ${n} tokens > ${context}`);
      const maxNewTokens = 6;
      const c = await m.generate(long, { maxNewTokens, multiline: true });
      assert.ok(c.notice, 'a notice says the prompt was cut');
      assert.match(c.notice!, /cut/);
      assert.ok(c.tokens.length > 0, 'it still generates');
      const prepared = preparePrompt(m.loaded, long, maxNewTokens, true);
      assert.ok(prepared.ids.length + maxNewTokens <= context, 'prompt and completion fit the window');
      t.diagnostic(`${e.name}: ${n} tokens → ${prepared.ids.length} kept (context ${context}); notice: ${c.notice}`);
      // A tokenizer that starts every prompt with BOS (LLaMA's) starts a cut one with it too: the cut is after it.
      const bos = preparePrompt(m.loaded, unit, maxNewTokens, true).ids[0];
      if (m.tokenizer.prefix.length) assert.equal(prepared.ids[0], bos, `the cut prompt keeps the BOS token ${bos} first`);
      // A prompt that just fits gets no notice (checked where the window is small enough to be quick).
      if (context <= 512) {
        const fits = await m.generate(m.tokenizer.decode(m.tokenizer.encode(long).slice(-(context - maxNewTokens - 8))), { maxNewTokens, heal: false });
        assert.equal(fits.notice, undefined);
      }
      await assert.rejects(m.generate(unit, { maxNewTokens: context }), NeuronpatchError, 'no room left for the prompt');
    });

    test('a token id beyond the model\'s vocabulary is refused, naming the id and the model\'s size', async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const V = m.info.vocab;
      const ids = [[1, 2, V, 3]];
      await assert.rejects(m.loaded.session.forward({ ids }), (err: Error) => {
        assert.ok(err instanceof NeuronpatchError, `a NeuronpatchError, not ${err.name}`);
        assert.match(err.message, new RegExp(`\\b${V}\\b.*\\b${V}\\b`, 's'), `names id ${V} and the size ${V}`);
        return true;
      });
      await assert.rejects(m.loaded.session.forward({ ids: [[1, -1]] }), NeuronpatchError);
      // Real text through a tokenizer bigger than the model (the GPT-2 fixture: 50257 tokens, 1000 rows).
      const text = 'def hello_world():\n    print("hello, world")\n';
      const bad = m.tokenizer.encode(text).filter((id) => id >= V);
      if (!bad.length) return;
      await assert.rejects(m.generate(text, { heal: false }), (err: Error) => {
        assert.ok(err instanceof NeuronpatchError, `a NeuronpatchError, not ${err.name}: ${err.message}`);
        assert.ok(bad.some((id) => new RegExp(`\\b${id}\\b`).test(err.message)), `names one of the ids ${bad}: ${err.message}`);
        assert.match(err.message, new RegExp(`\\b${V}\\b`), 'names the model\'s vocabulary size');
        return true;
      });
      t.diagnostic(`${e.name}: ${JSON.stringify(text)} has ids ${bad.join(', ')} ≥ ${V}: refused`);
    });
  });
}

describe('token healing on the trained demo models', () => {
  for (const e of MODELS.filter((x) => x.source === 'demo')) {
    test(`${e.name}: \`if __name__ == \` heals into the string, not a doubled space`, async (t) => {
      const m = await modelOf(t, e);
      if (!m) return;
      const prompt = 'import sys\n\n\ndef main():\n    return 0\n\n\nif __name__ == ';
      const healed = await m.generate(prompt, { maxNewTokens: 8 });
      const exact = await m.generate(prompt, { maxNewTokens: 8, heal: false });
      t.diagnostic(`${e.name}: healed ${JSON.stringify(healed.completion)}; without healing ${JSON.stringify(exact.completion)}`);
      assert.ok(healed.completion.length > 0, 'a completion');
      assert.ok(!/^\s/.test(healed.completion), `the healed completion starts after the prompt's space, not with another: ${JSON.stringify(healed.completion)}`);
      const full = m.tokenizer.decode(healed.tokens.map((x) => x.id));
      assert.ok(full.startsWith(' '), 'the first generated token carries the backed-off space');
    });
  }
});
