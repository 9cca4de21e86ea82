// Peak memory: the engine with a model loaded (instrumented session, tokenizer, the weights it reads for repairs)
// against a plain onnxruntime-node session on the original model.onnx. Each runs in its own child process, which
// loads, runs one forward of 1 × 256 tokens and a greedy generation of 32 tokens, then reports its peak resident
// set size (getrusage maxrss). A child that only loads onnxruntime-node gives the floor both stand on. Children
// alternate over the repetitions; medians are compared.
//   npm run bench:memory -- [--model DIR] [--reps 3] [--threads N] [--json]
import '../src/engine/onnx/privacy'; // first: telemetry off before onnxruntime-node loads
import { execFileSync } from 'node:child_process';
import type { Tensor as OrtTensor } from 'onnxruntime-node';
import { loadModel } from '../src/engine/model/load';
import { generate } from '../src/engine/generate';
import { fmt, median, mulberry32, options, PlainModel } from './common';

type Role = 'bare' | 'plain' | 'engine';

async function child(role: Role, model: string, threads?: number): Promise<void> {
  const random = mulberry32(3);
  if (role === 'bare') {
    await import('../src/engine/onnx/runtime'); // onnxruntime-node, through the engine's door (telemetry off)
  } else if (role === 'plain') {
    const plain = await PlainModel.open(model, threads);
    const ids = [Array.from({ length: 256 }, () => 1 + Math.floor(random() * (plain.vocab - 1)))];
    await plain.session.run(plain.feeds(ids), ['logits']);
    // A greedy generation of 32 tokens with the KV cache, as the engine's child does.
    const presents = plain.presentNames();
    let past: OrtTensor[] | undefined;
    let feed = [ids[0].slice(0, 64)];
    let length = 0;
    for (let step = 0; step < 32; step++) {
      const res = await plain.session.run(plain.feeds(feed, past, length), ['logits', ...presents]);
      length += feed[0].length;
      past = presents.map((n) => res[n]);
      const logits = res.logits.data as Float32Array;
      const V = logits.length / feed[0].length;
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[(feed[0].length - 1) * V + i] > logits[(feed[0].length - 1) * V + best]) best = i;
      feed = [[best]];
    }
  } else {
    const engine = await loadModel(model, { threads });
    const ids = [Array.from({ length: 256 }, () => 1 + Math.floor(random() * (engine.info.vocab - 1)))];
    await engine.session.forward({ ids });
    await generate(engine, [engine.tokenizer.decode(ids[0].slice(0, 64))], { maxNewTokens: 32, multiline: true, heal: false });
  }
  const ru = process.resourceUsage();
  process.stdout.write(`${JSON.stringify({ role, maxRssKb: ru.maxRSS, rssKb: Math.round(process.memoryUsage().rss / 1024) })}\n`);
}

async function main(): Promise<void> {
  const opt = options({ reps: { type: 'string', default: '3' }, child: { type: 'string' } });
  const threads = opt.threads ? Number(opt.threads) : undefined;
  if (opt.child) return child(opt.child as Role, opt.model, threads);
  const roles: Role[] = ['bare', 'plain', 'engine'];
  const peaks: Record<Role, number[]> = { bare: [], plain: [], engine: [] };
  for (let r = 0; r < Number(opt.reps); r++) {
    for (const role of r % 2 ? [...roles].reverse() : roles) {
      const args = [process.argv[1], '--child', role, '--model', opt.model, ...(opt.threads ? ['--threads', opt.threads] : [])];
      const out = execFileSync(process.execPath, args, { encoding: 'utf8' });
      const m = JSON.parse(out.trim().split('\n').pop()!) as { maxRssKb: number };
      peaks[role].push(m.maxRssKb / 1024);
    }
  }
  const mb = { bare: median(peaks.bare), plain: median(peaks.plain), engine: median(peaks.engine) };
  const summary = {
    reps: Number(opt.reps), peakRssMb: mb, ratio: mb.engine / mb.plain,
    ratioAboveBare: (mb.engine - mb.bare) / (mb.plain - mb.bare),
  };
  if (opt.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  process.stdout.write([
    `peak resident memory (maxrss), ${opt.model}: load, one 1 × 256 forward, 32 greedy tokens; median of ${opt.reps} child processes each`,
    '',
    '| process | peak RSS MB |',
    '|---|---|',
    `| node + onnxruntime-node only | ${fmt(mb.bare, 1)} |`,
    `| plain session on model.onnx | ${fmt(mb.plain, 1)} |`,
    `| engine (loadModel) | ${fmt(mb.engine, 1)} |`,
    '',
    `engine / plain: **${fmt(summary.ratio)}×**; above the bare process: ${fmt(mb.engine - mb.bare, 1)} MB vs ${fmt(mb.plain - mb.bare, 1)} MB (${fmt(summary.ratioAboveBare)}×)`,
    '',
  ].join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/memory: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
