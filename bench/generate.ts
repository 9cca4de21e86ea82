// Greedy generation speed, tokens per second at batch 1: the engine's `generate` (the instrumented session, KV
// cache, the code path of `neuronpatch generate`) against a plain onnxruntime-node greedy loop with the KV cache on
// the original model.onnx, and against @huggingface/transformers' text-generation pipeline loading the same model
// folder. All three decode the same token ids greedily for the same number of new tokens (multi-line, stopped only
// by end of sequence); the engine decodes from the prompt's own tokens (`--no-heal`) so that the ids match, and
// its default healed decoding is timed as well. Speeds are taken on the prompts where all three give the same text
// (so on the same tokens); a prompt where one differs is printed with the three texts and left out of the timing.
// Repetitions interleaved, medians compared. Target: the engine at least as fast as both.
//   npm run bench:generate -- [--model DIR] [--prompts N] [--new-tokens 64] [--reps 5] [--threads N] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { generate } from '../src/engine/generate';
import { loadModel } from '../src/engine/model/load';
import { fmt, median, options, PlainModel, ROOT, sessionOptions } from './common';

/** Prompts: the regression prompts' last lines (at most `maxTokens` tokens, cut at a line boundary). */
function benchPrompts(count: number, encode: (s: string) => number[], maxTokens: number): string[] {
  const file = path.join(ROOT, 'bench', 'cases', 'regression.jsonl');
  const sources = existsSync(file)
    ? readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { prompt: string }).prompt)
    : [
        'import os\nimport sys\n\n\ndef main(argv):\n    parser = argparse.ArgumentParser()\n',
        'class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n',
        'def read_lines(path):\n    with open(path) as f:\n',
        'for i in range(len(values)):\n    if values[i] is None:\n',
      ];
  return sources.slice(0, count).map((p) => {
    let lines = p.split('\n');
    while (lines.length > 2 && encode(lines.join('\n')).length > maxTokens) lines = lines.slice(1);
    return lines.join('\n');
  });
}

