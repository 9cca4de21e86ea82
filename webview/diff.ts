// A word-level diff (longest common subsequence) of two short texts, for highlighting before vs after.

export interface DiffPart {
  text: string;
  kind: 'same' | 'removed' | 'added';
}

function words(s: string): string[] {
  return s.match(/\s+|[A-Za-z0-9_]+|[^\sA-Za-z0-9_]/g) ?? [];
}

/** Parts of `a` and `b` with what each lacks of the other marked; concatenating a's parts gives a, b's gives b. */
export function diffWords(a: string, b: string): { a: DiffPart[]; b: DiffPart[] } {
  const x = words(a);
  const y = words(b);
  const n = x.length;
  const m = y.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const pa: DiffPart[] = [];
  const pb: DiffPart[] = [];
  const push = (parts: DiffPart[], text: string, kind: DiffPart['kind']): void => {
    const last = parts[parts.length - 1];
    if (last && last.kind === kind) last.text += text;
    else parts.push({ text, kind });
  };
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      push(pa, x[i++], 'same');
      push(pb, y[j++], 'same');
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      push(pb, y[j++], 'added');
    } else {
      push(pa, x[i++], 'removed');
    }
  }
  return { a: pa, b: pb };
}
