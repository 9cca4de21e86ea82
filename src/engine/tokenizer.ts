// tokenizer.json through @huggingface/tokenizers, plus what decoding needs: each token's text, for healing the
// prompt boundary and for showing tokens.
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { parseBounded } from './jsonlimits';
import { checkVocabulary } from './model/vocabulary';
import { NeuronpatchError } from './types';
import { quote } from './untrusted';

export class CodeTokenizer {
  private readonly tokenizer: Tokenizer;
  /** The same tokenizer without its special added tokens: text that spells `<|endoftext|>` stays text. */
  private readonly encoder: Tokenizer;
  private texts: string[] | undefined;
  /** The most characters one token can spell (from the vocabulary's strings): bounds how much text `tokens` tokens can cover. */
  readonly maxTokenChars: number;
  readonly addBos: boolean;
  readonly bosTokenId: number | undefined;

  constructor(tokenizerJson: unknown, config: Record<string, unknown>, readonly vocabSize: number, bosTokenId?: number) {
    const cfg = { clean_up_tokenization_spaces: false, ...config };
    this.tokenizer = new Tokenizer(tokenizerJson as object, cfg);
    const json = tokenizerJson as { added_tokens?: { special?: boolean }[] };
    this.encoder = new Tokenizer({ ...json, added_tokens: (json.added_tokens ?? []).filter((t) => !t.special) }, cfg);
    this.addBos = config.add_bos_token === true;
    this.maxTokenChars = longestToken(tokenizerJson);
    this.bosTokenId = bosTokenId;
  }

  /**
   * Reads tokenizer.json (and tokenizer_config.json) and checks them against the model: `vocabSize` is the
   * lm_head's rows, `eosTokenIds`/`bosTokenId` the config's (see ./model/vocabulary). Throws a NeuronpatchError.
   */
  static fromFiles(tokenizerPath: string, configPath: string | undefined, vocabSize: number, bosTokenId?: number, eosTokenIds: number[] = []): CodeTokenizer {
    const parse = (file: string): Record<string, unknown> => {
      try {
        const text = readFileSync(file, 'utf8');
        return parseBounded(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, file) as Record<string, unknown>;
      } catch (e) {
        if (e instanceof NeuronpatchError) throw e;
        throw new NeuronpatchError(`${file} does not parse: ${quote((e as Error).message, 200)}`, 'Restore the tokenizer files from the model\'s source.');
      }
    };
    const json = parse(tokenizerPath);
    if (!json || typeof json !== 'object' || Array.isArray(json) || !json.model || typeof json.model !== 'object') {
      throw new NeuronpatchError(`${tokenizerPath} is not a Hugging Face tokenizer.json (no "model" section).`);
    }
    checkVocabulary(json, tokenizerPath, vocabSize, { eos: eosTokenIds, bos: bosTokenId });
    try {
      return new CodeTokenizer(json, configPath ? parse(configPath) : {}, vocabSize, bosTokenId);
    } catch (e) {
      if (e instanceof NeuronpatchError) throw e;
      throw new NeuronpatchError(`${tokenizerPath} could not be loaded: ${quote((e as Error).message, 200)}`);
    }
  }

  /**
   * The end of `text` that `tokens` tokens can at most cover (twice the longest token's characters each): what
   * is cut before tokenising a prompt, so that a 100 MB prompt costs what its last context window costs.
   * `dropped` is how many characters were cut from the start (0: the whole text).
   */
  tail(text: string, tokens: number): { text: string; dropped: number } {
    const keep = Math.max(1, tokens) * 2 * this.maxTokenChars + 16;
    if (text.length <= keep) return { text, dropped: 0 };
    let from = text.length - keep;
    const c = text.charCodeAt(from);
    if (c >= 0xdc00 && c <= 0xdfff) from++; // not inside a surrogate pair
    return { text: text.slice(from), dropped: from };
  }

  /** Token ids of the text exactly as written: no special tokens added. */
  encode(text: string): number[] {
    return this.encoder.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[]): string {
    if (!ids.length) return '';
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  /**
   * Text of every token id the model can produce, as it reads in the middle of a text: decoded after an anchor
   * token, so SentencePiece's ▁ keeps its space (partial UTF-8 bytes show as U+FFFD).
   */
  tokenTexts(): string[] {
    if (!this.texts) {
      const anchor = this.encode('a').slice(-1);
      const opts = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
      const base = this.tokenizer.decode(anchor, opts).length;
      this.texts = Array.from({ length: this.vocabSize }, (_, id) => this.tokenizer.decode([...anchor, id], opts).slice(base));
    }
    return this.texts;
  }

  tokenText(id: number): string {
    return this.tokenTexts()[id] ?? `<${id}>`;
  }

  /** The token's string in the vocabulary (Ġ-style), for displays where whitespace must stay visible. */
  tokenName(id: number): string {
    return this.tokenizer.id_to_token(id) ?? `<${id}>`;
  }
}

/** Length of the vocabulary's longest token string (byte-level and ▁ forms are no shorter than the text they spell). */
function longestToken(json: unknown): number {
  const t = json as { model?: { vocab?: unknown }; added_tokens?: { content?: unknown }[] };
  let longest = 1;
  const see = (s: unknown): void => {
    if (typeof s === 'string' && s.length > longest) longest = s.length;
  };
  const vocab = t.model?.vocab;
  if (Array.isArray(vocab)) for (const e of vocab) see(Array.isArray(e) ? e[0] : e);
  else if (vocab && typeof vocab === 'object') for (const k of Object.keys(vocab)) see(k);
  if (Array.isArray(t.added_tokens)) for (const a of t.added_tokens) see(a?.content);
  return Math.min(longest, 1024);
}
