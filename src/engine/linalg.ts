// The small dense linear algebra repair needs: vectors of the residual width, T×T systems, softmax.
// Large products (the Gram matrix of the unembedding) run in onnxruntime instead.

export type Vec = Float32Array | Float64Array;

export function dot(a: Vec, b: Vec, n = a.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

export function norm(a: Vec): number {
  return Math.sqrt(dot(a, a));
}

/** y = M x for M [rows, cols] row-major. */
export function matVec(m: Float32Array, rows: number, cols: number, x: Vec): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const o = r * cols;
    for (let c = 0; c < cols; c++) s += m[o + c] * x[c];
    y[r] = s;
  }
  return y;
}

/** Row `i` of a row-major matrix, as a view. */
export function row(m: Float32Array, i: number, cols: number): Float32Array {
  return m.subarray(i * cols, (i + 1) * cols);
}

export function logSoftmax(logits: Float32Array, offset: number, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[offset + i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = logits[offset + i] - lse;
  return out;
}

/** log Σ exp over a slice, without allocating. */
export function logSumExp(x: ArrayLike<number>, offset: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[offset + i] > max) max = x[offset + i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[offset + i] - max);
  return max + Math.log(sum);
}

/** Indices of the k largest values (or smallest with `ascending`), best first: one pass, O(n·k). */
export function topK(values: ArrayLike<number>, k: number, ascending = false): number[] {
  const better = (a: number, b: number) => (ascending ? a < b : a > b);
  const best: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (best.length === k && !better(v, values[best[k - 1]])) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && better(v, values[best[at - 1]])) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

/** Cholesky factor L (lower, row-major) of a symmetric positive definite n×n matrix. */
export function cholesky(a: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      if (i === j) {
        if (s <= 0) throw new Error('matrix is not positive definite');
        l[i * n + i] = Math.sqrt(s);
      } else {
        l[i * n + j] = s / l[j * n + j];
      }
    }
  }
  return l;
}

/** Solves (L Lᵀ) x = b given the Cholesky factor L. */
export function choleskySolve(l: Float64Array, n: number, b: Vec): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[i * n + k] * y[k];
    y[i] = s / l[i * n + i];
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * x[k];
    x[i] = s / l[i * n + i];
  }
  return x;
}

/**
 * Solves the small symmetric system (A + ridge·mean(diag A)·I) X = B for X [n, cols], B [n, cols] row-major: the
 * ridge is relative to A's mean diagonal (its scale). Throws where the regularised A is not positive definite.
 */
export function solveSymmetric(a: Float64Array, n: number, b: Float64Array, cols: number, ridge: number): Float64Array {
  const reg = Float64Array.from(a);
  const scale = Math.max(1e-12, Array.from({ length: n }, (_, i) => a[i * n + i]).reduce((s, v) => s + v, 0) / n);
  for (let i = 0; i < n; i++) reg[i * n + i] += ridge * scale;
  const l = cholesky(reg, n);
  const x = new Float64Array(n * cols);
  const col = new Float64Array(n);
  for (let c = 0; c < cols; c++) {
    for (let i = 0; i < n; i++) col[i] = b[i * cols + c];
    const sol = choleskySolve(l, n, col);
    for (let i = 0; i < n; i++) x[i * cols + c] = sol[i];
  }
  return x;
}

export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
