// Line endings: the model reads LF text (what it was trained on: a `\r` is a token of its own that it rarely saw,
// and a CRLF prompt derails it), while a CRLF document gets its completions back in CRLF.

export type Eol = '\n' | '\r\n';

/** The text with CRLF and lone CR line endings as LF. */
export function toLf(text: string): string {
  return text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
}

/** CRLF where the text's line breaks are CRLF (at least as many as bare LFs), else LF. */
export function eolOf(text: string): Eol {
  const crlf = text.split('\r\n').length - 1;
  if (!crlf) return '\n';
  const lf = text.split('\n').length - 1 - crlf;
  return crlf >= lf ? '\r\n' : '\n';
}

/** LF text with the given line ending. */
export function withEol(text: string, eol: Eol): string {
  return eol === '\n' ? text : toLf(text).replace(/\n/g, eol);
}
