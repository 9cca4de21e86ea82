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
 * The repair case of test/e2e/case.json: { file, prompt, desired }, plus `before`, the demo model's completion of
 * the prompt as the CLI gives it (greedy, healed, 24 new tokens, to the end of the line, like the extension),
 * when the model and dist/cli.js are there.
 */
export function readCase(modelFolder) {
  if (cached) return cached;
  const kase = JSON.parse(fs.readFileSync(path.join(HERE, 'case.json'), 'utf8'));
  for (const k of ['file', 'prompt', 'desired']) if (typeof kase[k] !== 'string' || !kase[k]) throw new Error(`test/e2e/case.json: "${k}" missing`);
  const cli = path.join(ROOT, 'dist', 'cli.js');
  const model = modelFolder ?? path.join(ROOT, 'models', 'demo');
  if (fs.existsSync(cli) && fs.existsSync(model)) {
    fs.mkdirSync(path.join(ROOT, '.e2e'), { recursive: true });
    const tmp = fs.mkdtempSync(path.join(ROOT, '.e2e', 'case-'));
    try {
      const promptFile = path.join(tmp, 'prompt.txt');
      fs.writeFileSync(promptFile, kase.prompt);
      const out = execFileSync(process.execPath, [cli, 'generate', '--model', model, '--prompt-file', promptFile, '--max-new-tokens', '24', '--json'], {
        encoding: 'utf8',
        env: { ...process.env, NEURONPATCH_CACHE: process.env.NEURONPATCH_CACHE || path.join(ROOT, '.e2e', 'cache') },
      });
      kase.before = JSON.parse(out).completion;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  cached = kase;
  return kase;
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
