#!/usr/bin/env node
// Runs one TypeScript benchmark: bundles bench/NAME.ts with esbuild (the engine's sources included, the native
// packages left external) into out/bench-bundles/NAME.cjs, then runs it with the remaining arguments.
//   node bench/run.mjs forward|generate|dtypes|quantized|memory|side-effects|specificity-floor [args...]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [name, ...args] = process.argv.slice(2);
const entry = path.join(root, 'bench', `${name}.ts`);
if (!name || !existsSync(entry)) {
  process.stderr.write('usage: node bench/run.mjs forward|generate|dtypes|quantized|memory|side-effects|specificity-floor|sequential|measure-deltas [args...]\n');
  process.exit(2);
}
const outfile = path.join(root, 'out', 'bench-bundles', `${name}.cjs`);
await build({
  entryPoints: [entry], outfile, bundle: true, platform: 'node', target: 'node20', format: 'cjs', sourcemap: true,
  external: ['onnxruntime-node', '@huggingface/transformers'], logLevel: 'warning',
});
const r = spawnSync(process.execPath, ['--enable-source-maps', outfile, ...args], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
