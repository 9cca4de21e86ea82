// A config's `tie_word_embeddings: true` checked against the graph. Exports often store a tied table twice (the
// Gather's and the lm_head's copy), so a separate lm_head initializer is no contradiction by itself; a lm_head whose
// rows point elsewhere than the embedding's is: the config then belongs to another model.
import path from 'node:path';
import { NeuronpatchError } from '../types';
import { quote } from '../untrusted';
import { extent, type ModelGraph } from './graph';
import type { Weights } from './weights';

/** Rows compared, spread evenly over the vocabulary. */
const SAMPLED_ROWS = 16;
/**
 * Mean cosine below which the two tables are different matrices. A copy gives 1, a 4-bit lm_head of the same table
 * about 0.99; independent tables of width d give about 0 (±1/√d).
 */
const SAME_TABLE_COSINE = 0.5;

/**
 * Mean cosine similarity of `rows` sampled token rows of the embedding [V, d] and the unembedding [V, d].
 * @returns undefined when the graph has no separate float embedding to compare (tied in the graph, or quantized).
 */
export function embeddingAgreement(weights: Weights, graph: ModelGraph, rows = SAMPLED_ROWS): number | undefined {
  const e = graph.embedding;
  if (!e || graph.tied) return undefined;
  const [vu, d] = extent(graph.unembedding);
  const v = Math.min(extent(e)[0], vu);
  if (v < 1) return undefined;
  let sum = 0;
  const n = Math.min(rows, v);
  for (let i = 0; i < n; i++) {
    const t = n === 1 ? 0 : Math.round((i * (v - 1)) / (n - 1));
    const a = weights.rowsOf(e, t, t + 1);
    const b = weights.rowsOf(graph.unembedding, t, t + 1);
    let ab = 0, aa = 0, bb = 0;
    for (let k = 0; k < d; k++) { ab += a[k] * b[k]; aa += a[k] * a[k]; bb += b[k] * b[k]; }
    sum += aa && bb ? ab / Math.sqrt(aa * bb) : aa === bb ? 1 : 0;
  }
  return sum / n;
}

/**
 * Refuses a config that says the embeddings are tied (the caller's condition) when the graph's lm_head is a
 * different matrix.
 * @throws NeuronpatchError naming the config file, both initializers (quoted: names come from the file) and the
 *   measured agreement.
 */
export function checkTiedConfig(weights: Weights, graph: ModelGraph, folder: string): void {
  const agreement = embeddingAgreement(weights, graph);
  if (agreement === undefined || agreement >= SAME_TABLE_COSINE) return;
  throw new NeuronpatchError(
    `${path.join(folder, 'config.json')} says tie_word_embeddings is true, but the graph's lm_head (${quote(graph.unembedding.name)}) is not the token embedding (${quote(graph.embedding?.name)}): ` +
      `their rows agree with a mean cosine of ${agreement.toFixed(2)} on ${Math.min(SAMPLED_ROWS, extent(graph.unembedding)[0])} sampled tokens.`,
    'The config does not belong to this model: restore it from the model\'s source.',
  );
}
