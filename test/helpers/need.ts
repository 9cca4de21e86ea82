// What a test needs that a checkout may not have, and what happens when it is missing: the TEST is skipped with a
// message saying what is absent and how to get it (never a whole suite silently), so that `npm test`'s summary
// (test/helpers/skip-summary.mjs) lists it. In CI (`CI=true`) a missing thing that CI is supposed to have — anything
// committed to the repository, and Debian's python3 that .ci/run installs — fails the test instead: a green CI run
// never rests on a skip that hides a broken checkout.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TestContext } from 'node:test';

/**
 * Where a test's requirement comes from:
 * - `repo`: committed to the repository (models/demo, bench/cases, test/fixtures/*) or installed by .ci/run;
 *   required in CI.
 * - `beside`: ../shared/fixtures, which sits beside the project's own checkouts only; optional everywhere.
 */
export type Provenance = 'repo' | 'beside';

/** True when the tests run in CI (`CI` set to anything but empty, `0` or `false`, as CI services set it). */
export const inCI = (): boolean => !!process.env.CI && !/^(0|false)$/i.test(process.env.CI);

/**
 * Skips the test when `why` says something is missing, and returns true (the test then returns at once); returns
 * false when `why` is undefined. In CI a missing `repo` requirement throws instead, failing the test.
 * @param t the running test (`test('…', (t) => …)`)
 * @param why undefined when everything is there; otherwise what is absent and how to get it
 * @param from where the missing thing comes from (see {@link Provenance})
 * @throws Error in CI for a missing `repo` requirement: "CI=true and … is missing: …"
 */
export function skipIfMissing(t: TestContext, why: string | undefined, from: Provenance): boolean {
  if (why === undefined) return false;
  if (from === 'repo' && inCI()) throw new Error(`CI=true and something CI must have is missing: ${why}`);
  t.skip(why);
  return true;
}

/**
 * Undefined when every file exists; otherwise which are absent (relative to `root` when given), e.g.
 * "bench/cases/regression.jsonl is absent". For `skipIfMissing`'s `why`.
 */
export function missingFiles(files: string[], root?: string): string | undefined {
  const gone = files.filter((f) => !fs.existsSync(f)).map((f) => (root ? path.relative(root, f) : f));
  return gone.length ? `${gone.join(', ')} ${gone.length > 1 ? 'are' : 'is'} absent` : undefined;
}
