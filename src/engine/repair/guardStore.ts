// The user's guard set: completions they accepted and did not edit afterwards, for one workspace and one model,
// kept in `.neuronpatch/guard-<model hash>.json` beside the patch file (never sent anywhere). A repair is checked
// against it (correct lines kept) and the keyed method keeps its neurons silent on it. Capped: the oldest lines
// go first; a prompt keeps only its last MAX_PROMPT_CHARS characters (more than the context window reads).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic';
import type { GuardLine } from './measures';

export const GUARD_FORMAT = 'neuronpatch-guard/1';
export const DEFAULT_GUARD_CAP = 200;
const MAX_PROMPT_CHARS = 4000;
const MAX_LINE_CHARS = 400;

interface GuardFile {
  format: typeof GUARD_FORMAT;
  model: { hash: string };
  lines: (GuardLine & { at: string })[];
}

/** The guard file of a model in a folder (`.neuronpatch/`): one per model, by the first 16 hex digits of its hash. */
export function guardFileOf(folder: string, modelHash: string): string {
  return path.join(folder, `guard-${modelHash.slice(0, 16)}.json`);
}

export class GuardStore {
  private constructor(readonly file: string, private readonly modelHash: string, private lines: (GuardLine & { at: string })[], private readonly cap: number) {}

  /**
   * Opens (or starts) the guard file of `modelHash` in `folder`. A file that cannot be read as a guard file of
   * this model starts an empty set and is only overwritten on the next add (it holds nothing but past completions).
   */
  static async open(folder: string, modelHash: string, cap = DEFAULT_GUARD_CAP): Promise<GuardStore> {
    const file = guardFileOf(folder, modelHash);
    let lines: GuardFile['lines'] = [];
    try {
      const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as Partial<GuardFile>;
      if (parsed.format === GUARD_FORMAT && parsed.model?.hash === modelHash && Array.isArray(parsed.lines)) {
        lines = parsed.lines.filter((l) => l && typeof l.prompt === 'string' && typeof l.desired === 'string' && typeof l.at === 'string');
      }
    } catch {
      // absent or unreadable: an empty set
    }
    return new GuardStore(file, modelHash, lines.slice(-cap), cap);
  }

  /** The guard lines, oldest first. */
  list(): GuardLine[] {
    return this.lines.map(({ prompt, desired, source }) => ({ prompt, desired, ...(source ? { source } : {}) }));
  }

  get size(): number {
    return this.lines.length;
  }

  /**
   * Adds a line the model completed right (its prompt cut to the last MAX_PROMPT_CHARS characters); the same
   * prompt end and line again replace the older entry. Returns false for a line that cannot be a guard line
   * (empty, several lines, too long). Saved at once.
   */
  async add(line: GuardLine): Promise<boolean> {
    const desired = line.desired.replace(/\r\n/g, '\n');
    if (!desired.trim() || desired.includes('\n') || desired.length > MAX_LINE_CHARS) return false;
    const prompt = line.prompt.replace(/\r\n/g, '\n').slice(-MAX_PROMPT_CHARS);
    this.lines = this.lines.filter((l) => !(l.desired === desired && l.prompt.slice(-200) === prompt.slice(-200)));
    this.lines.push({ prompt, desired, ...(line.source ? { source: line.source } : {}), at: new Date().toISOString() });
    if (this.lines.length > this.cap) this.lines = this.lines.slice(-this.cap);
    await this.save();
    return true;
  }

  private async save(): Promise<void> {
    await fs.mkdir(path.dirname(this.file), { recursive: true });
    const body: GuardFile = { format: GUARD_FORMAT, model: { hash: this.modelHash }, lines: this.lines };
    await writeFileAtomic(this.file, `${JSON.stringify(body, null, 1)}\n`);
  }
}