/** A decoded text for a Markdown cell: JSON-quoted (newlines and control characters escaped), cut to 60 characters. */
function cut(text: string): string {
  const q = JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}…` : text);
  return q.replace(/\|/g, '\\|');
}

async function main(): Promise<void> {
  const opt = options({
    prompts: { type: 'string', default: '8' }, 'new-tokens': { type: 'string', default: '64' }, reps: { type: 'string', default: '5' },
    'prompt-tokens': { type: 'string', default: '128' },
  });
  const threads = opt.threads ? Number(opt.threads) : undefined;
  const newTokens = Number(opt['new-tokens']);
  const reps = Number(opt.reps);
  const engine = await loadModel(opt.model, { threads });
  const plain = await PlainModel.open(opt.model, threads);
  const eos = new Set(engine.info.eosTokenIds);
  const tok = engine.tokenizer;
  const promptTokens = Math.min(Number(opt['prompt-tokens']), engine.info.context - newTokens);
  const prompts = benchPrompts(Number(opt.prompts), (s) => tok.encode(s), promptTokens);

  // transformers.js, offline, on the same folder (model.onnx at the top level: subfolder '').
  const tjs = await import('@huggingface/transformers');
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = `${path.dirname(path.resolve(opt.model))}${path.sep}`;
  const pipe = await tjs.pipeline('text-generation', path.basename(path.resolve(opt.model)), {
    subfolder: '', dtype: 'fp32', local_files_only: true, device: 'cpu',
    session_options: sessionOptions(threads),
  });

  type Run = { tokens: number; text: string };
  const runEngine = (heal: boolean) => async (prompt: string): Promise<Run> => {
    const [c] = await generate(engine, [prompt], { maxNewTokens: newTokens, multiline: true, heal });
    return { tokens: c.tokens.length, text: heal ? c.completion : tok.decode(c.tokens.map((t) => t.id)) };
  };
  const runPlain = async (prompt: string): Promise<Run> => {
    const ids = tok.encode(prompt);
    const out: number[] = [];
    let feedIds = [ids];
    let past: ort.Tensor[] | undefined;
    let pastLength = 0;
    const presents = plain.presentNames();
    const V = engine.info.vocab;
    for (let step = 0; step < newTokens; step++) {
      const res = await plain.session.run(plain.feeds(feedIds, past, pastLength), ['logits', ...presents]);
      pastLength += feedIds[0].length;
      past = presents.map((n) => res[n]);
      const logits = res.logits.data as Float32Array;
      const base = (feedIds[0].length - 1) * V;
      let best = -Infinity;
      let id = 0;
      for (let i = 0; i < V; i++) if (logits[base + i] > best) { best = logits[base + i]; id = i; }
      out.push(id);
      if (eos.has(id)) break;
      feedIds = [[id]];
    }
    return { tokens: out.length, text: tok.decode(out) };
  };
  const runTjs = async (prompt: string): Promise<Run> => {
    const out = (await pipe(prompt, { max_new_tokens: newTokens, do_sample: false, return_full_text: false })) as { generated_text: string }[];
    const text = out[0].generated_text;
    return { tokens: -1, text };
  };

  const runners: Record<string, (p: string) => Promise<Run>> = {
    engine: runEngine(false), plain: runPlain, transformers: runTjs, engineHealed: runEngine(true),
  };
  // Warm-up, and the agreement check: the same greedy text from the same ids.
  const first: Record<string, Run[]> = {};
  for (const [k, f] of Object.entries(runners)) {
    first[k] = [];
    for (const p of prompts) first[k].push(await f(p));
  }
  const agreePlain = prompts.filter((_, i) => first.engine[i].text === first.plain[i].text).length;
  const agreeTjs = prompts.filter((_, i) => first.engine[i].text === first.transformers[i].text).length;
  // The pipeline returns text, not ids: the speeds are compared on the prompts where all three decoders give the
  // same text (and the engine and the plain loop the same number of tokens), so every decoder is timed on the same
  // tokens. A prompt where any differs is printed and left out of the timing.
  const same = prompts.map((_, i) => first.engine[i].text === first.plain[i].text && first.plain[i].text === first.transformers[i].text
    && first.engine[i].tokens === first.plain[i].tokens);
  const timed = prompts.map((_, i) => i).filter((i) => same[i]);
  const differing = prompts.map((p, i) => ({ i, p })).filter(({ i }) => !same[i]).map(({ i, p }) => ({
    prompt: i, promptEnd: cut(p.slice(-40)), engine: cut(first.engine[i].text), plain: cut(first.plain[i].text), transformers: cut(first.transformers[i].text),
  }));
  if (!timed.length) {
    throw new Error(`no prompt gives the same greedy text in the engine, the plain loop and transformers.js: no speed to compare on the same tokens\n${JSON.stringify(differing, null, 1)}`);
  }
  const tokensOf = (k: string, i: number): number => (k === 'transformers' ? first.plain[i].tokens : first[k][i].tokens);

  const perRep: Record<string, number[]> = Object.fromEntries(Object.keys(runners).map((k) => [k, []]));
  const keys = Object.keys(runners);
  for (let r = 0; r < reps; r++) {
    const order = r % 2 ? [...keys].reverse() : keys;
    for (const k of order) {
      let tokens = 0;
      const s = performance.now();
      for (const i of timed) {
        await runners[k](prompts[i]);
        tokens += tokensOf(k, i);
      }
      perRep[k].push(tokens / ((performance.now() - s) / 1000));
    }
  }
  const tps = Object.fromEntries(keys.map((k) => [k, median(perRep[k])])) as Record<string, number>;
  await engine.release();
  await plain.release();
  await pipe.dispose();
  const summary = {
    model: engine.info.name, hash: engine.info.hash, prompts: prompts.length, newTokens, reps, threads: threads ?? 0,
    promptTokens: median(prompts.map((p) => tok.encode(p).length)), tokensPerSecond: tps,
    engineOverPlain: tps.engine / tps.plain, engineOverTransformers: tps.engine / tps.transformers,
    healedOverPlain: tps.engineHealed / tps.plain,
    agreement: { plain: agreePlain, transformers: agreeTjs, of: prompts.length },
    timedPrompts: timed.length, timedTokens: timed.reduce((n, i) => n + first.plain[i].tokens, 0), differing,
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  process.stdout.write([
    `greedy generation, ${engine.info.name}: ${prompts.length} prompts (median ${summary.promptTokens} tokens), up to ${newTokens} new tokens each, batch 1, median of ${reps} interleaved repetitions, intra-op threads ${threads ?? 'default'}`,
    '',
    '| decoder | tokens/s | engine / it |',
    '|---|---|---|',
    `| engine \`generate\` (no healing: same ids) | ${fmt(tps.engine, 0)} | |`,
    `| plain onnxruntime-node loop, KV cache | ${fmt(tps.plain, 0)} | **${fmt(summary.engineOverPlain)}×** |`,
    `| @huggingface/transformers text-generation pipeline | ${fmt(tps.transformers, 0)} | **${fmt(summary.engineOverTransformers)}×** |`,
    `| engine \`generate\`, healed boundary (default) | ${fmt(tps.engineHealed, 0)} | ${fmt(tps.engineHealed / tps.engine)}× of unhealed |`,
    '',
    `same greedy text as the engine: plain loop ${agreePlain}/${prompts.length}, transformers.js ${agreeTjs}/${prompts.length}; ` +
      `timed on the ${timed.length} prompt(s) where all three agree, ${summary.timedTokens} tokens per pass (the healed row decodes its own tokens)`,
    ...(differing.length ? ['', 'prompts left out of the timing (a decoder gives other text):', '',
      '| prompt | its end | engine | plain loop | transformers.js |', '|---|---|---|---|---|',
      ...differing.map((d) => `| ${d.prompt} | ${d.promptEnd} | ${d.engine} | ${d.plain} | ${d.transformers} |`)] : []),
    '',
  ].join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/generate: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
