// The engine entry the case harvester runs in-process (bundled by tools/cases/harvest.mjs with esbuild): the
// model loader and the same greedy decoding as `neuronpatch generate` (healed boundary, end-of-line stop).
export { loadModel } from '../../src/engine/model/load';
export { generate, preparePrompt, DEFAULT_MAX_NEW_TOKENS } from '../../src/engine/generate';
export { mulberry32 } from '../../src/engine/random';
