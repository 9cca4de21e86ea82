// Which files of a model folder go into an exported copy. Not copied: hidden entries (.git, caches), every
// .onnx file (the exported one is written separately) and data files named after one (`X.onnx.data`,
// `X.onnx_data`: weights of other graphs, or stale), the external data of the exported model (written
// separately), MODEL_CARD.md and reference_logits.json (they describe the unpatched weights) and PATCHES.md
// (replaced).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

const replaced = new Set(['model_card.md', 'patches.md', 'reference_logits.json']);

/**
 * Relative paths (from `root`) of the files to copy. `skip` holds relative paths handled by the caller.
 * Symbolic links to files are followed (Hugging Face cache folders are made of them); links to folders are
 * not (they can loop).
 */
export async function filesToCopy(root: string, skip: ReadonlySet<string>): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fs.readdir(path.join(root, rel), { withFileTypes: true });
    const onnxNames = entries.filter((e) => e.name.toLowerCase().endsWith('.onnx')).map((e) => e.name);
    for (const e of entries) {
      const name = e.name;
      const r = path.join(rel, name);
      if (name.startsWith('.') || skip.has(r)) continue;
      let kind: 'file' | 'dir' | 'other' = e.isFile() ? 'file' : e.isDirectory() ? 'dir' : 'other';
      if (e.isSymbolicLink()) {
        const st = await fs.stat(path.join(root, r)).catch(() => undefined);
        kind = st?.isFile() ? 'file' : 'other';
      }
      if (kind === 'dir') await walk(r);
      if (kind !== 'file') continue;
      const lower = name.toLowerCase();
      if (lower.endsWith('.onnx') || replaced.has(lower)) continue;
      if (onnxNames.some((o) => name.startsWith(o))) continue;
      out.push(r);
    }
  };
  await walk('');
  return out.sort();
}

/** Copies a file (following links) and makes the copy writable by its owner: it is the user's new folder. */
export async function copyInto(from: string, to: string): Promise<void> {
  await fs.mkdir(path.dirname(to), { recursive: true });
  await fs.copyFile(from, to);
  const { mode } = await fs.stat(to);
  if ((mode & 0o200) === 0) await fs.chmod(to, mode | 0o200);
}

/** fsync one file, so that the final rename publishes complete files. */
export async function syncFile(file: string): Promise<void> {
  const h = await fs.open(file, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}
