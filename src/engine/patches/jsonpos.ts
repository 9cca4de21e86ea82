// Where JSON text first breaks the grammar (RFC 8259), as a character offset. V8's JSON.parse messages give a
// position for some errors only ("Unexpected token 'o', ..."b": oops"..." has none), and a person fixing a
// hand-edited patch file needs a line and column. Used only after JSON.parse has failed.

/** Offset of the first character that cannot continue valid JSON (text.length when the text ends too early). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  // Each parser returns false at the first bad character, leaving `i` on it.
  const literal = (word: string): boolean => {
    for (const ch of word) {
      if (text[i] !== ch) return false;
      i++;
    }
    return true;
  };
  const digits = (): boolean => {
    const start = i;
    while (i < text.length && text[i] >= '0' && text[i] <= '9') i++;
    return i > start;
  };
  const number = (): boolean => {
    if (text[i] === '-') i++;
    if (text[i] === '0') i++;
    else if (!digits()) return false;
    if (text[i] === '.') {
      i++;
      if (!digits()) return false;
    }
    if (text[i] === 'e' || text[i] === 'E') {
      i++;
      if (text[i] === '+' || text[i] === '-') i++;
      if (!digits()) return false;
    }
    return true;
  };
  const string = (): boolean => {
    if (text[i] !== '"') return false;
    i++;
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        i++;
        if (text[i] === 'u') {
          i++;
          for (let k = 0; k < 4; k++, i++) if (!/[0-9a-fA-F]/.test(text[i] ?? '')) return false;
          continue;
        }
        if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) return false;
      }
      i++;
    }
    return false;
  };
  const value = (): boolean => {
    ws();
    const c = text[i];
    let ok: boolean;
    if (c === '{') {
      i++;
      ws();
      ok = true;
      if (text[i] === '}') i++;
      else
        for (;;) {
          ws();
          if (!string()) return false;
          ws();
          if (text[i] !== ':') return false;
          i++;
          if (!value()) return false;
          ws();
          if (text[i] === ',') i++;
          else if (text[i] === '}') {
            i++;
            break;
          } else return false;
        }
    } else if (c === '[') {
      i++;
      ws();
      ok = true;
      if (text[i] === ']') i++;
      else
        for (;;) {
          if (!value()) return false;
          ws();
          if (text[i] === ',') i++;
          else if (text[i] === ']') {
            i++;
            break;
          } else return false;
        }
    } else if (c === '"') ok = string();
    else if (c === 't') ok = literal('true');
    else if (c === 'f') ok = literal('false');
    else if (c === 'n') ok = literal('null');
    else ok = number();
    return ok;
  };
  if (!value()) return Math.min(i, text.length);
  ws();
  return i; // trailing garbage starts here (text.length if the text was valid)
}
