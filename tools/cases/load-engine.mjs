// The engine for the tools that measure the demo model (harvest.mjs, engine_eval.mjs): tools/cases/engine.ts
// bundled with esbuild into out/tools/, then the model loaded in-process.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Bundles the engine and loads a model folder.
 * @param {string} modelDir the model folder
 * @param {string | undefined} threads onnxruntime's intra-op threads (a CLI option's string), or the default
 * @returns {Promise<{ engine: any, model: any }>} the bundle's exports and the loaded model
 */
export async function loadEngine(modelDir, threads) {
  const bundle = path.join(ROOT, 'out', 'tools', 'cases-engine.cjs');
  const esbuild = await import('esbuild');
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'tools', 'cases', 'engine.ts')], outfile: bundle, bundle: true, platform: 'node',
    target: 'node20', format: 'cjs', external: ['onnxruntime-node'], logLevel: 'warning',
  });
  const engine = createRequire(import.meta.url)(bundle);
  const model = await engine.loadModel(modelDir, { threads: threads ? Number(threads) : undefined });
  return { engine, model };
}
