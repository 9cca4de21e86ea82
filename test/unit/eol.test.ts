// Line endings: what the model reads (LF) and what a document gets back (its own ending).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eolOf, toLf, withEol } from '../../src/engine/eol';

test('toLf turns CRLF and lone CR into LF, and leaves LF text as it is', () => {
  assert.equal(toLf('a\r\nb\rc\nd'), 'a\nb\nc\nd');
  const lf = 'def f(x):\n    return x\n';
  assert.equal(toLf(lf), lf);
});

test('eolOf reads the prompt\'s line ending; withEol gives LF text back in it', () => {
  assert.equal(eolOf('a\r\nb\r\n'), '\r\n');
  assert.equal(eolOf('a\nb\n'), '\n');
  assert.equal(eolOf('one line'), '\n');
  assert.equal(eolOf('a\r\nb\nc\n'), '\n', 'mostly LF: LF');
  assert.equal(withEol('x\n    y', '\r\n'), 'x\r\n    y');
  assert.equal(withEol('x\r\ny', '\r\n'), 'x\r\ny', 'already CRLF: not doubled');
  assert.equal(withEol('x\ny', '\n'), 'x\ny');
});
