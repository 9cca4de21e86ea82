// The instrumented-graph cache (issue 17, section 3): every entry is verified against the model it claims and
// rebuilt when it does not match or does not load; a bad cache location is a clear error.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { loadModel, NeuronpatchError } from '../../src/engine';
import { entry, skipIfAbsent, tempDir } from '../helpers/models';

const demo = entry('demo');

/** Loads `dir` with cache `cacheDir`; returns the log lines that say why the entry was (re)built, and the model's facts. */
async function load(dir: string, cacheDir: string): Promise<{ built: string[]; layers: number; width: number; completion: string; entry: string }> {
  const lines: string[] = [];
  const m = await loadModel(dir, { cacheDir, log: (l) => lines.push(l) });
  try {
    const c = await m.generate('import os\n\ndef main(', { maxNewTokens: 6 });
    return { built: lines.filter((l) => l.startsWith('instrumenting')), layers: m.info.layers, width: m.info.width, completion: c.completion, entry: m.loaded.cacheDir };
  } finally {
    await m.dispose();
  }
}

function skipWithout(t: TestContext, ...names: string[]): boolean {
  return names.some((n) => skipIfAbsent(t, entry(n)));
}

describe('instrumented-graph cache', () => {
  it('a damaged entry is rebuilt, never trusted and never a stack trace', async (t) => {
    if (skipWithout(t, 'demo')) return;
    const cache = tempDir('cache');
    const first = await load(demo.dir, cache);
    assert.equal(first.built.length, 1, 'built on first use');
    const again = await load(demo.dir, cache);
    assert.deepEqual(again.built, [], 'reused when intact');
    const meta = path.join(first.entry, 'instrumented.json');
    const graph = path.join(first.entry, 'model.instrumented.onnx');
    const good = fs.readFileSync(meta, 'utf8');
    const damage: [string, () => void, RegExp][] = [
      ['truncated instrumented.json', () => fs.writeFileSync(meta, good.slice(0, good.length >> 1)), /does not parse/],
      ['empty instrumented.json', () => fs.writeFileSync(meta, ''), /does not parse/],
      ['garbage instrumented.json', () => fs.writeFileSync(meta, '\u0000\u00ffgarbage'), /does not parse/],
      ['instrumented.json without a graph', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(good), graph: undefined })), /no graph description/],
      ['instrumented.json of another format version', () => fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(good), version: 1 })), /format version 1/],
      ['instrumented.json nested 10,000 deep', () => fs.writeFileSync(meta, `${'['.repeat(10_000)}${']'.repeat(10_000)}`), /nests too deep/],
      ['a corrupt cached graph', () => {
        const b = fs.readFileSync(graph);
        b.fill(0x41, b.length >> 2, (b.length >> 2) + 4096);
        fs.writeFileSync(graph, b);
      }, /does not match its recorded sha256/],
      ['a truncated cached graph', () => fs.truncateSync(graph, 1000), /bytes, \d+ were written/],
      ['a missing cached graph', () => fs.rmSync(graph), /is missing/],
    ];
    for (const [what, harm, why] of damage) {
      harm();
      const r = await load(demo.dir, cache);
      assert.equal(r.built.length, 1, `${what}: rebuilt`);
      assert.match(r.built[0], why, what);
      assert.equal(r.completion, first.completion, `${what}: the same completion after the rebuild`);
      assert.deepEqual((await load(demo.dir, cache)).built, [], `${what}: the rebuilt entry is reused`);
    }
  });

  it('a cached graph that passes the checks but does not load is rebuilt once', async (t) => {
    if (skipWithout(t, 'demo')) return;
    const cache = tempDir('cache');
    const first = await load(demo.dir, cache);
    const meta = path.join(first.entry, 'instrumented.json');
    const graph = path.join(first.entry, 'model.instrumented.onnx');
    // Garbage whose size and sha256 are recorded as if it had been written so.
    const junk = Buffer.from('not an onnx model at all');
    fs.writeFileSync(graph, junk);
    const m = JSON.parse(fs.readFileSync(meta, 'utf8'));
    m.graphBytes = junk.length;
    m.graphSha256 = (await import('node:crypto')).createHash('sha256').update(junk).digest('hex');
    fs.writeFileSync(meta, JSON.stringify(m));
    const r = await load(demo.dir, cache);
    assert.equal(r.built.length, 1);
    assert.match(r.built[0], /the cached graph did not load/);
    assert.equal(r.completion, first.completion);
  });

  it("another model's entry placed under this model's key is rebuilt: info and completions are this model's", async (t) => {
    if (skipWithout(t, 'demo', 'demo-gpt2')) return;
    const gpt2 = entry('demo-gpt2');
    const cache = tempDir('cache');
    const mine = await load(demo.dir, cache);
    const theirs = await load(gpt2.dir, cache);
    for (const f of ['instrumented.json', 'model.instrumented.onnx']) fs.copyFileSync(path.join(theirs.entry, f), path.join(mine.entry, f));
    const r = await load(demo.dir, cache);
    assert.match(r.built[0] ?? '', /another model/);
    assert.deepEqual([r.layers, r.width, r.completion], [mine.layers, mine.width, mine.completion]);
    // Their metadata with our hash (a copy edited to match the key): the graph description gives it away.
    const meta = JSON.parse(fs.readFileSync(path.join(theirs.entry, 'instrumented.json'), 'utf8'));
    const ours = JSON.parse(fs.readFileSync(path.join(mine.entry, 'instrumented.json'), 'utf8'));
    fs.writeFileSync(path.join(mine.entry, 'instrumented.json'), JSON.stringify({ ...meta, hash: ours.hash }));
    fs.copyFileSync(path.join(theirs.entry, 'model.instrumented.onnx'), path.join(mine.entry, 'model.instrumented.onnx'));
    const r2 = await load(demo.dir, cache);
    assert.match(r2.built[0] ?? '', /describes another graph/);
    assert.equal(r2.completion, mine.completion);
  });

  it('NEURONPATCH_CACHE at a file, under a file, or under /proc: a clear error, at once', async (t) => {
    if (skipWithout(t, 'demo')) return;
    const dir = tempDir('badcache');
    const file = path.join(dir, 'a-file');
    fs.writeFileSync(file, 'x');
    const saved = process.env.NEURONPATCH_CACHE;
    try {
      for (const [where, pattern] of [
        [file, /NEURONPATCH_CACHE .* is a file, not a folder/],
        [path.join(file, 'sub', 'dir'), /NEURONPATCH_CACHE .* is under .*a-file, which is a file/],
        ['/proc/self/neuronpatch', /under \/proc, a kernel file system/],
        ['/proc', /under \/proc/],
      ] as const) {
        process.env.NEURONPATCH_CACHE = where;
        const t0 = Date.now();
        await assert.rejects(loadModel(demo.dir), (e: Error) => e instanceof NeuronpatchError && pattern.test(e.message) && /Point NEURONPATCH_CACHE at a writable folder/.test(e.message));
        assert.ok(Date.now() - t0 < 10_000, `${where}: ${Date.now() - t0} ms`);
      }
    } finally {
      if (saved === undefined) delete process.env.NEURONPATCH_CACHE;
      else process.env.NEURONPATCH_CACHE = saved;
    }
  });

  it('a model folder whose weights are symlinks into a hub cache: the entry holds no link that can dangle', async (t) => {
    const e = entry('ortgenai-tiny-llama-fp16');
    if (skipWithout(t, e.name)) return;
    // The layout of a Hugging Face hub cache: snapshots/<rev>/file → ../../blobs/<sha>.
    const hub = tempDir('hub');
    const blobs = path.join(hub, 'blobs');
    const snap = path.join(hub, 'snapshots', 'rev1');
    fs.mkdirSync(blobs, { recursive: true });
    fs.mkdirSync(snap, { recursive: true });
    for (const f of fs.readdirSync(e.dir)) {
      const blob = path.join(blobs, `blob-${f}`);
      fs.copyFileSync(path.join(e.dir, f), blob);
      if (f === 'model.onnx.data') fs.symlinkSync(path.relative(snap, blob), path.join(snap, f));
      else fs.copyFileSync(blob, path.join(snap, f));
    }
    const cache = tempDir('cache');
    const r = await load(snap, cache);
    const links = fs.readdirSync(r.entry).filter((f) => fs.lstatSync(path.join(r.entry, f)).isSymbolicLink());
    assert.deepEqual(links, [], 'no symlink in the cache entry');
    // The hub's snapshot goes away (a cache clean): the entry still loads on its own files.
    const data = fs.readFileSync(path.join(r.entry, 'model.onnx.data'));
    assert.ok(data.length > 0);
    assert.deepEqual((await load(snap, cache)).built, []);
  });
});
