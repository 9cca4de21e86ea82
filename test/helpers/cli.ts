// The built CLI (dist/cli.js) as a subprocess, for the tests that drive it as a user does.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import { absence, entry, root, tempDir } from './models';

/** The bundled CLI the tests run. */
export const cli = path.join(root, 'dist', 'cli.js');

/** One finished run: exit code (null when killed by a signal), stdout and stderr as text. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/cli.js ...args` with its own engine cache (a fresh one unless `cache` is given). */
export function runCli(args: string[], opts: { cache?: string; cwd?: string } = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [cli, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, NEURONPATCH_CACHE: opts.cache ?? path.join(tempDir('cli-cache'), 'cache'), ORT_DISABLE_TELEMETRY: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Skips the test (saying why) when the demo model or the built CLI is absent; true when it can run. */
export function needsCli(t: TestContext): boolean {
  const why = absence(entry('demo')) ?? (fs.existsSync(cli) ? undefined : `${cli} is not built (npm run build)`);
  if (why) t.skip(why);
  return !why;
}
