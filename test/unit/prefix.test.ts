// Completions while typing reuse the KV cache of the document prefix: on the demo model, a sequence of prompts as
// an editor sends them (characters typed, a word deleted, a jump elsewhere) completes exactly as without reuse,
// and only the new tokens run.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { PrefixCache } from '../../src/engine';
import { entry, modelOf, releaseAll } from '../helpers/models';

after(releaseAll);

const DOC = 'import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in f]\n\n\ndef main(argv):\n    for name in argv:\n        if not os.path.exists(name):\n            print("missing:", name)\n';

/** Prompts as keystrokes produce them: the document typed forward, a word deleted, then a jump to a shorter prefix. */
function keystrokes(): string[] {
  const out: string[] = [];
  for (let n = 120; n <= DOC.length; n += 7) out.push(DOC.slice(0, n));
  const last = out[out.length - 1];
  out.push(last.slice(0, last.lastIndexOf(' ')));
  out.push(DOC.slice(0, 60));
  out.push(DOC.slice(0, 67));
  return out;
}

test('completions with the prefix cache equal completions without it, and run only the new tokens', async (t) => {
  const m = await modelOf(t, entry('demo'));
  if (!m) return;
  const prefix = new PrefixCache();
  let reused = 0;
  let run = 0;
  for (const prompt of keystrokes()) {
    const plain = await m.generate(prompt, { maxNewTokens: 12 });
    const cached = await m.generate(prompt, { maxNewTokens: 12, prefix });
    assert.equal(cached.completion, plain.completion, `completion of …${JSON.stringify(prompt.slice(-30))}`);
    assert.deepEqual(cached.tokens.map((x) => x.id), plain.tokens.map((x) => x.id));
    reused += prefix.last.reused;
    run += prefix.last.run;
  }
  assert.ok(reused > 4 * run, `most prompt tokens come from the cache (${reused} reused, ${run} run)`);
});

test('a different patch set does not reuse the cache of another', async (t) => {
  const m = await modelOf(t, entry('demo'));
  if (!m) return;
  const prefix = new PrefixCache();
  await m.generate(DOC, { maxNewTokens: 4, prefix });
  assert.ok(prefix.last.run > 10, 'the first prompt runs whole');
  await m.generate(DOC + '    ', { maxNewTokens: 4, prefix });
  assert.ok(prefix.last.reused > 10, 'the same patches (none) reuse it');
  const edits = new Map([[0, { indices: [1], deltas: new Float32Array(m.info.width).fill(0.01) }]]);
  const { generate } = await import('../../src/engine/generate');
  await generate(m.loaded, [DOC + '    '], { maxNewTokens: 4, prefix, edits });
  assert.equal(prefix.last.reused, 0, 'edits the cache was not made with are not mixed with it');
});

test('a prompt run in pieces (cancellable between them) completes as one run whole', async (t) => {
  const m = await modelOf(t, entry('demo'));
  if (!m) return;
  const { generate } = await import('../../src/engine/generate');
  const whole = await generate(m.loaded, [DOC, DOC.slice(0, 90)], { maxNewTokens: 10, prefillChunk: 1000 });
  const pieces = await generate(m.loaded, [DOC, DOC.slice(0, 90)], { maxNewTokens: 10, prefillChunk: 16 });
  assert.deepEqual(pieces.map((c) => c.tokens.map((x) => x.id)), whole.map((c) => c.tokens.map((x) => x.id)));
  const ac = new AbortController();
  let steps = 0;
  const cancelled = generate(m.loaded, [DOC], { maxNewTokens: 10, prefillChunk: 8, signal: ac.signal, onStep: () => steps++ });
  ac.abort();
  await assert.rejects(cancelled, /cancelled/);
  assert.equal(steps, 0, 'no token was decoded after the cancel');
});
