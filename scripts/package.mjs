// Builds one platform-specific .vsix per target onnxruntime-node ships binaries for:
//   node scripts/package.mjs [--target linux-x64]... [--out DIR]
// Each package carries only its own platform's onnxruntime binaries: .vscodeignore names linux/x64's folder,
// and that line is rewritten for each target. Uses @vscode/vsce from node_modules, or from .e2e/ (installed by .ci/e2e-setup.sh).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ALL = { 'linux-x64': 'linux/x64', 'linux-arm64': 'linux/arm64', 'darwin-arm64': 'darwin/arm64', 'win32-x64': 'win32/x64', 'win32-arm64': 'win32/arm64' };
const argv = process.argv.slice(2);
const targets = argv.flatMap((a, i) => (argv[i - 1] === '--target' ? [a] : []));
const outDir = path.resolve(argv.includes('--out') ? argv[argv.indexOf('--out') + 1] : '.');
for (const t of targets) if (!ALL[t]) throw new Error(`unknown target ${t}; onnxruntime-node ships ${Object.keys(ALL).join(', ')}`);

const vsce = ['node_modules/.bin/vsce', '.e2e/node_modules/.bin/vsce'].find((p) => existsSync(p));
if (!vsce) {
  console.error('package: @vscode/vsce is not installed (npm i -D @vscode/vsce@3, or bash .ci/e2e-setup.sh)');
  process.exit(1);
}
execFileSync(process.execPath, ['scripts/build.mjs', '--no-tsc'], { stdio: 'inherit' });
const { name, version } = JSON.parse(readFileSync('package.json', 'utf8'));
const base = readFileSync('.vscodeignore', 'utf8');
mkdirSync(outDir, { recursive: true });
const ignoreFile = path.join(os.tmpdir(), `neuronpatch-vscodeignore-${process.pid}`);
try {
  for (const t of targets.length ? targets : Object.keys(ALL)) {
    const line = '!node_modules/onnxruntime-node/bin/napi-v6/linux/x64/**';
    if (!base.includes(line)) throw new Error(`.vscodeignore must name ${line}`);
    writeFileSync(ignoreFile, base.replace(line, `!node_modules/onnxruntime-node/bin/napi-v6/${ALL[t]}/**`));
    const out = path.join(outDir, `${name}-${version}-${t}.vsix`);
    execFileSync(vsce, ['package', '--target', t, '--ignoreFile', ignoreFile, '--readme-path', 'media/MARKETPLACE.md', '--out', out, '--skip-license', '--allow-missing-repository'], { stdio: 'inherit' });
  }
} finally {
  rmSync(ignoreFile, { force: true });
}
