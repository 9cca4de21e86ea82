// The CLI as a user meets it (issue 13/16 follow-up): `repair` reports its wall time phase by phase (loading, guard
// set, regression lines, trace, solve, confirm, side-effect check) and reads the guard set and the lines before the
// repair from the cache on the second run; neurons are named as in the panel (`L3.N280`, added ones `L5.K0`);
// `--prompt` is taken as typed unless `--unescape`; progress goes to stderr for phases past 2 s. Through the built
// dist/cli.js on the real demo model.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { neuronName, patchNeuronNames } from '../../src/engine/neuronName';
import { Phases, phaseOfRepairLine } from '../../src/cli/progress';
import { needsCli, runCli } from '../helpers/cli';
import { entry, root, tempDir } from '../helpers/models';

const run = (args: string[], cache: string) => runCli(args, { cache });

const demo = entry('demo');

/** The first dev case (a real failure of the demo model) and a small regression file, in a fresh folder. */
function inputs(regressionPrompts: number): { dir: string; prompt: string; desired: string; regression: string } {
  const dir = tempDir('cli');
  const c = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[0]) as { prompt: string; desired: string };
  const prompt = path.join(dir, 'prompt.py');
  fs.writeFileSync(prompt, c.prompt);
  const regression = path.join(dir, 'regression.jsonl');
  const lines = fs.readFileSync(path.join(root, 'bench', 'cases', 'regression.jsonl'), 'utf8').split('\n').filter(Boolean);
  fs.writeFileSync(regression, lines.slice(0, regressionPrompts).join('\n') + '\n');
  return { dir, prompt, desired: c.desired, regression };
}

interface Summary {
  success: boolean;
  neurons: { layer: number; neuron: number; name: string }[];
  wall: { ms: number; phases: { name: string; ms: number }[] };
}

describe('neuronpatch repair: wall time, phases, caches, names', () => {
  it('reports its phases, reads guard set and lines before from the cache the second time, and rebuilds them for another reference set', async (t) => {
    if (!needsCli(t)) return;
    const io = inputs(12);
    const cache = path.join(io.dir, 'cache');
    const args = ['repair', '--model', demo.dir, '--prompt-file', io.prompt, '--desired', io.desired, '--method', 'keyed', '--regression', io.regression, '--json'];
    const first = await run(args, cache);
    assert.equal(first.code, 0, first.stderr);
    const a = JSON.parse(first.stdout) as Summary;
    assert.ok(a.success);
    const names = a.wall.phases.map((p) => p.name);
    for (const want of [/^loading the model$/, /^guard set: \d+ lines from 12 prompts, harvested \(not cached yet\)$/,
      /^regression lines before the repair: 12 prompts, decoded \(not cached yet\)$/, /^trace: /, /^solve \(keyed\)/, /^confirm: /,
      /^side-effect check: 12 prompts, \d+ guard lines$/]) {
      assert.ok(names.some((n) => want.test(n)), `a phase ${want} in ${JSON.stringify(names)}`);
    }
    const sum = a.wall.phases.reduce((s, p) => s + p.ms, 0);
    assert.ok(sum <= a.wall.ms + a.wall.phases.length && sum > 0.5 * a.wall.ms, `phases (${sum} ms) account for the wall time (${a.wall.ms} ms)`);
    // Keyed neurons are added ones: L<layer>.K<k>, numbered from 0 in this patch.
    assert.ok(a.neurons.length > 0);
    a.neurons.forEach((n, k) => assert.match(n.name, new RegExp(`^L${n.layer}\\.K${k}$`)));

    const second = await run(args, cache);
    assert.equal(second.code, 0, second.stderr);
    const b = JSON.parse(second.stdout) as Summary;
    const again = b.wall.phases.map((p) => p.name);
    assert.ok(again.some((n) => /^guard set: \d+ lines from 12 prompts, from the cache$/.test(n)), JSON.stringify(again));
    assert.ok(again.includes('regression lines before the repair: 12 prompts, from the cache'), JSON.stringify(again));

    // Another reference set: the guard set is harvested anew.
    const reference = path.join(io.dir, 'reference.jsonl');
    fs.writeFileSync(reference, fs.readFileSync(io.regression, 'utf8').split('\n').slice(0, 10).join('\n') + '\n');
    const third = await run([...args, '--reference', reference], cache);
    assert.equal(third.code, 0, third.stderr);
    const c = JSON.parse(third.stdout) as Summary;
    assert.ok(c.wall.phases.some((p) => /^guard set: \d+ lines from 10 prompts, harvested \(not cached yet\)$/.test(p.name)), JSON.stringify(c.wall.phases));
  });

  it('prints the wall time and the neurons by name in text mode; a minimal repair names edited neurons L<layer>.N<neuron>', async (t) => {
    if (!needsCli(t)) return;
    const io = inputs(6);
    const r = await run(['repair', '--model', demo.dir, '--prompt-file', io.prompt, '--desired', io.desired, '--method', 'minimal', '--regression', io.regression], path.join(io.dir, 'cache'));
    // Fixed (0) or not within the minimal budget (3): either way the neurons it edited are named.
    assert.ok(r.code === 0 || r.code === 3, r.stderr);
    assert.match(r.stdout, /^neurons (L\d+\.N\d+)(, L\d+\.N\d+)* for \d+ failing token/m);
    assert.match(r.stdout, /^wall time \d+\.\d+ s:$/m);
    assert.match(r.stdout, /^ +\d+\.\d+ s {2}side-effect check: 6 prompts, \d+ guard lines$/m);
    assert.doesNotMatch(r.stdout, /\b\d+\.\d+ \(added\)/, 'no bare layer.neuron numbers');
  });
});

