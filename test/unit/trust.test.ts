// Untrusted workspaces (issue 17, section 5): which of a workspace's patches the extension applies. The policy
// is plain code (src/vscode/trustPolicy.ts) checked here; the manifest must declare limited support.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { Patch } from '../../src/engine/types';
import { appliedPatches, patchKey, provenance } from '../../src/vscode/trustPolicy';
import { root } from '../helpers/models';

const hash = 'd'.repeat(64);

function patch(id: string, delta = [0.5, -0.25], enabled = true): Patch {
  return {
    id, createdAt: '2026-11-30T00:00:00.000Z', enabled, method: 'minimal',
    case: { prompt: 'x = ', desired: '1', before: '2', after: '1' },
    edits: [{ layer: 0, neuron: 3, delta }],
    metrics: { success: true, failingTokens: 1, specificity: null, meanKl: null, generalization: null, repairMs: 1 },
  };
}

describe('which workspace patches are applied', () => {
  const mine = patch('made-here');
  const shipped = patch('from-repo');
  const off = patch('made-here-off', [1, 1], false);
  const known = new Set([patchKey(hash, mine), patchKey(hash, off)]);

  it('Restricted Mode: none, whoever made them', () => {
    assert.deepEqual(appliedPatches([mine, shipped, off], hash, false, known), []);
    assert.equal(provenance(mine, hash, false, known), 'restricted');
  });

  it('a trusted workspace: patches made here, enabled; those that came with the repository are held', () => {
    assert.deepEqual(appliedPatches([mine, shipped, off], hash, true, known).map((p) => p.id), ['made-here']);
    assert.equal(provenance(shipped, hash, true, known), 'repository');
    assert.equal(provenance(off, hash, true, known), 'disabled');
  });

  it('accepting a patch applies it; a repository reusing its id with other deltas, or another model, is held again', () => {
    const accepted = new Set([...known, patchKey(hash, shipped)]);
    assert.deepEqual(appliedPatches([mine, shipped], hash, true, accepted).map((p) => p.id), ['made-here', 'from-repo']);
    const swapped = { ...mine, edits: [{ layer: 0, neuron: 3, delta: [50, -0.25] }] };
    assert.equal(provenance(swapped, hash, true, accepted), 'repository');
    assert.equal(provenance(mine, 'e'.repeat(64), true, accepted), 'repository');
  });

  it('package.json declares limited support for untrusted workspaces, restricting the model and patch file settings', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    const u = pkg.capabilities?.untrustedWorkspaces;
    assert.equal(u?.supported, 'limited');
    assert.ok(u.description.length > 20);
    assert.deepEqual([...u.restrictedConfigurations].sort(), ['neuronpatch.modelFolder', 'neuronpatch.patchFile']);
  });
});
