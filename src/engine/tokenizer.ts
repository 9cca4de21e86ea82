// tokenizer.json through @huggingface/tokenizers, plus what decoding needs: each token's text, for healing the
// prompt boundary and for showing tokens.
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { NeuronpatchError } from './types';

export class CodeTokenizer {
  private readonly tokenizer: Tokenizer;
  /** The same tokenizer without its special added tokens: text that spells `<|endoftext|>` stays text. */
  private readonly encoder: Tokenizer;
  private texts: string[] | undefined;
  readonly addBos: boolean;
  readonly bosTokenId: number | undefined;

  constructor(tokenizerJson: unknown, config: Record<string, unknown>, readonly vocabSize: number, bosTokenId?: number) {
    const cfg = { clean_up_tokenization_spaces: false, ...config };
    this.tokenizer = new Tokenizer(tokenizerJson as object, cfg);
    const json = tokenizerJson as { added_tokens?: { special?: boolean }[] };
    this.encoder = new Tokenizer({ ...json, added_tokens: (json.added_tokens ?? []).filter((t) => !t.special) }, cfg);
    this.addBos = config.add_bos_token === true;
    this.bosTokenId = bosTokenId;
  }

  static fromFiles(tokenizerPath: string, configPath: string | undefined, vocabSize: number, bosTokenId?: number): CodeTokenizer {
    const parse = (file: string): Record<string, unknown> => {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      } catch (e) {
        throw new NeuronpatchError(`${file} does not parse: ${(e as Error).message}`, 'Restore the tokenizer files from the model\'s source.');
      }
    };
    const json = parse(tokenizerPath);
    if (!json.model || typeof json.model !== 'object') {
      throw new NeuronpatchError(`${tokenizerPath} is not a Hugging Face tokenizer.json (no "model" section).`);
    }
    try {
      return new CodeTokenizer(json, configPath ? parse(configPath) : {}, vocabSize, bosTokenId);
    } catch (e) {
      if (e instanceof NeuronpatchError) throw e;
      throw new NeuronpatchError(`${tokenizerPath} could not be loaded: ${(e as Error).message}`);
    }
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
