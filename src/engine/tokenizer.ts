// tokenizer.json through @huggingface/tokenizers, plus what decoding needs: each token's text, for healing the
// prompt boundary and for showing tokens.
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { NeuronpatchError } from './types';

export class CodeTokenizer {
  private readonly tokenizer: Tokenizer;
  private texts: string[] | undefined;
  readonly addBos: boolean;
  readonly bosTokenId: number | undefined;

  constructor(tokenizerJson: unknown, config: Record<string, unknown>, readonly vocabSize: number, bosTokenId?: number) {
    this.tokenizer = new Tokenizer(tokenizerJson as object, { clean_up_tokenization_spaces: false, ...config });
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
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[]): string {
    if (!ids.length) return '';
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  /** Text of every token id the model can produce, decoded alone (partial UTF-8 bytes show as U+FFFD). */
  tokenTexts(): string[] {
    if (!this.texts) {
      this.texts = Array.from({ length: this.vocabSize }, (_, id) => this.tokenizer.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
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
