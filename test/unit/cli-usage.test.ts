// The CLI as a fresh user meets it when something is wrong (a fresh-user try, 30 Nov): usage errors in one line
// with exit code 2 and "did you mean"; every numeric option checked the same way; a missing input file named with
// its option and path; --json errors as one JSON object; patch files that are not patch files said so; repair's
// default method (keyed where reference code is given, else minimal, said on stderr) and side effects said to be
// unmeasured without --regression; stacked keyed neurons named alike in repair and an export's PATCHES.md;
// export --quantized requantize refused on a float model. Through the built dist/cli.js on the real demo model.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { patchNeuronNames } from '../../src/engine/neuronName';
import { closest } from '../../src/cli/errors';
import { type CliRun as Run, needsCli, runCli as run } from '../helpers/cli';
import { entry, root, tempDir } from '../helpers/models';

const demo = entry('demo');

/** Dev case `i` (a real failure of the demo model) as a prompt file, and the first `n` regression prompts. */
function devCase(dir: string, i: number): { prompt: string; desired: string } {
  const c = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[i]) as { prompt: string; desired: string };
  const prompt = path.join(dir, `prompt-${i}.py`);
  fs.writeFileSync(prompt, c.prompt);
  return { prompt, desired: c.desired };
}

function regressionFile(dir: string, n: number): string {
  const file = path.join(dir, 'regression.jsonl');
  const lines = fs.readFileSync(path.join(root, 'bench', 'cases', 'regression.jsonl'), 'utf8').split('\n').filter(Boolean);
  fs.writeFileSync(file, lines.slice(0, n).join('\n') + '\n');
  return file;
}

/** A usage error: exit code 2, one line on stderr (plus at most a hint line), no usage dump, nothing on stdout. */
function usageError(r: Run, pattern: RegExp, what: string): void {
  assert.equal(r.code, 2, `${what}: exit code 2 (usage), got ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, pattern, what);
  assert.equal(r.stdout, '', `${what}: nothing on stdout`);
  assert.ok(r.stderr.trimEnd().split('\n').length <= 2, `${what}: one line and a hint at most, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /^usage:|ambiguous|ERR_PARSE_ARGS|\n\s+at /m, `${what}: no usage dump, no parseArgs text, no stack`);
}

