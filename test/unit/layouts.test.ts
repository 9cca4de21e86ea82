// Folder layouts people have: the Hugging Face hub cache (snapshots/<rev>/ files are relative links into
// ../../blobs/), and exported folders that other users and tools must be able to read.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { loadModel, repair } from '../../src/engine';
import { exportPatched } from '../../src/engine/export/export';
import { loadModelProto, onnx, saveModelProto } from '../../src/engine/onnx/proto';
import { entry, modelOf, present, releaseAll, root, sharedFixtures, tempDir } from '../helpers/models';

after(releaseAll);

/** A copy of a model folder whose large initializers live in `model.onnx.data` beside `model.onnx`. */
async function withExternalData(src: string, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(src)) if (!f.endsWith('.onnx') && fs.statSync(path.join(src, f)).isFile()) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  const model = await loadModelProto(path.join(src, 'model.onnx'));
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const t of model.graph?.initializer ?? []) {
    const raw = t.rawData;
    if (!raw || raw.length < 1024) continue;
    chunks.push(Buffer.from(raw));
    t.externalData = [{ key: 'location', value: 'model.onnx.data' }, { key: 'offset', value: String(offset) }, { key: 'length', value: String(raw.length) }];
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.rawData = new Uint8Array(0);
    offset += raw.length;
  }
  assert.ok(chunks.length > 0, 'some weights moved to external data');
  fs.writeFileSync(path.join(dir, 'model.onnx.data'), Buffer.concat(chunks));
  await saveModelProto(model, path.join(dir, 'model.onnx'));
}

/** The hub cache's layout of a folder: blobs named by their hash, snapshots/<rev>/ of relative links to them. */
function hubCache(folder: string, hub: string): string {
  const snapshot = path.join(hub, 'snapshots', '0123abcd');
  fs.mkdirSync(path.join(hub, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const f of fs.readdirSync(folder)) {
    const bytes = fs.readFileSync(path.join(folder, f));
    const blob = createHash('sha256').update(bytes).digest('hex');
    fs.writeFileSync(path.join(hub, 'blobs', blob), bytes);
    fs.symlinkSync(path.join('..', '..', 'blobs', blob), path.join(snapshot, f));
  }
  return snapshot;
}

/** Every symbolic link under a folder. */
function links(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => fs.lstatSync(path.join(dir, f)).isSymbolicLink());
}

for (const [name, source] of [
  ['demo (external data written here)', async (dir: string) => withExternalData(path.join(root, 'models', 'demo'), dir)],
  ['ortgenai-tiny-llama-fp16', async (dir: string) => fs.cpSync(path.join(sharedFixtures, 'ortgenai-tiny-llama-fp16'), dir, { recursive: true })],
] as const) {
  const skip = name.startsWith('demo') ? !present(entry('demo')) && 'models/demo is absent'
    : !fs.existsSync(path.join(sharedFixtures, 'ortgenai-tiny-llama-fp16')) && '../shared/fixtures is absent';
  test(`hub-cache folder of ${name}: loads through real paths, the cache holds no link, the plain folder still loads`, { skip }, async (t) => {
    const tmp = tempDir('hub');
    const plain = path.join(tmp, 'plain');
    await source(plain);
    const snapshot = hubCache(plain, path.join(tmp, 'hub', 'models--someone--tiny'));
    assert.ok(fs.lstatSync(path.join(snapshot, 'model.onnx')).isSymbolicLink());
    const cacheDir = path.join(tmp, 'cache');
    const prompt = 'def add(a, b):\n    return';
    const viaHub = await loadModel(snapshot, { cacheDir });
    const a = await viaHub.generate(prompt, { heal: false, maxNewTokens: 8 });
    await viaHub.dispose();
    assert.deepEqual(links(cacheDir), [], 'the instrumented-graph cache holds files, not links into a hub folder');
    // The same model through its ordinary folder reads the same cache entry.
    const viaFolder = await loadModel(plain, { cacheDir });
    const b = await viaFolder.generate(prompt, { heal: false, maxNewTokens: 8 });
    await viaFolder.dispose();
    assert.deepEqual(b.tokens.map((x) => x.id), a.tokens.map((x) => x.id));
    t.diagnostic(`${name}: ${JSON.stringify(a.completion)} through the hub layout and the plain folder`);
  });
}

test('an exported folder gets the umask\'s normal mode, not mkdtemp\'s 0700', { skip: !present(entry('demo')) && 'models/demo is absent' }, async (t) => {
  const m = (await modelOf(t, entry('demo')))!;
  const c = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'cases', 'dev.jsonl'), 'utf8').split('\n')[0]) as { prompt: string; desired: string };
  const r = await repair(m, c, { method: 'minimal', analyse: false });
  assert.ok(r.success);
  const out = path.join(tempDir('export-mode'), 'patched');
  const previous = process.umask(0o022);
  try {
    await exportPatched({ sourceFolder: m.info.folder, onnxPath: m.loaded.onnxPath, graph: m.loaded.graph, patches: [r.patch], outDir: out });
  } finally {
    process.umask(previous);
  }
  assert.equal(fs.statSync(out).mode & 0o777, 0o755, `drwxr-xr-x under umask 022, got ${(fs.statSync(out).mode & 0o777).toString(8)}`);
  for (const f of fs.readdirSync(out)) assert.ok(fs.statSync(path.join(out, f)).mode & 0o004, `${f} is readable by others`);
});
