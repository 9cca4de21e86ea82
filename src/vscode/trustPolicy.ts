// Which of a workspace's patches the extension applies (issue 17, section 5). A patch file can arrive with a
// repository and steer the completions of everyone who opens it with the same model, so:
//   - in a restricted (untrusted) workspace, no patch of the workspace is applied;
//   - in a trusted one, a patch is applied only if it was made on this machine (by a repair here) or the user
//     accepted it; the others are listed as "from the repository" until then.
// A patch is recognised by its id and a digest of its edits: a repository cannot reuse the id of a patch the
// user accepted with other deltas. No vscode import: the unit tests check the policy in plain node.
import { createHash } from 'node:crypto';
import type { Patch } from '../engine/types';

/** Why a patch is not applied, or 'applied'. */
export type Provenance = 'applied' | 'disabled' | 'restricted' | 'repository';

/** The key under which a patch is remembered as made or accepted on this machine: model hash, id, edits digest. */
export function patchKey(modelHash: string, p: Patch): string {
  const digest = createHash('sha256').update(JSON.stringify(p.edits.map((e) => [e.layer, e.neuron, e.delta]))).digest('hex');
  return `${modelHash.slice(0, 16)}/${p.id}/${digest.slice(0, 16)}`;
}

/** Where a patch stands: `trusted` is the workspace's trust, `known` the keys made or accepted here. */
export function provenance(p: Patch, modelHash: string, trusted: boolean, known: ReadonlySet<string>): Provenance {
  if (!trusted) return 'restricted';
  if (!known.has(patchKey(modelHash, p))) return 'repository';
  return p.enabled ? 'applied' : 'disabled';
}

/** The patches to apply, in file order. */
export function appliedPatches(patches: Patch[], modelHash: string, trusted: boolean, known: ReadonlySet<string>): Patch[] {
  return patches.filter((p) => provenance(p, modelHash, trusted, known) === 'applied');
}