describe('neuronpatch usage errors (exit code 2)', () => {
  it('a negative or malformed number names the option, the value and what is accepted, for every numeric option', async (t) => {
    if (!needsCli(t)) return;
    const r = await run(['generate', '--prompt', 'x', '--max-new-tokens', '-3']);
    usageError(r, /^neuronpatch: --max-new-tokens must be a positive integer \(1, 2, 3, …\), got "-3"\.\n$/, '--max-new-tokens -3');
    const cases: [string[], RegExp][] = [
      [['generate', '--prompt', 'x', '--max-new-tokens', '0'], /--max-new-tokens must be a positive integer .*got "0"/],
      [['generate', '--prompt', 'x', '--max-new-tokens=2.5'], /--max-new-tokens must be a positive integer .*got "2\.5"/],
      [['generate', '--prompt', 'x', '--temperature', '-1'], /--temperature must be a number of 0 or more .*got "-1"/],
      [['generate', '--prompt', 'x', '--top-p', '1.5'], /--top-p must be a number above 0 and at most 1, got "1\.5"/],
      [['generate', '--prompt', 'x', '--seed', '-1'], /--seed must be an integer of 0 or more, got "-1"/],
      [['generate', '--prompt', 'x', '--threads', 'four'], /--threads must be a positive integer .*got "four"/],
      [['trace', '--prompt', 'x', '--desired', 'y', '--top', '-5'], /--top must be a positive integer .*got "-5"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--margin', '-2'], /--margin must be a number of logits above 0 and at most 10 .*got "-2"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--margin', '2x'], /--margin must be .*got "2x"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--key-margin', '1'], /--key-margin must be a number between 0 and 1 .*got "1"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--keyed-layer', '-1'], /--keyed-layer must be an integer of 0 or more, got "-1"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--regression-limit', '0'], /--regression-limit must be a positive integer .*got "0"/],
      [['repair', '--prompt', 'x', '--desired', 'y', '--guard-max', '1e3'], /--guard-max must be a positive integer .*got "1e3"/],
      [['eval', '--cases', 'c.jsonl', '--limit', '-1'], /--limit must be a positive integer .*got "-1"/],
      [['guard', '--from', 'p.jsonl', '--max', '-2'], /--max must be a positive integer .*got "-2"/],
      [['demo', '--regression-limit', '-4'], /--regression-limit must be a positive integer .*got "-4"/],
    ];
    for (const [args, pattern] of cases) usageError(await run(args), pattern, args.join(' '));
  });

  it('--keyed-layer is checked against the model\'s layers before any work', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-layer');
    const c = devCase(dir, 0);
    const r = await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired, '--regression', regressionFile(dir, 4), '--keyed-layer', '99']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--keyed-layer must be an integer from 0 to \d+, got "99"\./);
  });

  it('an unknown option or command exits 2 with "did you mean" where one is close, and none where none is', async (t) => {
    if (!needsCli(t)) return;
    usageError(await run(['generate', '--prompt', 'x', '--max-tokens', '3']), /^neuronpatch: generate: unknown option "--max-tokens"; did you mean --max-new-tokens\?\n {2}neuronpatch generate --help lists its options\.\n$/, '--max-tokens');
    usageError(await run(['repair', '--prompt', 'x', '--desired', 'y', '--regresion', 'r.jsonl']), /unknown option "--regresion"; did you mean --regression\?/, '--regresion');
    usageError(await run(['info', '--jsn']), /unknown option "--jsn"; did you mean --json\?/, '--jsn');
    const far = await run(['info', '--zzzzzz']);
    usageError(far, /unknown option "--zzzzzz"\.\n/, '--zzzzzz');
    assert.doesNotMatch(far.stderr, /did you mean/);
    usageError(await run(['genrate', '--prompt', 'x']), /^neuronpatch: unknown command "genrate"; did you mean generate\?\n {2}The commands are info, generate/, 'genrate');
    usageError(await run(['generate', 'stray']), /generate: unexpected argument "stray": generate takes options only/, 'a positional argument');
    usageError(await run(['generate', '--prompt']), /generate: --prompt needs a value\./, 'a missing value');
    usageError(await run(['repair', '--prompt', 'x', '--desired', 'y', '--method', 'keyd']), /--method must be keyed, minimal or joint, got "keyd"; did you mean keyed\?/, '--method keyd');
    usageError(await run(['generate', '--prompt', 'x', '--dtype', 'fp17']), /--dtype must be one of auto, fp32, .*got "fp17"; did you mean fp16\?/, '--dtype fp17');
    const help = await run(['generate', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: neuronpatch generate .*--max-new-tokens N/s);
    assert.match(help.stdout, /Exit codes: 0 done; 1 .*2 the command line is wrong/s);
  });
});