describe('neuronpatch demo', () => {
  it('repairs with the keyed method by default, prints its phases, and writes the wall time into the report', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-demo');
    const io = inputs(12);
    const out = path.join(dir, 'out');
    const r = await run(['demo', '--model', demo.dir, '--regression', io.regression, '--out', out], path.join(dir, 'cache'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^── repair \(keyed\)$/m);
    assert.match(r.stdout, /^neurons L\d+\.K0(, L\d+\.K\d+)* for \d+ failing token/m);
    assert.match(r.stdout, /^ +\d+\.\d+ s {2}side-effect check: 12 prompts, \d+ guard lines$/m);
    assert.match(r.stdout, /^ +\d+\.\d+ s {2}guard set: \d+ lines from 12 prompts, harvested/m);
    const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    assert.match(report, /## Wall time\n\n```text\nwall time \d+\.\d+ s:\n/);
    assert.match(report, /by the keyed method/);
  });
});

describe('--prompt escapes', () => {
  it('--unescape reads \\n, \\t and \\\\; without it the text is taken as typed, with a hint; other escapes are refused', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-escapes');
    const cache = path.join(dir, 'cache');
    const file = path.join(dir, 'p.py');
    fs.writeFileSync(file, 'def add(a, b):\n\treturn');
    const gen = (extra: string[]) => run(['generate', '--model', demo.dir, '--max-new-tokens', '6', '--json', ...extra], cache);
    const fromFile = await gen(['--prompt-file', file]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    const unescaped = await gen(['--prompt', 'def add(a, b):\\n\\treturn', '--unescape']);
    assert.equal(unescaped.code, 0, unescaped.stderr);
    assert.equal(JSON.parse(unescaped.stdout).completion, JSON.parse(fromFile.stdout).completion, 'the same prompt as the file');
    assert.equal(unescaped.stderr, '');

    const typed = await gen(['--prompt', 'def add(a, b):\\n\\treturn']);
    assert.equal(typed.code, 0, typed.stderr);
    assert.match(typed.stderr, /--prompt holds "\\n" but no newline: it is read as typed.*--unescape/);

    const bad = await gen(['--prompt', 'x = "\\d"', '--unescape']);
    assert.equal(bad.code, 2, 'a usage error');
    // gen passes --json: the error is one JSON object on stderr.
    assert.match((JSON.parse(bad.stderr) as { error: { message: string } }).error.message, /--prompt has "\\\\d", which --unescape does not read/);

    const help = await run(['--help'], cache);
    assert.match(help.stdout, /--unescape,\s+which reads \\n, \\t and \\\\ in --prompt and --desired/);
    assert.match(help.stdout, /\$'\.\.\.' quoting/);
  });
});

describe('neuron names', () => {
  it('are L<layer>.N<neuron> for existing neurons and L<layer>.K<k> for added ones, everywhere', () => {
    assert.equal(neuronName({ layer: 3, neuron: 280 }, 512), 'L3.N280');
    assert.equal(neuronName({ layer: 4, neuron: 512, added: true }, 512), 'L4.K0');
    assert.equal(neuronName({ layer: 4, neuron: 515, added: true }, 512), 'L4.K3');
    assert.deepEqual(patchNeuronNames({ edits: [{ layer: 1, neuron: 3 }], added: [{ layer: 4 }, { layer: 5 }, { layer: 4 }] }), ['L1.N3', 'L4.K0', 'L5.K0', 'L4.K1']);
  });
});

describe('phases and progress', () => {
  /** A clock the test moves, and a stream that records what is written. */
  function harness(tty: boolean) {
    let now = 0;
    const out: string[] = [];
    const p = new Phases({ write: (s: string) => out.push(s), isTTY: tty }, 2000, () => now);
    return { p, out, advance: (ms: number) => (now += ms) };
  }

  it('time each phase; a phase past 2 s is announced and ended on stderr in a log, redrawn in place on a terminal', () => {
    const log = harness(false);
    log.p.enter('loading the model');
    log.advance(500);
    log.p.enter('side-effect check: 240 prompts, 82 guard lines');
    log.advance(2500);
    log.p.tick(10, 240);
    log.p.tick(20, 240);
    log.advance(500);
    log.p.end();
    assert.deepEqual(log.out, ['neuronpatch: side-effect check: 240 prompts, 82 guard lines…\n', 'neuronpatch: side-effect check: 240 prompts, 82 guard lines: 3.0 s\n'],
      'nothing for the short phase; one line when the long one passes 2 s and one when it ends');
    assert.deepEqual(log.p.times(), { totalMs: 3500, phases: [{ name: 'loading the model', ms: 500 }, { name: 'side-effect check: 240 prompts, 82 guard lines', ms: 3000 }] });
    assert.equal(log.p.text(), 'wall time 3.5 s:\n     0.5 s  loading the model\n     3.0 s  side-effect check: 240 prompts, 82 guard lines\n');

    const term = harness(true);
    term.p.enter('guard set');
    term.advance(3000);
    term.p.tick(8, 240);
    term.p.say('neuronpatch: a warning\n');
    term.p.end();
    assert.deepEqual(term.out, [
      '\r\x1b[2Kneuronpatch: guard set 8/240 … 3 s', '\r\x1b[2K', 'neuronpatch: a warning\n', '\r\x1b[2Kneuronpatch: guard set 8/240 … 3 s', '\r\x1b[2K',
      'neuronpatch: guard set: 3.0 s\n',
    ]);
  });

  it('name the engine repair phases in plain words', () => {
    assert.equal(phaseOfRepairLine('tracing the neurons behind the completion'), 'trace: the neurons behind the completion');
    assert.equal(phaseOfRepairLine('solving (keyed) for 8 failing token(s)'), 'solve (keyed): 8 failing token(s)');
    assert.equal(phaseOfRepairLine('confirming by greedy generation'), 'confirm: greedy generation with the patch');
    assert.equal(phaseOfRepairLine('measuring side effects on 240 regression prompts and 82 guard lines'), 'side-effect check: 240 prompts, 82 guard lines');
    assert.equal(phaseOfRepairLine('keyed round 1: 5 weak position(s)'), undefined, 'a solver round stays in its phase');
  });
});
