// The .vsix's README is written for users (media/MARKETPLACE.md, packed by scripts/package.mjs in place of the
// developer README): what it does, a screenshot that exists, how to point it at a model, every setting the
// extension contributes, and privacy.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { root } from '../helpers/models';

test('the Marketplace README covers what users need, and the package script packs it', () => {
  const md = fs.readFileSync(path.join(root, 'media', 'MARKETPLACE.md'), 'utf8');
  for (const heading of ['## How to use it', '## Pointing it at your model', '## Settings', '## Privacy'])
    assert.ok(md.includes(heading), `MARKETPLACE.md has "${heading}"`);
  const images = [...md.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
  assert.ok(images.length > 0, 'a screenshot');
  for (const img of images) assert.ok(fs.existsSync(path.join(root, img)), `${img} exists`);
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    contributes: { configuration: { properties: Record<string, unknown> } };
  };
  for (const key of Object.keys(pkg.contributes.configuration.properties)) assert.ok(md.includes(`\`${key}\``), `the settings table names ${key}`);
  assert.match(md, /Nothing leaves your machine/);
  const script = fs.readFileSync(path.join(root, 'scripts', 'package.mjs'), 'utf8');
  assert.match(script, /'--readme-path', 'media\/MARKETPLACE\.md'/);
});
