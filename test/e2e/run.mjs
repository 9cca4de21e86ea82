#!/usr/bin/env node
// End-to-end tests of the extension in a real VS Code: code-server 4.100.3 (installed into .e2e/ by
// .ci/e2e-setup.sh) driven by playwright-core and Debian's chromium, offline, with the real demo model.
//
//   node test/e2e/run.mjs            the extension-host suite, then the UI flow
//   node test/e2e/run.mjs --suite    only the extension-host suite (test/vscode, extensionTestsPath)
//   node test/e2e/run.mjs --ui       only the UI flow
//   node test/e2e/run.mjs --smoke    only load the extension and check its views (no model needed)
//   --vsix FILE                      install a packed .vsix instead of loading the development folder
//   --model DIR                      use another model folder than models/demo (workspace setting)
//
// Needs: `node scripts/build.mjs` (dist/ and out/), models/demo/. Screenshots and logs go to test-results/.
// Prints one line per check and a last line `N passed, N failed`; exits non-zero when anything failed.
// code-server runs in its own process group, killed at the end whatever happens.
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareWorkspace, readCase } from './workspace.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const E2E = path.join(ROOT, '.e2e');
const RESULTS = path.join(ROOT, 'test-results');
const SCRATCH = path.join(E2E, 'scratch');
const CODE_SERVER = path.join(E2E, 'node_modules', '.bin', 'code-server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const args = process.argv.slice(2);
const only = (flag) => args.includes(flag);
const vsixArg = args.includes('--vsix') ? path.resolve(args[args.indexOf('--vsix') + 1]) : undefined;
const modelArg = args.includes('--model') ? path.resolve(args[args.indexOf('--model') + 1]) : undefined;
const phases = only('--smoke') ? ['smoke'] : only('--suite') ? ['suite'] : only('--ui') ? ['ui'] : ['suite', 'ui'];

const results = [];
function record(name, ok, detail = '') {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
}
function finish() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(path.join(RESULTS, 'e2e-results.json'), JSON.stringify(results, null, 2));
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed || passed === 0 ? 1 : 0;
}

// ---- processes we started: always stopped -------------------------------------------------------------
const groups = new Set();
function killGroups() {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  groups.clear();
}
process.on('exit', killGroups);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killGroups();
    process.exit(130);
  });
}

