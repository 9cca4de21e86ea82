// Builds the three bundles (extension, CLI, webview) with esbuild and compiles tests with tsc.
//   node scripts/build.mjs [--no-tsc] [--watch]
import { build, context } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync } from 'node:fs';

const watch = process.argv.includes('--watch');
const common = { bundle: true, sourcemap: true, logLevel: 'warning' };
const node = { ...common, platform: 'node', target: 'node20', format: 'cjs', external: ['vscode', 'onnxruntime-node'] };
const targets = [
  { ...node, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node' } },
];
if (existsSync('src/vscode/extension.ts')) {
  targets.push({ ...node, entryPoints: ['src/vscode/extension.ts'], outfile: 'dist/extension.js' });
}
if (existsSync('src/vscode/worker/engineProcess.ts')) {
  // The engine's process, beside dist/extension.js (src/vscode/worker/client.ts forks it from there).
  targets.push({ ...node, entryPoints: ['src/vscode/worker/engineProcess.ts'], outfile: 'dist/engineProcess.js' });
}
if (existsSync('webview/main.ts')) {
  targets.push({ ...common, platform: 'browser', target: 'es2022', format: 'esm', entryPoints: ['webview/main.ts'],
    outfile: 'dist/webview/main.js' });
}

mkdirSync('dist', { recursive: true });
if (existsSync('node_modules/@vscode/codicons/dist')) {
  mkdirSync('dist/webview', { recursive: true });
  for (const f of ['codicon.css', 'codicon.ttf']) cpSync(`node_modules/@vscode/codicons/dist/${f}`, `dist/webview/${f}`);
}
if (watch) {
  for (const t of targets) await (await context(t)).watch();
} else {
  await Promise.all(targets.map((t) => build(t)));
  if (!process.argv.includes('--no-tsc')) {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.'], { stdio: 'inherit' });
  }
}
