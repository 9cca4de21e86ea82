// An inter-process lock around the read-modify-write of one file, shared by every writer of patch files (the
// CLI's `repair --out`, `demo`, the extension). proper-lockfile (npm) takes it as a directory `<file>.lock` created
// with mkdir (atomic on local and network file systems), refreshes its mtime while held, and treats a lock whose
// mtime is older than STALE_MS as left by a dead process (kill -9) and takes it over.
import * as lockfile from 'proper-lockfile';
import { NeuronpatchError } from '../types';

/** A lock not refreshed for this long (ms) was left by a process that died; proper-lockfile's minimum is 5 s. */
const STALE_MS = 5000;
/** How long (ms, about) a writer waits for another one before giving up: a stale lock plus a few slow writes. */
const WAIT_MS = 20_000;

/** The path of the lock that guards `file` (a directory while held). */
export function lockPathOf(file: string): string {
  return `${file}.lock`;
}

/** Handle passed to the guarded work: `check()` throws if the lock was lost meanwhile (its mtime taken over). */
export interface HeldLock {
  check(): void;
}

/**
 * Runs `work` while holding the lock of `file` (the file need not exist; its folder must). Waits up to about
 * WAIT_MS for another holder. Throws a NeuronpatchError when the lock cannot be had in that time, or when
 * `work` calls check() after the lock was compromised (another process judged it stale); the lock is released
 * however `work` ends.
 */
export async function withFileLock<T>(file: string, work: (lock: HeldLock) => Promise<T>): Promise<T> {
  let compromised: Error | undefined;
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(file, {
      realpath: false,
      stale: STALE_MS,
      lockfilePath: lockPathOf(file),
      retries: { retries: Math.ceil(WAIT_MS / 250), factor: 1, minTimeout: 100, maxTimeout: 250, randomize: true },
      onCompromised: (e) => {
        compromised = e; // the default handler throws from a timer, which would crash the extension host
      },
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOCKED')
      throw new NeuronpatchError(
        `${file} is being written by another program (its lock ${lockPathOf(file)} was held for over ${WAIT_MS / 1000} s); nothing was written.`,
        'Try again when it is done; if no neuronpatch process is running, remove the .lock folder.',
      );
    throw new NeuronpatchError(`Cannot lock ${file} for writing: ${(e as Error).message}`);
  }
  const held: HeldLock = {
    check: () => {
      if (compromised)
        throw new NeuronpatchError(`The lock on ${file} was taken over by another program while this one was writing; nothing was written (${compromised.message}).`);
    },
  };
  try {
    return await work(held);
  } finally {
    await release().catch(() => undefined); // already released when compromised
  }
}
