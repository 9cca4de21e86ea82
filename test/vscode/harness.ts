// A small test harness for the extension host (no mocha there): named tests run in order, each with a timeout;
// results go to a JSON file the runner reads (NEURONPATCH_TEST_RESULTS, or .neuronpatch-test-results.json in
// the workspace), and run() rejects when any test failed, as an extensionTestsPath suite should.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';

export interface TestResult {
  name: string;
  ok: boolean;
  ms: number;
  error?: string;
}

export interface TestCase {
  name: string;
  timeoutMs?: number;
  fn: () => Promise<void>;
}

export function resultsFile(): string {
  const env = process.env.NEURONPATCH_TEST_RESULTS;
  if (env) return env;
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  if (!ws) throw new Error('NEURONPATCH_TEST_RESULTS is not set and no folder is open: nowhere to write the results.');
  return path.join(ws, '.neuronpatch-test-results.json');
}

export async function runTests(tests: TestCase[]): Promise<void> {
  const results: TestResult[] = [];
  const file = resultsFile();
  const write = (done: boolean): void => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify({ done, results }, null, 2));
  };
  write(false);
  for (const t of tests) {
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        t.fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${t.timeoutMs ?? 60_000} ms`)), t.timeoutMs ?? 60_000);
        }),
      ]);
      results.push({ name: t.name, ok: true, ms: Date.now() - started });
      console.log(`ok  ${t.name} (${Date.now() - started} ms)`);
    } catch (e) {
      const error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      results.push({ name: t.name, ok: false, ms: Date.now() - started, error });
      console.log(`FAIL ${t.name}: ${error}`);
    } finally {
      clearTimeout(timer);
    }
    write(false);
  }
  write(true);
  const failed = results.filter((r) => !r.ok).length;
  if (failed) throw new Error(`${failed} of ${results.length} extension-host tests failed`);
}

export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export function assertEqual<T>(actual: T, expected: T, what: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected))
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

export async function waitFor<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 30_000): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
