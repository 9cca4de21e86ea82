// A node:test reporter (`node --test --test-reporter=./test/helpers/skip-summary.mjs`, beside `spec`) that ends the
// run with what was skipped and why: how many tests ran, how many were skipped, then one line per reason with the
// test files it hit. Node's own summary counts skipped tests but not skipped suites (whose tests it never sees), and
// says nothing of why: a green run that checked nothing of an fp16 model must say so. A skipped suite is listed too.
import * as path from 'node:path';

/** @param {AsyncIterable<{ type: string, data: any }>} source the test runner's events */
export default async function* skipSummary(source) {
  let ran = 0;
  let failed = 0;
  /** @type {Map<string, { tests: number, suites: number, files: Set<string> }>} */
  const reasons = new Map();
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    const d = ev.data;
    const suite = d.details?.type === 'suite';
    const skipped = d.skip !== undefined && d.skip !== false;
    if (!skipped) {
      if (!suite) {
        ran++;
        if (ev.type === 'test:fail') failed++;
      }
      continue;
    }
    const why = typeof d.skip === 'string' && d.skip ? d.skip : '(no reason given)';
    const r = reasons.get(why) ?? { tests: 0, suites: 0, files: new Set() };
    if (suite) r.suites++;
    else r.tests++;
    if (d.file) r.files.add(path.basename(d.file).replace(/\.js$/, ''));
    reasons.set(why, r);
  }
  const tests = [...reasons.values()].reduce((s, r) => s + r.tests, 0);
  const suites = [...reasons.values()].reduce((s, r) => s + r.suites, 0);
  const lines = [''];
  if (!reasons.size) {
    lines.push(`skip summary: ${ran} tests ran (${failed} failed), none skipped`);
  } else {
    lines.push(`skip summary: ${ran} tests ran (${failed} failed), ${tests} skipped${suites ? `, and ${suites} whole suite(s) not run` : ''}; why:`);
    const sorted = [...reasons.entries()].sort((a, b) => b[1].tests + b[1].suites - (a[1].tests + a[1].suites));
    for (const [why, r] of sorted) {
      const count = [r.tests ? `${r.tests} test${r.tests > 1 ? 's' : ''}` : '', r.suites ? `${r.suites} suite${r.suites > 1 ? 's' : ''}` : ''].filter(Boolean).join(' + ');
      lines.push(`  ${count}: ${why}  [${[...r.files].sort().join(', ')}]`);
    }
  }
  yield `${lines.join('\n')}\n`;
}
