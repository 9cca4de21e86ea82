// Atomic file replacement: readers see the old file or the new one, never a half-written one, even if the
// process dies mid-write. The temp file sits in the target's directory so the final rename stays on one
// filesystem (rename across filesystems is a copy, not atomic).
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/** Name of a temp file beside `file`; starts with a dot so folder listings and globs skip it. */
export function tempPathBeside(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

const TEMP_RE = /^\.(.+)\.(\d+)\.[0-9a-f]{8}\.tmp$/;
/** Temp files older than this (ms) are swept even when their pid is alive (the pid was reused). */
const TEMP_MAX_AGE_MS = 24 * 3600 * 1000;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Removes the temp files that writeFileAtomic left beside `file` when its process died between creating and
 * renaming them (kill -9, power loss): those whose pid no longer runs, or older than a day. Returns the paths
 * removed. Never throws: a folder that cannot be listed has nothing to sweep.
 */
export async function sweepStaleTemps(file: string): Promise<string[]> {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (!m || m[1] !== base) continue;
    const tmp = path.join(dir, name);
    try {
      const old = Date.now() - (await fs.stat(tmp)).mtimeMs > TEMP_MAX_AGE_MS;
      if (!alive(Number(m[2])) || old) {
        await fs.rm(tmp, { force: true });
        removed.push(tmp);
      }
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}

/** Writes `data` to `file` through a temp file in the same directory: write, fsync, rename, fsync the directory. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = tempPathBeside(file);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(tmp, 'wx');
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(tmp, file);
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  await syncDirectory(path.dirname(file));
}

/** Makes a rename durable. Best effort: some platforms (Windows) cannot open a directory for fsync. */
export async function syncDirectory(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch {
    // Not supported here; the rename itself is still atomic.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