function need(file, hint) {
  if (!fs.existsSync(file)) {
    console.error(`e2e: missing ${path.relative(ROOT, file)}: ${hint}`);
    record('prerequisites', false, `missing ${path.relative(ROOT, file)}`);
    finish();
    process.exit(1);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const USER_SETTINGS = {
  'workbench.startupEditor': 'none',
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'security.workspace.trust.enabled': false,
  'editor.inlineSuggest.enabled': true,
  'editor.quickSuggestions': { other: false, comments: false, strings: false },
  'editor.suggestOnTriggerCharacters': false,
  'editor.codeLens': true,
  'files.autoSave': 'off',
  'git.enabled': false,
  'python.languageServer': 'None',
  'chat.disableAIFeatures': true,
};

/** Starts code-server in its own process group with everything it writes under `dir`. */
async function startCodeServer(dir, extraEnv = {}) {
  for (const d of ['tmp', 'xdg-config', 'xdg-data', 'ud/User', 'ext', 'chromium']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ud/User/settings.json'), JSON.stringify(USER_SETTINGS, null, 2));
  fs.writeFileSync(path.join(dir, 'config.yaml'), 'auth: none\n');
  const port = await freePort();
  const env = {
    ...process.env,
    XDG_CONFIG_HOME: path.join(dir, 'xdg-config'),
    XDG_DATA_HOME: path.join(dir, 'xdg-data'),
    XDG_CACHE_HOME: path.join(dir, 'xdg-cache'),
    TMPDIR: path.join(dir, 'tmp'),
    // The engine's cache of instrumented graphs, kept between runs (keyed by the model's hash).
    NEURONPATCH_CACHE: process.env.NEURONPATCH_CACHE || path.join(E2E, 'cache'),
    ...extraEnv,
  };
  const base = [
    '--auth', 'none', '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust',
    '--disable-getting-started-override', '--user-data-dir', path.join(dir, 'ud'), '--extensions-dir', path.join(dir, 'ext'),
    '--config', path.join(dir, 'config.yaml'),
  ];
  if (vsixArg) {
    execFileSync(CODE_SERVER, [...base, '--install-extension', vsixArg], { env, stdio: 'inherit' });
  }
  const log = fs.openSync(path.join(dir, 'code-server.log'), 'a');
  const child = spawn(CODE_SERVER, ['--bind-addr', `127.0.0.1:${port}`, ...base], {
    env,
    detached: true,
    stdio: ['ignore', log, log],
  });
  groups.add(child.pid);
  let exited = false;
  child.on('exit', () => (exited = true));
  const until = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`code-server exited at start; see ${path.join(dir, 'code-server.log')}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > until) throw new Error('code-server did not answer /healthz within 60 s');
    await sleep(200);
  }
  return {
    port,
    env,
    async stop() {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      for (let i = 0; i < 30 && !exited; i++) await sleep(100);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      groups.delete(child.pid);
    },
  };
}

function workbenchUrl(port, folder, tests) {
  const remote = (p) => `vscode-remote://127.0.0.1:${port}${p}`;
  const payload = [];
  if (!vsixArg) payload.push(['extensionDevelopmentPath', remote(ROOT)]);
  if (tests) payload.push(['extensionTestsPath', remote(tests)]);
  const q = new URLSearchParams({ folder });
  if (payload.length) q.set('payload', JSON.stringify(payload));
  return `http://127.0.0.1:${port}/?${q}`;
}

async function launchBrowser(dir, env) {
  const require = createRequire(path.join(E2E, 'package.json'));
  const { chromium } = require('playwright-core');
  return chromium.launchPersistentContext(path.join(dir, 'chromium'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    env: { ...process.env, XDG_CONFIG_HOME: env.XDG_CONFIG_HOME, TMPDIR: env.TMPDIR, HOME: process.env.HOME },
    viewport: { width: 1600, height: 1000 },
  });
}

async function screenshot(page, name) {
  fs.mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, name);
  try {
    await page.screenshot({ path: file });
    console.log(`     screenshot: ${path.relative(ROOT, file)}`);
  } catch (e) {
    console.log(`     (no screenshot ${name}: ${e.message})`);
  }
}

// ---- driving the workbench ------------------------------------------------------------------------------

async function waitWorkbench(page) {
  await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  await page.locator('.statusbar').waitFor({ timeout: 60_000 });
}

/** Runs a command by its title through the palette (F1); retries once if it is not listed yet. */
async function palette(page, title) {
  for (let attempt = 0; attempt < 3; attempt++) {
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible', timeout: 10_000 });
    await input.fill(`>${title}`);
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first();
    try {
      await row.waitFor({ state: 'visible', timeout: 5_000 });
      await page.keyboard.press('Enter');
      return;
    } catch {
      await sleep(1000);
    }
  }
  throw new Error(`command "${title}" is not in the palette`);
}

async function openFile(page, relative) {
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+P');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(relative);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: path.basename(relative) }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press('Enter');
  await page.locator(`.tab.active[data-resource-name="${path.basename(relative)}"]`).waitFor({ timeout: 10_000 });
}

/** Focuses the first editor group and puts the cursor at the end of the file. */
async function cursorAtEnd(page) {
  // The editor must have focus before Control+End lands; on a loaded machine the palette's focus change can lag,
  // so click into the text, press, and check the status bar's cursor position moved off 1:1.
  for (let attempt = 0; attempt < 5; attempt++) {
    await page.keyboard.press('Escape');
    await palette(page, 'View: Focus First Editor Group');
    await page.keyboard.press('Escape');
    await page.locator('.monaco-editor .view-lines').first().click().catch(() => undefined);
    await page.keyboard.press('Control+End');
    await sleep(300);
    const where = await page.locator('.statusbar-item', { hasText: /Ln \d+, Col \d+/ }).first().textContent().catch(() => '');
    if (where && !/Ln 1, Col 1\b/.test(where)) return;
    await sleep(1000);
  }
}

async function ghostText(page) {
  return page.evaluate(() => {
    const parts = [...document.querySelectorAll('.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text-decoration-preview, .monaco-editor .ghost-text')]
      .map((e) => e.textContent ?? '');
    return parts.join('').replace(/\u00a0/g, ' ');
  });
}

/** Triggers an inline suggestion at the cursor and returns its text once it shows (or '' after the timeout). */
async function suggestionAtCursor(page, timeoutMs, expect) {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    await page.keyboard.press('Escape');
    await palette(page, 'Trigger Inline Suggestion');
    const stop = Math.min(until, Date.now() + 15_000);
    while (Date.now() < stop) {
      last = await ghostText(page);
      if (last && (expect === undefined || same(last, expect))) return last;
      await sleep(250);
    }
  }
  return last;
}

const same = (a, b) => a.replace(/\s+$/, '') === b.replace(/\s+$/, '');

function webview(page) {
  return page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
}

function readPatchFile(ws) {
  const file = path.join(ws, '.neuronpatch', 'patches.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
}

async function waitForValue(probe, what, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

let currentPage;
/** Console messages of the page and its frames (webviews included) that report a CSP violation. */
const cspViolations = [];
let failureShots = 0;

async function step(name, fn) {
  try {
    const detail = await fn();
    record(name, true, typeof detail === 'string' ? detail : '');
    return true;
  } catch (e) {
    record(name, false, ((e && e.message) || String(e)).split('\n')[0]);
    if (currentPage) await screenshot(currentPage, `failure-${++failureShots}.png`);
    return false;
  }
}

// ---- phases ---------------------------------------------------------------------------------------------

async function withCodeServer(tag, extraEnv, fn) {
  const dir = path.join(SCRATCH, tag);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  let server;
  let browser;
  try {
    server = await startCodeServer(dir, extraEnv);
    browser = await launchBrowser(dir, server.env);
    const page = browser.pages()[0] ?? (await browser.newPage());
    currentPage = page;
    page.on('console', (m) => {
      const t = m.text();
      if (m.type() === 'error' || m.type() === 'warning') fs.appendFileSync(path.join(dir, 'console.log'), `[${m.type()}] ${t}\n`);
      if (/Content Security Policy|Refused to (load|apply|execute|connect)/i.test(t)) cspViolations.push(t);
    });
    page.on('pageerror', (e) => fs.appendFileSync(path.join(dir, 'page-errors.log'), `${e.message}\n`));
    await fn({ dir, server, page });
  } catch (e) {
    record(`${tag}: run`, false, e.message);
  } finally {
    await browser?.close().catch(() => undefined);
    await server?.stop();
    // Keep code-server's log and the extension host's logs with the artefacts.
    copyLogs(dir, tag);
  }
}

function copyLogs(dir, tag) {
  try {
    const out = path.join(RESULTS, `logs-${tag}`);
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out, { recursive: true });
    for (const f of ['code-server.log', 'console.log', 'page-errors.log'])
      if (fs.existsSync(path.join(dir, f))) fs.copyFileSync(path.join(dir, f), path.join(out, f));
    const logs = path.join(dir, 'ud', 'logs');
    if (fs.existsSync(logs)) fs.cpSync(logs, path.join(out, 'vscode'), { recursive: true });
  } catch {
    /* best effort */
  }
}

async function smokePhase() {
  const kase = readCase(modelArg);
  await withCodeServer('smoke', {}, async ({ dir, server, page }) => {
    const ws = prepareWorkspace(path.join(dir, 'workspace'), kase, modelArg);
    await page.goto(workbenchUrl(server.port, ws), { timeout: 60_000 });
    await step('smoke: the workbench loads', () => waitWorkbench(page));
    await step('smoke: the extension adds its status bar item', async () => {
      await page.locator('.statusbar-item', { hasText: /Neuron Patch|patch/ }).first().waitFor({ timeout: 60_000 });
    });
    await step('smoke: its commands are in the palette', async () => {
      await openFile(page, kase.file);
      await page.keyboard.press('F1');
      await page.locator('.quick-input-widget input').fill('>Neuron Patch: Repair Completion at Cursor');
      await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Repair Completion at Cursor' }).first().waitFor({ timeout: 20_000 });
      await page.keyboard.press('Escape');
    });
    await step('smoke: the Patches view opens', async () => {
      await palette(page, 'Neuron Patch: Show Patches');
      await page.locator('.part.sidebar .title-label', { hasText: /Patches/i }).first().waitFor({ timeout: 20_000 });
      await screenshot(page, 'smoke-patches-view.png');
    });
  });
}

async function suitePhase() {
  const kase = readCase(modelArg);
  const resultsFile = path.join(SCRATCH, 'suite-results.json');
  fs.rmSync(resultsFile, { force: true });
  await withCodeServer('suite', { NEURONPATCH_TEST_RESULTS: resultsFile }, async ({ dir, server, page }) => {
    const ws = prepareWorkspace(path.join(dir, 'workspace'), kase, modelArg);
    await page.goto(workbenchUrl(server.port, ws, path.join(ROOT, 'out', 'test', 'vscode', 'index.js')), { timeout: 60_000 });
    const until = Date.now() + 15 * 60_000;
    let report;
    while (Date.now() < until) {
      try {
        report = JSON.parse(fs.readFileSync(resultsFile, 'utf8'));
        if (report.done) break;
      } catch {
        /* not written yet */
      }
      await sleep(500);
    }
    await screenshot(page, 'suite-end.png');
    if (!report) {
      record('suite: results', false, `the extension-host suite wrote no results (${path.relative(ROOT, resultsFile)})`);
      return;
    }
    for (const r of report.results) record(`suite: ${r.name}`, r.ok, r.ok ? `${r.ms} ms` : r.error);
    if (!report.done) record('suite: finished', false, 'the suite did not finish within 15 minutes');
  });
}

async function uiPhase() {
  const kase = readCase(modelArg);
  await withCodeServer('ui', {}, async ({ dir, server, page }) => {
    const ws = prepareWorkspace(path.join(dir, 'workspace'), kase, modelArg);
    await page.goto(workbenchUrl(server.port, ws), { timeout: 60_000 });
    if (!(await step('ui: the workbench loads with the extension', async () => {
      await waitWorkbench(page);
      await page.locator('.statusbar-item', { hasText: /Neuron Patch|patch/ }).first().waitFor({ timeout: 60_000 });
    }))) return;

    let before = kase.before;
    if (!(await step('ui: an inline completion from the demo model appears in sample.py', async () => {
      await openFile(page, kase.file);
      await cursorAtEnd(page);
      const text = await suggestionAtCursor(page, 180_000, kase.before);
      if (!text) throw new Error('no ghost text appeared');
      if (kase.before !== undefined && !same(text, kase.before))
        throw new Error(`ghost text ${JSON.stringify(text)}, the CLI gives ${JSON.stringify(kase.before)}`);
      if (same(text, kase.desired)) throw new Error('the model already gives the desired text: not a failing case');
      before = text;
      await screenshot(page, 'completion-before.png');
      return JSON.stringify(text);
    }))) return;

    if (!(await step('ui: the repair command asks for the desired text, prefilled with the completion', async () => {
      await cursorAtEnd(page);
      await palette(page, 'Neuron Patch: Repair Completion at Cursor');
      const input = page.locator('.quick-input-widget input');
      await waitForValue(async () => {
        const v = await input.inputValue().catch(() => '');
        return v && !v.startsWith('>') ? v : undefined;
      }, 'the input box', 60_000);
      const prefilled = await input.inputValue();
      if (!same(prefilled, before)) throw new Error(`prefilled with ${JSON.stringify(prefilled)}, expected ${JSON.stringify(before)}`);
      await input.fill(kase.desired);
      await page.keyboard.press('Enter');
    }))) return;

    const view = webview(page);
    if (!(await step('ui: the panel shows before/after and the neurons', async () => {
      await view.locator('[data-test="after"]').waitFor({ timeout: 10 * 60_000 });
      const b = await view.locator('[data-test="before"]').innerText();
      const a = await view.locator('[data-test="after"]').innerText();
      // The engine's repair decodes the "before" completion itself; it must agree with the ghost text.
      if (!same(b, before) && !b.startsWith(before.trimEnd())) throw new Error(`panel before ${JSON.stringify(b)}, ghost text ${JSON.stringify(before)}`);
      if (!same(a, kase.desired)) throw new Error(`panel after ${JSON.stringify(a)}, desired ${JSON.stringify(kase.desired)}`);
      const neurons = await view.locator('table[data-test="neurons"] tbody tr').count();
      if (neurons < 1) throw new Error('no neurons listed');
      const positions = await view.locator('table[data-test="positions"] tbody tr').count();
      if (positions < 1) throw new Error('no failing positions listed');
      const bars = await view.locator('[data-test="layers"] .row').count();
      const ours = cspViolations.filter((v) => /webview|vscode-resource|vscode-cdn|main\.js|panel\.css|codicon/.test(v));
      if (ours.length) throw new Error(`the panel broke its Content-Security-Policy: ${ours[0]}`);
      const diff = await view.locator('[data-test="after"] .added').count();
      await screenshot(page, 'panel.png');
      const scrollTo = (id) => view.locator(`#${id}`).evaluate((e) => e.scrollIntoView({ block: 'start' }));
      await scrollTo('neurons');
      await screenshot(page, 'panel-neurons.png');
      await scrollTo('side-effects');
      await screenshot(page, 'panel-side-effects.png');
      await scrollTo('completion');
      return `${neurons} neurons, ${positions} failing positions, ${bars} layer bars, ${diff} highlighted insertions`;
    }))) return;

    if (!(await step('ui: Apply writes the patch file', async () => {
      await view.locator('vscode-button#apply:not([disabled])').click();
      await view.locator('[data-test="status"]', { hasText: 'Applied' }).waitFor({ timeout: 60_000 });
      const file = await waitForValue(() => readPatchFile(ws), 'the patch file');
      if (file.patches.length !== 1 || !file.patches[0].enabled || file.patches[0].case.desired !== kase.desired)
        throw new Error(`patch file holds ${JSON.stringify(file.patches.map((p) => [p.id, p.enabled, p.case.desired]))}`);
      await screenshot(page, 'panel-applied.png');
      return `patch ${file.patches[0].id}, ${file.patches[0].edits.length} neurons`;
    }))) return;

    await step('ui: the completion at that spot is now the desired one', async () => {
      await cursorAtEnd(page);
      const text = await suggestionAtCursor(page, 60_000, kase.desired);
      if (!same(text, kase.desired)) throw new Error(`ghost text ${JSON.stringify(text)}`);
      await screenshot(page, 'completion-after.png');
      return JSON.stringify(text);
    });

    await step('ui: the status bar counts the active patch', async () => {
      await page.locator('.statusbar-item', { hasText: '1 patch' }).first().waitFor({ timeout: 10_000 });
    });

    if (!(await step('ui: disabling the patch in the tree writes the file', async () => {
      await page.keyboard.press('Escape');
      await palette(page, 'Neuron Patch: Show Patches');
      const row = page.locator('.monaco-list-row', { hasText: kase.desired.trim().slice(0, 20) }).first();
      await row.waitFor({ timeout: 20_000 });
      await screenshot(page, 'patches-tree.png');
      await row.locator('.custom-view-tree-node-item-checkbox').click();
      await waitForValue(() => readPatchFile(ws)?.patches[0]?.enabled === false, 'enabled: false in the patch file', 20_000);
      await page.locator('.statusbar-item', { hasText: '0 patches' }).first().waitFor({ timeout: 10_000 });
      await screenshot(page, 'patches-tree-disabled.png');
    }))) return;

    await step('ui: with the patch disabled the old completion is back', async () => {
      await openFile(page, kase.file);
      await cursorAtEnd(page);
      const text = await suggestionAtCursor(page, 60_000, before);
      if (!same(text, before)) throw new Error(`ghost text ${JSON.stringify(text)}, expected ${JSON.stringify(before)}`);
      return JSON.stringify(text);
    });

    // The path users hit most: accept the suggestion, fix it by hand, and repair from the CodeLens.
    if (!(await step('ui: editing an accepted suggestion offers "Repair the model from this edit"', async () => {
      await page.keyboard.press('Tab');
      await waitForValue(async () => !(await ghostText(page)), 'the suggestion to be accepted', 10_000);
      for (let i = 0; i < before.length; i++) await page.keyboard.press('Shift+ArrowLeft');
      await page.keyboard.insertText(kase.desired);
      await page.keyboard.press('Escape');
      const lens = page.locator('.codelens-decoration a', { hasText: 'Repair the model from this edit' }).first();
      await lens.waitFor({ timeout: 20_000 });
      await screenshot(page, 'edit-codelens.png');
      await lens.click();
    }))) return;

    await step('ui: the repair from the edit shows in the panel', async () => {
      await view.locator('[data-test="status"]', { hasText: 'Ready to apply' }).waitFor({ timeout: 10 * 60_000 });
      const a = await view.locator('[data-test="after"]').innerText();
      if (!same(a, kase.desired)) throw new Error(`panel after ${JSON.stringify(a)}, desired ${JSON.stringify(kase.desired)}`);
      await screenshot(page, 'panel-from-edit.png');
    });
  });
}

// ---- main ----------------------------------------------------------------------------------------------

need(CODE_SERVER, 'run `bash .ci/e2e-setup.sh` first');
need(path.join(E2E, 'node_modules', 'playwright-core', 'package.json'), 'run `bash .ci/e2e-setup.sh` first');
need(CHROMIUM, 'install Debian chromium (bash .ci/e2e-setup.sh)');
need(path.join(ROOT, 'dist', 'extension.js'), 'run `node scripts/build.mjs` first');
need(path.join(ROOT, 'dist', 'webview', 'main.js'), 'run `node scripts/build.mjs` first');
if (phases.includes('suite')) need(path.join(ROOT, 'out', 'test', 'vscode', 'index.js'), 'run `node scripts/build.mjs` (tsc) first');
if (!phases.includes('smoke') && !modelArg) need(path.join(ROOT, 'models', 'demo', 'config.json'), 'the demo model is not in models/demo');

fs.mkdirSync(SCRATCH, { recursive: true });
fs.mkdirSync(RESULTS, { recursive: true });
try {
  for (const phase of phases) {
    const started = Date.now();
    console.log(`e2e: ${phase} phase`);
    if (phase === 'smoke') await smokePhase();
    if (phase === 'suite') await suitePhase();
    if (phase === 'ui') await uiPhase();
    console.log(`e2e: ${phase} phase took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
} finally {
  killGroups();
  finish();
}
