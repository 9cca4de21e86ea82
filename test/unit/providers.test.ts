// neuronpatch.executionProvider: the CPU path, and the fallback to the CPU with a clear message where the provider
// asked for is not shipped for this platform (DirectML off Windows, Core ML off macOS, CUDA without its libraries)
// or fails to start (WebGPU without an adapter). The GPU providers themselves cannot run on these machines.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadModel, type Model } from '../../src/engine';
import { availableProviders, type ExecutionProvider, sessionOptions } from '../../src/engine/model/session';
import { entry, present, testCacheDir } from '../helpers/models';

const demo = entry('demo');
const skip = present(demo) ? undefined : 'the demo model is absent';
const open: Model[] = [];
after(async () => {
  for (const m of open) await m.dispose();
});

async function load(ep: ExecutionProvider): Promise<{ model: Model; log: string[] }> {
  const log: string[] = [];
  const model = await loadModel(demo.dir, { cacheDir: testCacheDir(), executionProvider: ep, log: (l) => log.push(l) });
  open.push(model);
  return { model, log };
}

test('the CPU is always available and asked for alone', () => {
  assert.ok(availableProviders().includes('cpu'));
  const { options, why } = sessionOptions('model.onnx', { executionProvider: 'cpu' });
  assert.deepEqual(options.executionProviders, ['cpu']);
  assert.equal(why, undefined);
});

test('a provider this build does not ship falls back to the CPU, saying which and what there is', () => {
  const missing = (['dml', 'coreml', 'cuda'] as const).find((p) => !availableProviders().includes(p));
  assert.ok(missing, 'no platform ships all of dml, coreml and cuda');
  const { options, why } = sessionOptions('model.onnx', { executionProvider: missing });
  assert.deepEqual(options.executionProviders, ['cpu']);
  assert.match(why ?? '', new RegExp(`${missing} execution provider is not available.*running on the CPU`));
});

test('the model completes the same on the CPU and through a fallback', { skip }, async () => {
  const prompt = 'def read_lines(path):\n    with open(path) as f:\n';
  const cpu = await load('cpu');
  assert.equal(cpu.log.filter((l) => /execution provider/.test(l)).length, 0);
  const want = (await cpu.model.generate(prompt, { maxNewTokens: 12 })).completion;
  const missing = (['dml', 'coreml'] as const).find((p) => !availableProviders().includes(p))!;
  const fell = await load(missing);
  assert.ok(fell.log.some((l) => l.includes(`The ${missing} execution provider is not available`)), fell.log.join('\n'));
  assert.equal((await fell.model.generate(prompt, { maxNewTokens: 12 })).completion, want);
});

test('a shipped provider that cannot start (WebGPU without an adapter) falls back to the CPU', { skip: skip ?? (availableProviders().includes('webgpu') ? undefined : 'this build ships no WebGPU provider') }, async (t) => {
  let r: { model: Model; log: string[] };
  try {
    r = await load('webgpu');
  } catch (e) {
    assert.fail(`loading with webgpu must fall back, not throw: ${(e as Error).message}`);
  }
  if (!r.log.some((l) => /webgpu execution provider failed to start/.test(l))) {
    t.diagnostic('WebGPU started on this machine: nothing to fall back from');
    return;
  }
  assert.equal(typeof (await r.model.generate('import os\n', { maxNewTokens: 4 })).completion, 'string');
});