describe('neuronpatch input errors (exit code 1)', () => {
  it('a missing input file is named with its option and its path (quoted, cut), with what to do', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-missing');
    const r = await run(['generate', '--prompt-file', 'nope/prompt.py'], { cwd: dir });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, `neuronpatch: --prompt-file: no such file: "nope/prompt.py" (read from the current folder, ${JSON.stringify(fs.realpathSync(dir))}).\n`
      + '  Check the path and the spelling; --prompt-file takes an existing file: the prompt as plain text (or give it with --prompt TEXT).\n');
    for (const [args, option] of [
      [['generate', '--prompts', 'nope.jsonl'], '--prompts'], [['generate', '--prompt', 'x', '--patches', 'nope.json'], '--patches'],
      [['trace', '--prompt-file', 'nope.py', '--desired', 'y'], '--prompt-file'], [['eval', '--cases', 'nope.jsonl'], '--cases'],
      [['repair', '--prompt', 'x', '--desired', 'y', '--regression', 'nope.jsonl'], '--regression'],
      [['repair', '--prompt', 'x', '--desired', 'y', '--guard', 'nope.jsonl'], '--guard'],
      [['guard', '--from', 'nope.jsonl'], '--from'], [['export', '--patches', 'nope.json', '--out', 'x'], '--patches'],
    ] as const) {
      const m = await run([...args], { cwd: dir });
      assert.equal(m.code, 1, `${args.join(' ')}: ${m.stderr}`);
      assert.match(m.stderr, new RegExp(`^neuronpatch: ${option}: no such file: "nope\\.`), args.join(' '));
      assert.doesNotMatch(m.stderr, /ENOENT/);
      assert.match(m.stderr, new RegExp(`\n {2}Check the path and the spelling; ${option} takes an existing file: `), `${args.join(' ')}: what the file holds`);
    }
    const long = `${'d'.repeat(100)}/`.repeat(4) + 'p.py';
    const cut = await run(['generate', '--prompt-file', long], { cwd: dir });
    assert.match(cut.stderr, new RegExp(`--prompt-file: no such file: "d{100}/d{59}… \\(${long.length} characters in all\\)"`));
    const folder = await run(['generate', '--prompt-file', dir]);
    assert.match(folder.stderr, /--prompt-file: ".*" is a folder, not a file\./);
    const model = await run(['info', '--model', 'nope-model'], { cwd: dir });
    assert.equal(model.code, 1);
    assert.match(model.stderr, /^neuronpatch: --model: no such folder: "nope-model" .*\n {2}Give a model folder/);
  });

  it('with --json every error is one JSON object on stderr, stdout stays empty, and the exit code is the same', async (t) => {
    if (!needsCli(t)) return;
    const cases: [string[], string, number, RegExp][] = [
      [['info', '--json', '--model', 'nope-model'], 'input', 1, /^--model: no such folder: "nope-model"/],
      [['info', '--json', '--jsn'], 'usage', 2, /unknown option "--jsn"; did you mean --json\?/],
      [['generate', '--json', '--prompt', 'x', '--max-new-tokens', '-3'], 'usage', 2, /^--max-new-tokens must be a positive integer/],
      [['genrate', '--json'], 'usage', 2, /unknown command "genrate"; did you mean generate\?/],
      [['generate', '--json', '--prompt', 'x', '--patches', 'nope.json'], 'input', 1, /^--patches: no such file/],
    ];
    for (const [args, kind, code, message] of cases) {
      const r = await run(args, { cwd: tempDir('cli-usage-json') });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '', args.join(' '));
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      const e = JSON.parse(lines[0]) as { error: { kind: string; message: string; hint?: string; exitCode: number } };
      assert.equal(e.error.kind, kind);
      assert.equal(e.error.exitCode, code);
      assert.match(e.error.message, message);
      assert.doesNotMatch(e.error.message, /\n {2}/, 'the hint is its own field');
    }
  });

  it('a file given as patches that is not a patch file: what it lacks, what a patch file looks like, nothing about writing', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-patchfile');
    const empty = path.join(dir, 'empty.json');
    fs.writeFileSync(empty, '{}\n');
    const r = await run(['generate', '--model', demo.dir, '--prompt', 'x', '--patches', empty]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /empty\.json is not a neuronpatch patch file; it was left untouched:\n {2}- format: missing \(it is an empty object \{\}; a patch file has "format", "model" and "patches"\)/);
    assert.match(r.stderr, /A patch file is JSON like \{"format": "neuronpatch\/2", "model": \{"name": "…", "hash": "…"\}, "patches": \[/);
    assert.doesNotMatch(r.stderr, /undefined/);

    const other = path.join(dir, 'package.json');
    fs.writeFileSync(other, JSON.stringify({ name: 'x', version: '1.0.0', ['\u001b[2Jevil'.repeat(20)]: 1 }));
    const o = await run(['generate', '--model', demo.dir, '--prompt', 'x', '--patches', other]);
    assert.equal(o.code, 1);
    assert.match(o.stderr, /format: missing \(its top level has "name", "version", "\\u001b\[2Jevil.*…/);
    assert.doesNotMatch(o.stderr, /\u001b/);

    const text = path.join(dir, 'notes.txt');
    fs.writeFileSync(text, 'hello\n');
    const n = await run(['generate', '--model', demo.dir, '--prompt', 'x', '--patches', text]);
    assert.equal(n.code, 1);
    assert.match(n.stderr, /notes\.txt:1:1: not valid JSON \(.*\), so not a patch file\.\n {2}Pass a patch file instead\. A patch file is JSON like/);
    assert.doesNotMatch(n.stderr, /write over|left untouched/, 'reading, not writing');
    assert.equal(fs.readFileSync(text, 'utf8'), 'hello\n');
  });
});

describe('neuronpatch repair: the default method and unmeasured side effects', () => {
  it('without reference code: minimal, said on stderr, and "side effects not measured" naming --regression; keyed asked for is refused', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-default');
    const c = devCase(dir, 0);
    const r = await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired]);
    assert.ok(r.code === 0 || r.code === 3, r.stderr);
    assert.match(r.stderr, /no reference code given \(--regression, --reference or --guard FILE\): the default method, keyed, needs some .* so this repair uses the minimal method, and its side effects are not measured\. Pass --regression FILE/);
    assert.match(r.stdout, /^(fixed|NOT fixed) \(minimal, margin 2\)/m);
    assert.match(r.stdout, /^side effects not measured: no regression prompts were given, so specificity, token locality and held-out loss are unknown\. Pass --regression FILE/m);
    assert.doesNotMatch(r.stdout, /specificity n\/a/);
    const j = await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired, '--json']);
    const s = JSON.parse(j.stdout) as { method: string; sideEffectsMeasured: boolean; specificity: number | null };
    assert.deepEqual([s.method, s.sideEffectsMeasured, s.specificity], ['minimal', false, null]);
    usageError(await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired, '--method', 'keyed']),
      /^neuronpatch: --method keyed needs reference code: .*\n {2}Pass --regression FILE/, '--method keyed without reference code');
    // eval follows the same default.
    const cases = path.join(dir, 'cases.jsonl');
    fs.writeFileSync(cases, fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[0] + '\n');
    const ev = await run(['eval', '--model', demo.dir, '--cases', cases, '--json']);
    assert.equal(ev.code, 0, ev.stderr);
    assert.equal((JSON.parse(ev.stdout) as { method: string }).method, 'minimal');
    assert.match(ev.stderr, /no reference code given .* so eval uses the minimal method/);
    // Guard lines are reference code: keyed by default, the kept lines measured, the rest said to be unmeasured.
    const guard = path.join(dir, 'guard.jsonl');
    assert.equal((await run(['guard', '--model', demo.dir, '--from', regressionFile(dir, 8), '--out', guard])).code, 0);
    const g = await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired, '--guard', guard]);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /^fixed \(keyed, margin 2\)/m);
    assert.match(g.stdout, /^side effects: keeps \d+\/\d+ lines the model had right\nnot measured: specificity, token locality and held-out loss, since no regression prompts were given\. Pass --regression FILE/m);
    assert.doesNotMatch(g.stderr, /no reference code/);
  });

  it('with --regression the default is keyed, and stacked keyed neurons have the same names in repair, trace and an export\'s PATCHES.md', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-stack');
    const cache = path.join(dir, 'cache');
    const regression = regressionFile(dir, 8);
    const out = path.join(dir, 'patches.json');
    interface Summary { success: boolean; method: string; neurons: { layer: number; neuron: number; name: string }[] }
    const first = devCase(dir, 0);
    const a = await run(['repair', '--model', demo.dir, '--prompt-file', first.prompt, '--desired', first.desired, '--regression', regression, '--out', out, '--json'], { cache });
    assert.equal(a.code, 0, a.stderr);
    const ra = JSON.parse(a.stdout) as Summary;
    assert.equal(ra.method, 'keyed', 'the default method with reference code');
    assert.doesNotMatch(a.stderr, /no reference code/);
    const layer = ra.neurons[0].layer;
    // The second repair on the same layer: its neurons are that layer's next ones in the stack.
    let rb: Summary | undefined;
    for (const i of [1, 2, 3, 4]) {
      const second = devCase(dir, i);
      const b = await run(['repair', '--model', demo.dir, '--prompt-file', second.prompt, '--desired', second.desired, '--regression', regression, '--out', out,
        '--keyed-layer', String(layer), '--json'], { cache });
      if (b.code !== 0) continue;
      rb = JSON.parse(b.stdout) as Summary;
      break;
    }
    assert.ok(rb, 'one of dev cases 2-5 is fixed on top of the first');
    const namesA = ra.neurons.map((n) => n.name);
    const namesB = rb.neurons.map((n) => n.name);
    assert.deepEqual(namesA, ra.neurons.map((_, k) => `L${layer}.K${k}`));
    assert.deepEqual(namesB, rb.neurons.map((_, k) => `L${layer}.K${namesA.length + k}`), 'numbered on from the first patch');

    const exported = path.join(dir, 'exported');
    const e = await run(['export', '--model', demo.dir, '--patches', out, '--out', exported], { cache });
    assert.equal(e.code, 0, e.stderr);
    const md = fs.readFileSync(path.join(exported, 'PATCHES.md'), 'utf8');
    const listed = [...md.matchAll(/; neurons: (.*)$/gm)].map((m) => m[1].split(', '));
    assert.deepEqual(listed, [namesA, namesB], 'PATCHES.md names each patch\'s neurons as repair printed them');
    assert.match(md, /added neuron `Lℓ\.Kk` is the k-th neuron added to layer ℓ, counted over the patches in the order listed/);

  });
});

