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
  const scalar = (): boolean => {
    const c = text[i];
    if (c === '"') return string();
    if (c === 't') return literal('true');
    if (c === 'f') return literal('false');
    if (c === 'n') return literal('null');
    return number();
  };
  // One value, with an explicit stack of open containers instead of recursion: a file nested 100,000 levels
  // deep is reported like any other, not with a stack overflow.
  const value = (): boolean => {
    const open: ('{' | '[')[] = [];
    for (;;) {
      ws();
      // At the start of a value (or of an object key when the top is '{' just opened or after a comma).
      const c = text[i];
      if (c === '{') {
        i++;
        ws();
        if (text[i] === '}') i++;
        else {
          open.push('{');
          if (!string()) return false;
          ws();
          if (text[i] !== ':') return false;
          i++;
          continue;
        }
      } else if (c === '[') {
        i++;
        ws();
        if (text[i] === ']') i++;
        else {
          open.push('[');
          continue;
        }
      } else if (!scalar()) return false;
      // A value ended: close containers, or move to the next member.
      for (;;) {
        if (!open.length) return true;
        ws();
        const top = open[open.length - 1];
        if (text[i] === ',') {
          i++;
          if (top === '{') {
            ws();
            if (!string()) return false;
            ws();
            if (text[i] !== ':') return false;
            i++;
          }
          break;
        }
        if (text[i] === (top === '{' ? '}' : ']')) {
          i++;
          open.pop();
          continue;
        }
        return false;
      }
    }
  };
  if (!value()) return Math.min(i, text.length);
  ws();
  return i; // trailing garbage starts here (text.length if the text was valid)
}
