// The memory of which patches were made or accepted on this machine (globalState, not the workspace: a repository
// cannot write it), and the workspace's trust. See ./trustPolicy for the rules.
import * as vscode from 'vscode';
import type { Patch } from '../engine/types';
import { appliedPatches, patchKey, provenance, type Provenance } from './trustPolicy';

const KEY = 'neuronpatch.knownPatches';
/** Keys kept at most (oldest forgotten first). */
const MAX_KEYS = 5000;

export class PatchTrust {
  private known: Set<string>;

  constructor(private readonly memento: vscode.Memento) {
    this.known = new Set(memento.get<string[]>(KEY, []));
  }

  get trusted(): boolean {
    return vscode.workspace.isTrusted;
  }

  provenance(p: Patch, modelHash: string): Provenance {
    return provenance(p, modelHash, this.trusted, this.known);
  }

  applied(patches: Patch[], modelHash: string): Patch[] {
    return appliedPatches(patches, modelHash, this.trusted, this.known);
  }

  /** Remembers patches as made or accepted here. */
  async remember(patches: Patch[], modelHash: string): Promise<void> {
    for (const p of patches) this.known.add(patchKey(modelHash, p));
    const all = [...this.known].slice(-MAX_KEYS);
    this.known = new Set(all);
    await this.memento.update(KEY, all);
  }
}
