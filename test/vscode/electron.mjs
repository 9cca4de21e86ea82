#!/usr/bin/env node
// Runs the extension-host suite (out/test/vscode/index.js) in a desktop VS Code downloaded by
// @vscode/test-electron, for machines that can download it (this project's CI cannot: it uses
// test/e2e/run.mjs --suite, code-server, instead). Same workspace, same results file, same last line.
//   npm run test:electron          (needs: npm i --no-save @vscode/test-electron)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareWorkspace, readCase } from '../e2e/workspace.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

let runTests;
try {
  ({ runTests } = await import('@vscode/test-electron'));
} catch {
  console.error('test:electron: @vscode/test-electron is not installed: `npm i --no-save @vscode/test-electron`, then run again.');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'neuronpatch-electron-'));
const results = path.join(scratch, 'results.json');
fs.mkdirSync(path.join(ROOT, '.e2e'), { recursive: true });
const ws = prepareWorkspace(path.join(scratch, 'workspace'), readCase());
let code = 0;
try {
  await runTests({
    extensionDevelopmentPath: ROOT,
    extensionTestsPath: path.join(ROOT, 'out', 'test', 'vscode', 'index.js'),
    extensionTestsEnv: { NEURONPATCH_TEST_RESULTS: results },
    launchArgs: [ws, '--disable-extensions', '--disable-workspace-trust', '--user-data-dir', path.join(scratch, 'ud')],
  });
} catch (e) {
  console.error(`test:electron: ${e.message ?? e}`);
  code = 1;
}
let passed = 0;
let failed = 0;
try {
  const report = JSON.parse(fs.readFileSync(results, 'utf8'));
  for (const r of report.results) {
    console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.ok ? '' : `: ${r.error}`}`);
    if (r.ok) passed++;
    else failed++;
  }
  if (!report.done) failed++;
} catch {
  console.error('test:electron: the suite wrote no results');
  failed++;
}
fs.rmSync(scratch, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || code ? 1 : 0);
