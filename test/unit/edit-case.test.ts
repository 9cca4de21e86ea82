// The repair case an edited suggestion makes (src/vscode/editCase.ts): one line the engine accepts, from where the
// user's text first differs from the suggestion, even when the suggestion spanned several lines.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { checkDesired, repairTarget } from '../../src/engine/trace/teacher';
import { editCase, isNoCase, type EditCase } from '../../src/vscode/editCase';
import { entry, modelOf, releaseAll } from '../helpers/models';

after(releaseAll);

function made(accepted: string, edited: string): EditCase {
  const c = editCase(accepted, edited);
  assert.ok(c && !isNoCase(c), `a case from ${JSON.stringify(edited)}: ${JSON.stringify(c)}`);
  return c;
}

test('an edited multi-line suggestion becomes a one-line case on the edited line', () => {
  // The user's report: "\n    return x.shape[0]" accepted after `def mul(x, y):`, edited into `return x * y`.
  const accepted = '\n    return x.shape[0]';
  const edited = '\n    return x * y';
  const c = made(accepted, edited);
  assert.equal(c.line, 1, 'the case is on the second line of the suggestion, the one the user edited');
  assert.equal(edited.slice(0, c.promptChars), '\n    ', "the prompt runs to the start of that line's text");
  assert.equal(c.desired, 'return x * y', "the desired text is the user's line");
  assert.equal(checkDesired(c.desired), c.desired, 'the engine accepts the desired text (one line)');
  const deeper = made('\n    y = x\n    return x.shape[0]', '\n    y = x\n    return y');
  assert.deepEqual([deeper.line, deeper.desired, deeper.promptChars], [2, 'return y', '\n    y = x\n    '.length]);
});

test('an edit on the first line is the whole first line, as for a one-line suggestion', () => {
  assert.deepEqual(made(' _type(a, b)', ' a + b'), { promptChars: 0, desired: ' a + b', line: 0 });
  const c = made(' x):\n    pass', ' y):\n    pass\n');
  assert.deepEqual([c.line, c.promptChars, c.desired], [0, 0, ' y):'], 'only the first line: the engine repairs one line');
});

test('an emptied line makes no case, with a reason; nothing changed makes none', () => {
  const none = editCase('\n    return x.shape[0]', '\n    ');
  assert.ok(isNoCase(none), 'an emptied line');
  assert.match(none.reason, /Line 2 of the edited suggestion is empty/);
  assert.equal(editCase('\n    return x', '\n    return x'), undefined, 'nothing differs: no case');
  assert.deepEqual(made('a\r\n    b', 'a\r\n    c'), { promptChars: 6, desired: 'c', line: 1 }, 'CRLF reads as LF');
});

test('the case from an edited multi-line suggestion builds a repair target on the demo model', async (t) => {
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  const before = 'def mul(x, y):';
  const edited = '\n    return x * y';
  const c = made('\n    return x.shape[0]', edited);
  const target = repairTarget(model.loaded, before + edited.slice(0, c.promptChars), c.desired);
  assert.ok(target.targets.length >= 1, 'the engine makes targets of the case');
});
