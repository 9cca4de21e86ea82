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
  /**
   * The ids the tokenizer puts before a text when it encodes it for generation (its post-processor's BOS, or
   * `bos_token` where `tokenizer_config.json` says `add_bos_token: true`); empty when it adds none.
   */
  readonly prefix: number[];
  /** Its `bos_token`'s id, where it names one in the vocabulary. */
  readonly bosTokenId: number | undefined;
  /** Its `eos_token`'s id, where it names one the model can produce. */
  readonly eosTokenId: number | undefined;
  /** Its `unk_token`'s id, where it names one. */
  readonly unkTokenId: number | undefined;

  constructor(tokenizerJson: unknown, config: Record<string, unknown>, readonly vocabSize: number) {
    const cfg = { clean_up_tokenization_spaces: false, ...config };
    this.tokenizer = new Tokenizer(tokenizerJson as object, cfg);
    const json = tokenizerJson as { added_tokens?: { special?: boolean }[] };
    this.encoder = new Tokenizer({ ...json, added_tokens: (json.added_tokens ?? []).filter((t) => !t.special) }, cfg);
    this.maxTokenChars = longestToken(tokenizerJson);
    const idOf = (key: string): number | undefined => {
      const v = config[key];
      const text = typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined;
      const id = text === undefined ? undefined : this.tokenizer.token_to_id(text);
      return typeof id === 'number' && id >= 0 && id < vocabSize ? id : undefined;
    };
    this.bosTokenId = idOf('bos_token');
    this.eosTokenId = idOf('eos_token');
    this.unkTokenId = idOf('unk_token');
    this.prefix = generationPrefix(this.tokenizer, this.encoder, config.add_bos_token, this.bosTokenId);
  }

  /** Whether prompts start with tokens the tokenizer adds (BOS). */
  get addBos(): boolean {
    return this.prefix.length > 0;
  }

  /**
   * Reads tokenizer.json (and tokenizer_config.json) and checks them against the model: `vocabSize` is the
   * lm_head's rows, `eosTokenIds`/`bosTokenId` the config's (see ./model/vocabulary); special_tokens_map.json's
   * entries count where tokenizer_config.json does not name a token. Throws a NeuronpatchError.
   */
  static fromFiles(tokenizerPath: string, configPath: string | undefined, vocabSize: number, bosTokenId?: number, eosTokenIds: number[] = [], specialTokensPath?: string): CodeTokenizer {
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
      const special = specialTokensPath ? parse(specialTokensPath) : {};
      return new CodeTokenizer(json, { ...special, ...(configPath ? parse(configPath) : {}) }, vocabSize);
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

  /**
   * The token's text for display: its text, or, where it holds only part of a UTF-8 character (decoding shows
   * U+FFFD), its bytes with those above 0x7f as escapes (`\xe2\x80`), read from the vocabulary's byte-level
   * (GPT-2 `Ġ`-style) or byte-fallback (`<0xE2>`) spelling.
   */
  tokenDisplay(id: number): string {
    const text = this.tokenText(id);
    if (!text.includes('\ufffd')) return text;
    const bytes = tokenBytes(this.tokenName(id));
    return bytes ? escapeHighBytes(bytes) : text;
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

/**
 * What a tokenizer prepends for generation: the special tokens its post-processor adds before the text (as
 * `encode(text)` with special tokens does, Llama-3-style tokenizers included), unless `add_bos_token` is false (the
 * slow-tokenizer flag transformers honours by rewriting the post-processor); with no such tokens and
 * `add_bos_token: true`, its bos_token.
 */
function generationPrefix(tokenizer: Tokenizer, encoder: Tokenizer, addBos: unknown, bos: number | undefined): number[] {
  if (addBos === false) return [];
  const probe = 'a';
  const plain = encoder.encode(probe, { add_special_tokens: false }).ids;
  const full = tokenizer.encode(probe, { add_special_tokens: true }).ids;
  const at = plain.length ? full.indexOf(plain[0]) : -1;
  const prefix = at > 0 && plain.every((id, i) => full[at + i] === id) ? full.slice(0, at) : [];
  if (prefix.length) return prefix;
  return addBos === true && bos !== undefined ? [bos] : [];
}

/** GPT-2's byte-level alphabet read backwards: the character standing for each byte → the byte. */
let byteOfChar: Map<string, number> | undefined;
function byteLevel(): Map<string, number> {
  if (byteOfChar) return byteOfChar;
  const m = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    m.set(String.fromCharCode(printable ? b : 256 + extra++), b);
  }
  return (byteOfChar = m);
}

/** A vocabulary entry's bytes: `<0xNN>` byte fallback, or a byte-level string; undefined for anything else. */
export function tokenBytes(name: string): number[] | undefined {
  const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(name);
  if (fallback) return [parseInt(fallback[1], 16)];
  const map = byteLevel();
  const out: number[] = [];
  for (const ch of name) {
    const b = map.get(ch);
    if (b === undefined) return undefined;
    out.push(b);
  }
  return out;
}

/** ASCII bytes as themselves, every other byte as `\xNN`. */
export function escapeHighBytes(bytes: number[]): string {
  return bytes.map((b) => (b < 0x80 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}