describe('neuronpatch export --quantized', () => {
  it('requantize on a float model is refused before anything is written; without it the export goes ahead', async (t) => {
    if (!needsCli(t)) return;
    const dir = tempDir('cli-usage-requantize');
    const c = devCase(dir, 0);
    const patches = path.join(dir, 'p.json');
    const r = await run(['repair', '--model', demo.dir, '--prompt-file', c.prompt, '--desired', c.desired, '--method', 'minimal', '--out', patches]);
    assert.equal(r.code, 0, r.stderr);
    const out = path.join(dir, 'exported');
    const q = await run(['export', '--model', demo.dir, '--patches', patches, '--out', out, '--quantized', 'requantize']);
    usageError(q, /^neuronpatch: --quantized requantize only applies to a quantized model, and "demo" stores its FFN output weights as float32: there is nothing to re-quantize\.\n {2}Leave out --quantized/, 'requantize on fp32');
    assert.ok(!fs.existsSync(out), 'nothing written');
    // An output folder that cannot be made: the path and the reason in words, no stack trace.
    const blocked = await run(['export', '--model', demo.dir, '--patches', patches, '--out', path.join(patches, 'sub')]);
    assert.equal(blocked.code, 1);
    assert.match(blocked.stderr, /^neuronpatch: cannot write ".*p\.json": a file is in the way of a folder needed there \(EEXIST, mkdir\)\.\n {2}Check the path/);
    assert.doesNotMatch(blocked.stderr, /unexpected error|\n\s+at /);
    const plain = await run(['export', '--model', demo.dir, '--patches', patches, '--out', out]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(fs.existsSync(path.join(out, 'PATCHES.md')));
  });
});

describe('did you mean', () => {
  it('suggests a close option or command, a word left out, and nothing far', () => {
    assert.equal(closest('max-tokens', ['max-new-tokens', 'model', 'json']), 'max-new-tokens');
    assert.equal(closest('regresion', ['regression', 'reference']), 'regression');
    assert.equal(closest('genrate', ['info', 'generate', 'guard']), 'generate');
    assert.equal(closest('zzzzzz', ['info', 'generate', 'guard']), undefined);
    assert.equal(closest('x', ['json', 'model']), undefined);
  });

  it('stacked added neurons are numbered on from the enabled patches before them', () => {
    const one = { edits: [], added: [{ layer: 4 }, { layer: 4 }] };
    assert.deepEqual(patchNeuronNames({ edits: [{ layer: 1, neuron: 3 }], added: [{ layer: 4 }, { layer: 5 }] }, [one]), ['L1.N3', 'L4.K2', 'L5.K0']);
    assert.deepEqual(patchNeuronNames({ edits: [], added: [{ layer: 4 }] }, [{ ...one, enabled: false }]), ['L4.K0'], 'a disabled patch is not applied');
  });
});
