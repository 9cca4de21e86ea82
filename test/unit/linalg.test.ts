// The small linear algebra the solvers stand on, checked against direct computation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cholesky, choleskySolve, logSoftmax, logSumExp, matVec, solveSymmetric, topK } from '../../src/engine/linalg';
import { orthogonalize } from '../../src/engine/repair/edits';
import { gram } from '../../src/engine/repair/steer';

function rng(seed: number): () => number {
  let a = seed;
  return () => ((a = (a * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
}

test('topK returns the k best indices in order, either way', () => {
  const r = rng(1);
  const v = Array.from({ length: 500 }, r);
  assert.deepEqual(topK(v, 6), [...v.keys()].sort((a, b) => v[b] - v[a]).slice(0, 6));
  assert.deepEqual(topK(v, 6, true), [...v.keys()].sort((a, b) => v[a] - v[b]).slice(0, 6));
  assert.deepEqual(topK([3, 1, 2], 5), [0, 2, 1]);
});

test('logSumExp and logSoftmax agree and are stable for large logits', () => {
  const x = new Float32Array([1000, 1001, 999, 998]);
  const lp = logSoftmax(x, 0, 4);
  assert.ok(Math.abs(lp.reduce((s, v) => s + Math.exp(v), 0) - 1) < 1e-12);
  assert.ok(Math.abs(x[1] - logSumExp(x, 0, 4) - lp[1]) < 1e-9);
});

test('Cholesky solve and the ridge-regularised symmetric solve invert A', () => {
  const r = rng(2);
  const n = 7;
  const m = Float64Array.from({ length: n * n }, r);
  const a = new Float64Array(n * n);  // A = MᵀM + I is positive definite
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = i === j ? 1 : 0;
    for (let k = 0; k < n; k++) s += m[k * n + i] * m[k * n + j];
    a[i * n + j] = s;
  }
  const b = Float64Array.from({ length: n }, r);
  const x = choleskySolve(cholesky(a, n), n, b);
  const back = matVec(Float32Array.from(a), n, n, x);
  back.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5));
  const x2 = solveSymmetric(a, n, b, 1, 0);
  x2.forEach((v, i) => assert.ok(Math.abs(v - x[i]) < 1e-9));
});

test('the ridge-regularised solve satisfies (A + ridge·mean(diag A)·I) X = B, for several right-hand sides', () => {
  const r = rng(4);
  const [n, cols] = [6, 3];
  // A = MᵀM: symmetric positive semi-definite, its diagonal far from 1 so that the ridge's scale matters.
  const m = Float64Array.from({ length: n * n }, () => 10 * r());
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j] += m[k * n + i] * m[k * n + j];
  const meanDiag = Array.from({ length: n }, (_, i) => a[i * n + i]).reduce((s, v) => s + v, 0) / n;
  const b = Float64Array.from({ length: n * cols }, r);
  const plain = solveSymmetric(a, n, b, cols, 0);
  for (const ridge of [1e-3, 0.1, 2]) {
    const x = solveSymmetric(a, n, b, cols, ridge);
    let worst = 0;
    let moved = 0;
    for (let i = 0; i < n; i++) for (let c = 0; c < cols; c++) {
      let s = ridge * meanDiag * x[i * cols + c];
      for (let k = 0; k < n; k++) s += a[i * n + k] * x[k * cols + c];
      worst = Math.max(worst, Math.abs(s - b[i * cols + c]));
      moved = Math.max(moved, Math.abs(x[i * cols + c] - plain[i * cols + c]));
    }
    assert.ok(worst < 1e-9, `ridge ${ridge}: |(A + ridge·mean(diag A)·I)X − B| = ${worst}`);
    assert.ok(moved > 1e-6, `ridge ${ridge}: the solution differs from the unregularised one (by ${moved})`);
  }
});

test('orthogonalize removes the components along earlier changes', () => {
  const v = Float64Array.from([1, 2, 3]);
  const out = orthogonalize(v, [[1, 0, 0], [1, 1, 0]]);
  assert.ok(Math.abs(out[0]) < 1e-12 && Math.abs(out[1]) < 1e-12);
  assert.equal(out[2], 3);
});

test('the Gram matrix computed by onnxruntime equals WᵀW', async () => {
  const r = rng(3);
  const [rows, cols] = [50, 6];
  const w = Float32Array.from({ length: rows * cols }, r);
  const g = await gram(w, rows, cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) {
    let s = 0;
    for (let k = 0; k < rows; k++) s += w[k * cols + i] * w[k * cols + j];
    assert.ok(Math.abs(g[i * cols + j] - s) < 1e-4);
  }
});
