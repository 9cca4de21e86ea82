// The workspace the end-to-end tests open: the Python package in test/e2e/workspace/ (the regression prompts),
// the case's prompt as its own file (the cursor goes at its end), and .e2e-case.json for the extension-host suite.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');

let cached;

/**
 * The repair case: the first of test/e2e/case.json's cases that the model completes wrongly, as
 * { file, prompt, desired, before }, `before` being the model's completion as the CLI gives it (greedy, healed,
 * 24 new tokens, to the end of the line, like the extension). Without dist/cli.js or the model (the smoke
 * phase), the first case, without `before`.
 */
export function readCase(modelFolder) {
  if (cached) return cached;
  const spec = JSON.parse(fs.readFileSync(path.join(HERE, 'case.json'), 'utf8'));
  const cases = spec.cases ?? [];
  if (!spec.file || !cases.length) throw new Error('test/e2e/case.json: needs "file" and "cases"');
  for (const c of cases)
    if (typeof c.prompt !== 'string' || typeof c.desired !== 'string' || !c.prompt || !c.desired)
      throw new Error(`test/e2e/case.json: a case needs "prompt" and "desired": ${JSON.stringify(c)}`);
  const cli = path.join(ROOT, 'dist', 'cli.js');
  const model = modelFolder ?? path.join(ROOT, 'models', 'demo');
  if (!fs.existsSync(cli) || !fs.existsSync(model)) return (cached = { file: spec.file, ...cases[0] });
  fs.mkdirSync(path.join(ROOT, '.e2e'), { recursive: true });
  const tmp = fs.mkdtempSync(path.join(ROOT, '.e2e', 'case-'));
  try {
    const prompts = path.join(tmp, 'prompts.jsonl');
    fs.writeFileSync(prompts, cases.map((c) => JSON.stringify({ prompt: c.prompt })).join('\n') + '\n');
    const out = execFileSync(process.execPath, [cli, 'generate', '--model', model, '--prompts', prompts, '--max-new-tokens', '24', '--json'], {
      encoding: 'utf8',
      env: { ...process.env, NEURONPATCH_CACHE: process.env.NEURONPATCH_CACHE || path.join(ROOT, '.e2e', 'cache') },
    });
    const completions = out.trim().split('\n').map((l) => JSON.parse(l).completion);
    const i = cases.findIndex((c, k) => completions[k] !== c.desired);
    if (i < 0) throw new Error(`the model completes every case of test/e2e/case.json correctly: add one it gets wrong`);
    cached = { file: spec.file, ...cases[i], before: completions[i] };
    console.log(`e2e: case ${i + 1} of ${cases.length}: ${JSON.stringify(cached.prompt.split('\n').pop())} → model ${JSON.stringify(cached.before)}, desired ${JSON.stringify(cached.desired)}`);
    return cached;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Lays out the workspace in `dir` (emptied first) and returns its absolute path. `modelFolder`: another model
 * than the embedded demo, through the workspace's neuronpatch.modelFolder setting.
 */
export function prepareWorkspace(dir, kase, modelFolder) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(HERE, 'workspace'), dir, { recursive: true });
  if (modelFolder) {
    fs.mkdirSync(path.join(dir, '.vscode'), { recursive: true });
    fs.writeFileSync(path.join(dir, '.vscode', 'settings.json'), JSON.stringify({ 'neuronpatch.modelFolder': modelFolder }, null, 2));
  }
  fs.writeFileSync(path.join(dir, kase.file), kase.prompt);
  fs.writeFileSync(path.join(dir, '.e2e-case.json'), JSON.stringify(kase, null, 2));
  return path.resolve(dir);
}
