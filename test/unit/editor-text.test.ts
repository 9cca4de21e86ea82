// The editor's text rules, without VS Code: whitespace made visible and read back, the glue check of a desired
// text, multi-line completions cut at the block's dedent, and byte tokens shown as byte escapes.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CodeTokenizer, escapeHighBytes, tokenBytes } from '../../src/engine/tokenizer';
import { fromVisible, gluesOnto, visibleEdges, visibleWhitespace } from '../../src/vscode/panel/messages';
import { cutAtDedent, openBlock } from '../../src/vscode/multiline';
import { root } from '../helpers/models';
import { skipIfMissing } from '../helpers/need';

describe('visible whitespace', () => {
  test('edges shown, inner spaces kept, read back exactly', () => {
    for (const [text, shown] of [[' a + b', '␣a + b'], ['\tx ', '⇥x␣'], ['a b', 'a b'], ['  ', '␣␣']]) {
      assert.equal(visibleEdges(text), shown);
      assert.equal(fromVisible(shown), text);
    }
    assert.equal(visibleWhitespace(' a\tb\n'), '␣a⇥b⏎');
    assert.equal(visibleWhitespace(''), '∅');
  });
  test('a desired text glues onto the word before the cursor only where the model did not continue that word', () => {
    assert.equal(gluesOnto('    return', 'a + b', ' _type(a, b)'), 'return');
    assert.equal(gluesOnto('    return', ' a + b', ' _type(a, b)'), undefined);
    assert.equal(gluesOnto('    return', '(a)', ' x'), undefined);
    assert.equal(gluesOnto('    retu', 'rn x', 'rn None'), undefined);
    assert.equal(gluesOnto('x = ', 'y', ' z'), undefined);
  });
});

describe('multi-line completions', () => {
  test('a block opens after ":" or a bracket, on the line or on a blank line after it', () => {
    assert.deepEqual(openBlock('class A:\n    def f(self):'), { indent: 4, sameLine: true, opener: ':' });
    assert.deepEqual(openBlock('x = foo(\n'), { indent: 0, sameLine: false, opener: '(' });
    assert.deepEqual(openBlock('if a:\n\n        '), { indent: 0, sameLine: false, opener: ':' });
    assert.equal(openBlock('    return'), undefined);
    assert.equal(openBlock('x = 1\n    '), undefined);
  });
  test('the completion stops where the code dedents; a closing bracket at the opener is kept', () => {
    const b = openBlock('class A:\n    def f(self):')!;
    assert.equal(cutAtDedent(b, '\n        x = 1\n\n        return x\n    def g(self):\n        pass'), '\n        x = 1\n\n        return x');
    assert.equal(cutAtDedent(b, ' pass\n        y'), ' pass', 'a one-liner after the colon stays one line');
    const call = openBlock('x = foo(')!;
    assert.equal(cutAtDedent(call, '\n    a,\n    b,\n)\nprint(x)'), '\n    a,\n    b,\n)');
    assert.equal(cutAtDedent(call, 'a, b)\nprint(x)'), 'a, b)');
  });
});

describe('byte tokens', () => {
  test('byte-level and byte-fallback names give their bytes; high bytes show as escapes', () => {
    assert.deepEqual(tokenBytes('Ġa'), [0x20, 0x61]);
    assert.deepEqual(tokenBytes('<0xE2>'), [0xe2]);
    assert.deepEqual(tokenBytes('âĢ'), [0xe2, 0x80]);
    assert.equal(escapeHighBytes([0x20, 0xe2, 0x80]), ' \\xe2\\x80');
  });
  test('the demo tokenizer shows its partial UTF-8 tokens as byte escapes, never U+FFFD', (t) => {
    const dir = path.join(root, 'models', 'demo');
    if (skipIfMissing(t, fs.existsSync(path.join(dir, 'tokenizer.json')) ? undefined : `no demo model in ${dir}`, 'repo')) return;
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { vocab_size: number };
    const tok = CodeTokenizer.fromFiles(path.join(dir, 'tokenizer.json'), path.join(dir, 'tokenizer_config.json'), config.vocab_size);
    const partial = tok.tokenTexts().flatMap((text, id) => (text.includes('\ufffd') ? [id] : []));
    if (!partial.length) return t.skip('the demo vocabulary has no partial UTF-8 token');
    for (const id of partial) {
      const shown = tok.tokenDisplay(id);
      assert.ok(!shown.includes('\ufffd'), `token ${id} shows as ${JSON.stringify(shown)}`);
      assert.match(shown, /\\x[0-9a-f]{2}/);
    }
  });
});
