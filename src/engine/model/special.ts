// Tokenizer truth: the BOS and EOS tokens a model is run with come from its tokenizer, which is what encoded its
// training text; config.json / genai_config.json ids that contradict it are replaced, and the difference said once.
import type { CodeTokenizer } from '../tokenizer';

export interface SpecialTokens {
  /** Ids that end generation. */
  eosTokenIds: number[];
  /** One line naming where the config and the tokenizer disagreed and what was followed; absent when they agree. */
  notice?: string;
}

/**
 * The end-of-sequence ids to stop at, and the BOS check: the tokenizer's eos_token is added; a config id the
 * tokenizer names as its bos or unk token is dropped (genai_config.json files that say `eos_token_id: 1` for a
 * LLaMA tokenizer whose `<s>` is 1). Config ids the tokenizer does not contradict (extra end tokens of a chat
 * model, or a tokenizer whose eos lies outside a small model's vocabulary) are kept.
 * @param config ids from config.json / genai_config.json / generation_config.json.
 */
export function specialTokens(config: { eosTokenIds: number[]; bosTokenId?: number }, tok: CodeTokenizer): SpecialTokens {
  const said: string[] = [];
  const name = (id: number) => JSON.stringify(tok.tokenName(id));
  const contradicted = (id: number) => id !== tok.eosTokenId && (id === tok.bosTokenId || id === tok.unkTokenId);
  const dropped = config.eosTokenIds.filter(contradicted);
  const eos = config.eosTokenIds.filter((id) => !contradicted(id));
  if (tok.eosTokenId !== undefined && !eos.includes(tok.eosTokenId)) eos.unshift(tok.eosTokenId);
  if (dropped.length || (tok.eosTokenId !== undefined && config.eosTokenIds.length && !config.eosTokenIds.includes(tok.eosTokenId))) {
    said.push(`the config's eos_token_id ${config.eosTokenIds.map((id) => `${id} (${name(id)})`).join(', ')} is not the tokenizer's eos_token`
      + `${tok.eosTokenId !== undefined ? ` ${name(tok.eosTokenId)} = ${tok.eosTokenId}` : ''}: generation stops at ${eos.join(', ')}`);
  }
  const bos = tok.prefix;
  if (config.bosTokenId !== undefined && tok.bosTokenId !== undefined && config.bosTokenId !== tok.bosTokenId) {
    said.push(`the config's bos_token_id ${config.bosTokenId} (${name(config.bosTokenId)}) is not the tokenizer's bos_token ${name(tok.bosTokenId)} = ${tok.bosTokenId}: `
      + (bos.length ? `prompts start with ${bos.join(', ')} as the tokenizer encodes them` : 'the tokenizer adds no BOS to prompts'));
  }
  return { eosTokenIds: eos, notice: said.length ? `The config and the tokenizer disagree; following the tokenizer: ${said.join('; ')}.` : undefined };
}
