// How much work one onnxruntime run may take. onnxruntime-node runs a session synchronously on the calling thread
// and cannot interrupt a run, so a cancel (or a completion waiting behind a repair) waits for the run in flight:
// long work is cut into runs of about FORWARD_MACS multiply-adds with a check between them.

/** Multiply-adds one run may take: 128 prompt tokens of Qwen2.5-Coder-0.5B (0.5–4 s on this project's shared 2-core machine). */
export const FORWARD_MACS = 5e10;

/** Multiply-adds of one token through the decoder's projections: layers · (4d² attention + 3dm gated FFN). */
export function macsPerToken(info: { layers: number; width: number; neurons: number }): number {
  const { layers, width: d, neurons: m } = info;
  return layers * (4 * d * d + 3 * d * m);
}

/** Tokens (over all rows) one run may take within FORWARD_MACS; at least `floor`. */
export function tokensPerForward(info: { layers: number; width: number; neurons: number }, floor = 1): number {
  return Math.max(floor, Math.floor(FORWARD_MACS / macsPerToken(info)));
}
