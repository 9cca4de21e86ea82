// tokenizer.json against the graph, at load: the tokenizer must be one this model can use. Refused with a clear
// error: no vocabulary (null, empty), two tokens with one id, a base vocabulary with holes, an end-of-text or
// begin-of-text id outside the model's rows or unknown to the tokenizer. A tokenizer larger than the lm_head
// (a third-party export with 50257 tokens and 1000 rows) is accepted: ids the model lacks are refused where a
// prompt produces them (session.ts).
import { NeuronpatchError } from '../types';
import { quote } from '../untrusted';

interface TokenizerJson {
  model?: { vocab?: unknown };
  added_tokens?: unknown;
}

/** The ids of tokenizer.json's vocabulary: `{token: id}` (BPE, WordPiece, WordLevel) or `[[piece, score]]` (Unigram). */
function baseIds(vocab: unknown, file: string): Map<number, string> {
  const ids = new Map<number, string>();
  const add = (id: unknown, token: string, where: string): void => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      throw new NeuronpatchError(`${file}: ${where} has the id ${quote(id)}, not a non-negative integer.`, 'Restore tokenizer.json from the model\'s source.');
    const other = ids.get(id);
    if (other !== undefined && other !== token)
      throw new NeuronpatchError(`${file}: the tokens ${quote(other)} and ${quote(token)} both have the id ${id}.`, 'Restore tokenizer.json from the model\'s source.');
    ids.set(id, token);
  };
  if (Array.isArray(vocab)) vocab.forEach((entry, i) => add(i, String(Array.isArray(entry) ? entry[0] : entry), `model.vocab[${i}]`));
  else if (vocab && typeof vocab === 'object') for (const [token, id] of Object.entries(vocab)) add(id, token, `the token ${quote(token)}`);
  return ids;
}

/**
 * Checks a parsed tokenizer.json against the model: `rows` is the lm_head's vocabulary (logits per position),
 * `special` the eos/bos ids the config names. Throws a NeuronpatchError naming the file and what is wrong.
 */
export function checkVocabulary(json: unknown, file: string, rows: number, special: { eos: number[]; bos?: number }): void {
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new NeuronpatchError(`${file} is not a tokenizer (it holds ${quote(json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json)}).`, 'Restore tokenizer.json from the model\'s source.');
  const t = json as TokenizerJson;
  const ids = baseIds(t.model?.vocab, file);
  if (!ids.size) throw new NeuronpatchError(`${file} has an empty vocabulary (model.vocab).`, 'Restore tokenizer.json from the model\'s source.');
  const base = ids.size;
  const top = Math.max(...ids.keys());
  if (top !== base - 1) {
    let hole = 0;
    while (ids.has(hole)) hole++;
    throw new NeuronpatchError(
      `${file}: the vocabulary's ${base} tokens have ids up to ${top}, with none at ${hole}: tokens are missing or renumbered.`,
      'Restore tokenizer.json from the model\'s source.',
    );
  }
  if (Array.isArray(t.added_tokens))
    t.added_tokens.forEach((a: { id?: unknown; content?: unknown }, i) => {
      const content = typeof a?.content === 'string' ? a.content : '';
      const id = a?.id;
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
        throw new NeuronpatchError(`${file}: added_tokens[${i}] has the id ${quote(id)}, not a non-negative integer.`, 'Restore tokenizer.json from the model\'s source.');
      const other = ids.get(id);
      if (other !== undefined && other !== content)
        throw new NeuronpatchError(`${file}: added_tokens[${i}] ${quote(content)} has the id ${id} of ${quote(other)}.`, 'Restore tokenizer.json from the model\'s source.');
      ids.set(id, content);
    });
  for (const [what, id] of [...special.eos.map((id) => ['eos_token_id', id] as const), ...(special.bos === undefined ? [] : [['bos_token_id', special.bos] as const])]) {
    if (id >= rows || id < 0 || !ids.has(id))
      throw new NeuronpatchError(
        `The config's ${what} ${id} is ${id >= rows || id < 0 ? `outside the model's ${rows} output rows` : `not a token of ${file}`}.`,
        'The config does not belong to this model and tokenizer: restore it from the model\'s source.',
      );
  }
}
