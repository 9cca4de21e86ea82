// The walkthrough's "See the bad completion" step against the demo model as it is now: the model still gets the
// demo line wrong, and any ghost text the step quotes is the model's own greedy completion (none is quoted today;
// a quoted one goes stale with the next model build, which this test then catches).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { DEMO_RIGHT, DEMO_TEXT } from '../../src/vscode/demo';
import { entry, modelOf, releaseAll, root } from '../helpers/models';

after(releaseAll);

/** The walkthrough's texts of the step: its markdown page and its description in package.json. */
function stepTexts(): string[] {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    contributes: { walkthroughs: { steps: { id: string; description: string; media: { markdown?: string } }[] }[] };
  };
  const step = pkg.contributes.walkthroughs.flatMap((w) => w.steps).find((s) => s.id === 'seeCompletion');
  assert.ok(step, 'the walkthrough has its "seeCompletion" step');
  return [step.description, fs.readFileSync(path.join(root, step.media.markdown!), 'utf8')];
}

test("the walkthrough's bad completion is the demo model's: it gets the demo line wrong, and a quoted one is its own", async (t) => {
  const model = await modelOf(t, entry('demo'));
  if (!model) return;
  // As the editor asks for it (src/vscode/completions.ts): one line, the default token budget of the setting.
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { contributes: { configuration: { properties: Record<string, { default: unknown }> } } };
  const maxNewTokens = pkg.contributes.configuration.properties['neuronpatch.maxNewTokens'].default as number;
  const got = (await model.generate(DEMO_TEXT, { maxNewTokens })).completion;
  assert.notEqual(got, DEMO_RIGHT, `the demo model completes the demo line right now (${JSON.stringify(got)}): the walkthrough has nothing to repair`);
  const visible = (s: string): string => s.replace(/^ /, '␣');
  for (const text of stepTexts()) {
    assert.ok(text.includes(`\`${visible(DEMO_RIGHT)}\``), `the step names the right completion: ${text}`);
    // Every quoted ghost text (backticked, ␣ and more) is the right one or the model's actual completion.
    for (const [, quoted] of text.matchAll(/`(␣[^`]+)`/g))
      assert.ok(quoted === visible(DEMO_RIGHT) || quoted === visible(got), `the step quotes ${JSON.stringify(quoted)}; the model writes ${JSON.stringify(visible(got))}`);
  }
});
