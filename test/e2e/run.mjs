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
  // Chosen, not left to the browser's colour scheme (headless chromium says light, a desktop may say dark).
  'workbench.colorTheme': 'Default Dark Modern',
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
    // The row whose label is exactly the title (Enter would run the first row, which can be a longer match:
    // "File: New Untitled Text File" lists "File: Compare New Untitled Text Files" first).
    const exact = new RegExp(`^${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
    const row = page.locator('.quick-input-list .monaco-list-row').filter({ has: page.locator('.label-name', { hasText: exact }) }).first();
    try {
      await row.waitFor({ state: 'visible', timeout: 5_000 });
      await row.click();
      return;
    } catch {
      await sleep(1000);
    }
  }
  throw new Error(`command "${title}" is not in the palette`);
}

async function openFile(page, relative) {
  const input = page.locator('.quick-input-widget input');
  // Focus in a webview can swallow the first Control+P: try again, then through the palette.
  for (let attempt = 0; ; attempt++) {
    await page.keyboard.press('Escape');
    if (attempt < 2) await page.keyboard.press('Control+P');
    else await palette(page, 'Go to File...');
    try {
      await input.waitFor({ state: 'visible', timeout: 10_000 });
      break;
    } catch (e) {
      if (attempt >= 2) throw e;
    }
  }
  await input.fill(relative);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: path.basename(relative) }).first().waitFor({ timeout: 30_000 });
  await page.keyboard.press('Enter');
  await page.locator(`.tab.active[data-resource-name="${path.basename(relative)}"]`).first().waitFor({ timeout: 30_000 });
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

/**
 * Brings the repair panel to the front by its tab and waits until its webview has taken the focus. VS Code focuses
 * a webview some time after its tab is activated (the iframe is rebuilt when it was hidden); a palette opened before
 * that loses the focus to it and closes under the test's typing (seen: "locator.fill: Timeout" right after a click
 * on the panel's tab).
 */
async function showPanel(page) {
  await page.locator('.tab', { hasText: 'Neuron Patch: Repair' }).first().click();
  await waitWebviewFocus(page);
}

/** Waits until the panel's webview has the keyboard focus: its iframe is the workbench's active element and its content document has focus. */
async function waitWebviewFocus(page, timeoutMs = 30_000) {
  await waitForValue(async () => {
    const outer = await page.evaluate(() => document.activeElement?.tagName === 'IFRAME' && document.activeElement.classList.contains('webview'));
    if (!outer) return false;
    return webview(page).locator('body').evaluate(() => document.hasFocus()).catch(() => false);
  }, 'the repair panel to take the focus', timeoutMs).catch(async (e) => {
    const where = await page.evaluate(() => `${document.activeElement?.tagName}.${document.activeElement?.className}`).catch(() => '?');
    throw new Error(`${e.message} (the focus is on ${where})`);
  });
}

/**
 * Fills code-server's save dialog (VS Code's simple file dialog, a quick input) and accepts it; returns the path it
 * proposed. The dialog shows with its folder first and puts the proposed name in when it has read the folder,
 * asynchronously: a value typed before that is overwritten and the accept waits on the old value (seen: the second
 * export dialog of a run still open with its default after 60 s). So: wait until the proposal is in, type, check
 * the box holds what was typed, accept, and wait until the dialog is gone.
 */
async function fillSaveDialog(page, isProposal, value, shot) {
  const input = page.locator('.quick-input-widget input');
  const proposed = await waitForValue(async () => {
    const v = await input.inputValue().catch(() => '');
    const listed = await page.locator('.quick-input-widget .quick-input-list .monaco-list-row').count();
    return isProposal(v) && listed > 0 ? v : undefined;
  }, 'the save dialog to propose a folder', 30_000);
  if (shot) await screenshot(page, shot);
  await input.fill(value);
  await waitForValue(async () => (await input.inputValue()) === value, `the save dialog to hold ${value}`, 10_000);
  // The dialog follows the typing into the typed folder (a stat, then its listing). An accept that comes before it
  // is there only moves it there and leaves it open (its accept navigates when the value names another folder than
  // the one listed; seen: the second export's dialog open after OK, listing models/demo). Accept once it lists it.
  const folder = path.dirname(value);
  let seen = [];
  await waitForValue(async () => {
    const entries = new Set(fs.readdirSync(folder));
    seen = (await page.locator('.quick-input-widget .quick-input-list .monaco-list-row').allInnerTexts())
      .map((l) => l.split('\n')[0].trim().replace(/\/$/, ''))
      .filter((l) => l && l !== '..');
    return seen.length > 0 && seen.every((n) => entries.has(n));
  }, `the save dialog to list ${folder}`, 30_000).catch((e) => {
    throw new Error(`${e.message}: it lists ${JSON.stringify(seen.slice(0, 20))}, the folder holds ${JSON.stringify(fs.readdirSync(folder))}`);
  });
  await page.locator('.quick-input-widget .monaco-button', { hasText: /^OK$/ }).first().click();
  await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout: 30_000 }).catch(async (e) => {
    const msg = await page.locator('.quick-input-widget .quick-input-message').innerText().catch(() => '');
    throw new Error(`the save dialog did not close after OK with ${value}${msg ? ` (it says ${JSON.stringify(msg)})` : ''}: ${e.message.split('\n')[0]}`);
  });
  return proposed;
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
      await palette(page, 'Neuron Patch: Focus on Patches View');
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
    await step('suite: the extension repairs within 2x the CLI wall time, same case and regression set', () => compareWithCli(ws, kase));
  });
}

/**
 * Item 4 of the extension's issue: the repair's wall time in the extension (from the command to the result in the
 * panel, measured by the suite, cold) beside the CLI's on the same case and the same regression prompts (the ones
 * the suite wrote): the CLI's process wall time (start, model load, repair) and its own repair phases.
 */
function compareWithCli(ws, kase) {
  const timing = JSON.parse(fs.readFileSync(path.join(ws, '.e2e-timing.json'), 'utf8'));
  const regression = path.join(ws, '.e2e-regression.jsonl');
  const promptFile = path.join(ws, '.e2e-prompt.py');
  fs.writeFileSync(promptFile, kase.prompt);
  // Each CLI run starts from an empty cache of its own, as the extension's first repair does: the guard set, the
  // lines before the repair and the reference statistics the CLI keeps on disk would otherwise come from the
  // extension's run or the CLI's first one (the CLI then also instruments the graph, which the extension had done).
  const runs = [];
  for (let i = 0; i < 2; i++) {
    const env = { ...process.env, NEURONPATCH_CACHE: fs.mkdtempSync(path.join(SCRATCH, 'cli-cache-')) };
    const t0 = Date.now();
    const out = execFileSync(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'repair', '--model', modelArg ?? path.join(ROOT, 'models', 'demo'),
      '--prompt-file', promptFile, '--desired', kase.desired, '--regression', regression, '--method', timing.method, '--json'], { encoding: 'utf8', env });
    runs.push({ wallMs: Date.now() - t0, ...JSON.parse(out.trim().split('\n').pop()) });
  }
  const cli = Math.min(...runs.map((r) => r.wallMs));
  const ratio = timing.wallMs / cli;
  const phases = timing.phases.map((p) => `${p.name} ${p.ms} ms`).join(', ');
  const line = `extension ${timing.wallMs} ms (panel ${timing.panelMs} ms: ${phases}) vs CLI ${cli} ms (process wall from an empty cache, best of ${runs.length}; ` +
    `runs ${runs.map((r) => r.wallMs).join(', ')} ms) on ${timing.regression} regression prompts, ${timing.method} method: ${ratio.toFixed(2)}x`;
  fs.writeFileSync(path.join(RESULTS, 'repair-wall-time.json'), JSON.stringify({ extension: timing, cli: runs, ratio }, null, 2));
  for (const f of ['.e2e-preempt.json', '.e2e-cancel.json'])
    if (fs.existsSync(path.join(ws, f))) console.log(`     ${f.slice(5, -5)}: ${fs.readFileSync(path.join(ws, f), 'utf8')}`);
  if (ratio > 2) throw new Error(line);
  return line;
}

/** Leading and trailing spaces and tabs as ␣ and ⇥ (what the input box and the panel show). */
function visibleEdges(text) {
  const lead = /^[ \t]*/.exec(text)[0];
  const rest = text.slice(lead.length);
  const trail = /[ \t]*$/.exec(rest)[0];
  const mark = (x) => x.replace(/ /g, '␣').replace(/\t/g, '⇥');
  return mark(lead) + rest.slice(0, rest.length - trail.length) + mark(trail);
}

/**
 * WCAG contrast of every visible text of the webview against what it is drawn on (backgrounds composited up the
 * tree, shadow roots included); disabled controls are left out, as WCAG does. Runs inside the webview's frame.
 */
function contrastInPage() {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c || '');
    if (!m) return undefined;
    const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (t, b) => ({ r: t.r * t.a + b.r * (1 - t.a), g: t.g * t.a + b.g * (1 - t.a), b: t.b * t.a + b.b * (1 - t.a), a: 1 });
  const parentOf = (e) => e.parentElement || (e.getRootNode && e.getRootNode().host) || null;
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = parentOf(e)) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) {
        layers.push(c);
        if (c.a >= 1) break;
      }
    }
    let bg = parse(getComputedStyle(document.body).backgroundColor) || { r: 255, g: 255, b: 255, a: 1 };
    for (const l of layers.reverse()) bg = over(l, bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const out = [];
  const visit = (root) => {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
    for (let n = walker.currentNode; n; n = walker.nextNode()) {
      if (n.nodeType === 1 && n.shadowRoot) visit(n.shadowRoot);
      if (n.nodeType !== 3 || !n.textContent.trim()) continue;
      const el = n.parentElement || (n.getRootNode() && n.getRootNode().host);
      if (!el) continue;
      const st = getComputedStyle(el);
      if (st.visibility === 'hidden' || st.display === 'none' || !el.getClientRects().length) continue;
      let disabled = false;
      for (let e = el; e; e = parentOf(e)) if (e.hasAttribute && e.hasAttribute('disabled')) disabled = true;
      if (disabled || el.closest('style, script')) continue;
      const fg = parse(st.color);
      const bg = background(el);
      const shown = over(fg, bg);
      out.push({ text: n.textContent.trim().slice(0, 30), ratio: Math.round(ratio(shown, bg) * 100) / 100, fg: st.color, tag: el.tagName.toLowerCase() });
    }
  };
  visit(document.body);
  out.sort((a, b) => a.ratio - b.ratio);
  return { count: out.length, min: out[0] ? out[0].ratio : 0, worst: out.slice(0, 5) };
}

/** A screenshot of one section of the panel (opened first), however tall the page. */
async function sectionShot(view, id, name) {
  const section = view.locator(`#${id}`);
  if ((await section.getAttribute('open')) === null) await section.evaluate((e) => e.setAttribute('open', ''));
  fs.mkdirSync(RESULTS, { recursive: true });
  await section.screenshot({ path: path.join(RESULTS, name) });
  console.log(`     screenshot: ${path.relative(ROOT, path.join(RESULTS, name))}`);
}

/** Closes the notification toasts by their ✕ (the palette has no command to only hide them) and waits until none shows. */
async function closeToasts(page) {
  const close = page.locator('.notification-toast .codicon-notifications-clear');
  await waitForValue(async () => {
    if ((await close.count()) === 0) return true;
    await close.first().click({ timeout: 5_000 }).catch(() => undefined);
    return false;
  }, 'the notification toasts to close', 20_000);
}

/** Waits until the webview's body says the theme kind `tag` (dark, light, dark-hc, light-hc), as VS Code sets it. */
async function waitThemeKind(view, tag) {
  const kind = { dark: 'vscode-dark', light: 'vscode-light', 'dark-hc': 'vscode-high-contrast', 'light-hc': 'vscode-high-contrast-light' }[tag];
  await waitForValue(() => view.locator('body').evaluate((b, k) => b.dataset.vscodeThemeKind === k, kind).catch(() => false), `the panel in the ${tag} theme`, 20_000);
}

/** Picks a colour theme through Preferences: Color Theme (the row itself, not the marketplace browser). */
async function pickTheme(page, theme) {
  await page.keyboard.press('Escape');
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.fill('>Preferences: Color Theme');
  const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'Preferences: Color Theme' }).filter({ hasNotText: 'Browse' }).first();
  await row.waitFor({ timeout: 10_000 });
  await row.click();
  await page.locator('.quick-input-list .monaco-list-row', { hasText: theme }).first().waitFor({ timeout: 10_000 });
  await input.fill(theme);
  const pick = page.locator('.quick-input-list .monaco-list-row', { hasText: theme }).first();
  await pick.waitFor({ timeout: 10_000 });
  await pick.click();
}

async function uiPhase() {
  const kase = readCase(modelArg);
  await withCodeServer('ui', {}, async ({ dir, server, page }) => {
    const ws = prepareWorkspace(path.join(dir, 'workspace'), kase, modelArg);
    // A low side-effect threshold: the first repair (pkg/arith_same.py holds the same function, whose completion
    // the patch changes) shows the warning state and Apply asks to confirm.
    // The same function elsewhere in the workspace: a completion the patch is sure to change.
    fs.writeFileSync(path.join(ws, 'pkg', 'arith_same.py'), `${kase.prompt}${kase.desired}\n`);
    fs.mkdirSync(path.join(ws, '.vscode'), { recursive: true });
    const wsSettings = path.join(ws, '.vscode', 'settings.json');
    const prev = fs.existsSync(wsSettings) ? JSON.parse(fs.readFileSync(wsSettings, 'utf8')) : {};
    // The minimal method edits existing neurons, so that the patch visibly changes other completions (the keyed
    // default adds neurons that stay silent elsewhere, and would leave nothing to warn about).
    fs.writeFileSync(wsSettings, JSON.stringify({ ...prev, 'neuronpatch.repair.sideEffectWarning': 5, 'neuronpatch.repair.method': 'minimal' }, null, 2));
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

    const input = page.locator('.quick-input-widget input');
    // Item 18: VS Code 1.100's toolbar of the shown suggestion is the menu "editor/inlineCompletions/actions", open to
    // extensions only under the proposed API "inlineCompletionsAdditions" (a Marketplace extension cannot use it), so
    // the suggestion on screen is repaired by a command bound to Ctrl+Alt+R while it shows (and in the editor's
    // context menu): "Repair This Suggestion" prefills the desired text with the ghost text itself.
    if (!(await step('ui: item 18+1: Ctrl+Alt+R on the ghost text asks for the desired text, prefilled with the suggestion, its leading space shown as ␣', async () => {
      await page.keyboard.press('Control+Alt+r');
      await waitForValue(async () => {
        const v = await input.inputValue().catch(() => '');
        return v && !v.startsWith('>') ? v : undefined;
      }, 'the input box', 60_000);
      const prefilled = await input.inputValue();
      if (prefilled !== visibleEdges(before)) throw new Error(`prefilled with ${JSON.stringify(prefilled)}, expected ${JSON.stringify(visibleEdges(before))}`);
      await screenshot(page, 'repair-input.png');
      return JSON.stringify(prefilled);
    }))) return;

    if (!(await step('ui: item 1: a desired text that glues onto "return" is flagged, and Enter offers the spaced version', async () => {
      const glued = kase.desired.trimStart();
      await input.fill(glued);
      const msg = page.locator('.quick-input-widget .quick-input-message', { hasText: 'would glue onto' });
      await msg.waitFor({ timeout: 10_000 });
      const text = await msg.innerText();
      await screenshot(page, 'glue-warning.png');
      await page.keyboard.press('Enter');
      const spaced = page.locator('.quick-input-list .monaco-list-row', { hasText: `Use ${visibleEdges(kase.desired)}` }).first();
      await spaced.waitFor({ timeout: 10_000 });
      await screenshot(page, 'glue-choice.png');
      await page.keyboard.press('Enter');
      return text.replace(/\s+/g, ' ').slice(0, 120);
    }))) return;

    const view = webview(page);
    await step('ui: items 4+6: the panel opens at once with the phase in plain words, the wall time and a Cancel button', async () => {
      await view.locator('[data-test="progress"]').waitFor({ timeout: 30_000 });
      const phase = await view.locator('[data-test="phase"]').innerText();
      const cancel = view.locator('vscode-button#cancel');
      if ((await cancel.count()) !== 1) throw new Error('no Cancel button in the running panel');
      if ((await cancel.getAttribute('aria-keyshortcuts')) !== 'Escape') throw new Error('Cancel does not announce its shortcut');
      await screenshot(page, 'panel-running.png');
      return JSON.stringify(phase);
    });

    if (!(await step('ui: the panel shows before/after (whitespace visible), the neurons, and the wall time with its phases', async () => {
      await view.locator('[data-test="after"]').waitFor({ timeout: 10 * 60_000 });
      const b = await view.locator('[data-test="before"]').getAttribute('data-text');
      const a = await view.locator('[data-test="after"]').getAttribute('data-text');
      if (!same(b, before) && !b.startsWith(before.trimEnd())) throw new Error(`panel before ${JSON.stringify(b)}, ghost text ${JSON.stringify(before)}`);
      if (!same(a, kase.desired)) throw new Error(`panel after ${JSON.stringify(a)}, desired ${JSON.stringify(kase.desired)}`);
      const shownDesired = await view.locator('[data-test="desired"]').innerText();
      if (shownDesired !== visibleEdges(kase.desired)) throw new Error(`the desired text shows as ${JSON.stringify(shownDesired)}`);
      const neurons = await view.locator('table[data-test="neurons"] tbody tr').count();
      if (neurons < 1) throw new Error('no neurons listed');
      const positions = await view.locator('table[data-test="positions"] tbody tr').count();
      if (positions < 1) throw new Error('no failing positions listed');
      const bars = await view.locator('[data-test="layers"] .row').count();
      const ours = cspViolations.filter((v) => /webview|vscode-resource|vscode-cdn|main\.js|panel\.css|codicon/.test(v));
      if (ours.length) throw new Error(`the panel broke its Content-Security-Policy: ${ours[0]}`);
      const timing = await view.locator('[data-test="timing"]').innerText();
      if (!/The repair took [\d.,]+ m?s: .*checking \d+ completions from your workspace/.test(timing)) throw new Error(`timing line ${JSON.stringify(timing)}`);
      const diff = await view.locator('[data-test="after"] .added').count();
      await screenshot(page, 'panel.png');
      // Each section by itself (a page scrolled to its end would show the same picture for both).
      await sectionShot(view, 'neurons', 'panel-neurons.png');
      await sectionShot(view, 'side-effects', 'panel-side-effects.png');
      // An empty completion reads "(empty completion)", not a blank cell.
      const blank = await view.locator('code.completion[data-text=""]').evaluateAll((els) => els.filter((e) => !/\(empty completion\)/.test(e.textContent)).length);
      if (blank) throw new Error(`${blank} empty completion(s) shown as a blank cell`);
      const empties = await view.locator('code.completion[data-text=""]').count();
      await view.locator('#completion').evaluate((e) => e.scrollIntoView({ block: 'start' }));
      return `${neurons} neurons, ${positions} failing positions, ${bars} layer bars, ${diff} highlighted insertions, ${empties} empty completions shown as such; ${timing}`;
    }))) return;

    await step('ui: item 3: past the threshold the status warns and the side effects are one line at the top', async () => {
      const status = await view.locator('[data-test="status"]').innerText();
      const effects = await view.locator('[data-test="effects"]').innerText();
      if (!/side effects/i.test(status)) throw new Error(`status ${JSON.stringify(status)} does not warn`);
      if (!/Changes \d+ of \d+ completions checked from your workspace/.test(effects)) throw new Error(`effects line ${JSON.stringify(effects)}`);
      return `${status} | ${effects.trim()}`;
    });

    await step('ui: item 9: the buttons say their shortcuts (tooltip and aria-keyshortcuts)', async () => {
      const got = [];
      for (const [id, keys] of [['apply', 'Alt+A'], ['discard', 'Alt+D'], ['other-method', 'Alt+M']]) {
        const b = view.locator(`vscode-button#${id}`);
        const title = await b.getAttribute('title');
        const aria = await b.getAttribute('aria-keyshortcuts');
        if (aria !== keys || !title?.includes(`(${keys})`)) throw new Error(`${id}: title ${JSON.stringify(title)}, aria-keyshortcuts ${JSON.stringify(aria)}`);
        got.push(title);
      }
      return got.join(' | ');
    });

    await step('ui: item 7: every text of the panel has a contrast of at least 4.5:1 in Dark, Light, Dark HC and Light HC', async () => {
      const themes = [
        ['Default Dark Modern', 'dark'],
        ['Default Light Modern', 'light'],
        ['Default High Contrast', 'dark-hc'],
        ['Default High Contrast Light', 'light-hc'],
      ];
      const lines = [];
      const bad = [];
      for (const [theme, tag] of themes) {
        await pickTheme(page, theme);
        await page.locator(`.monaco-workbench.${tag === 'dark' ? 'vs-dark' : tag === 'light' ? 'vs' : tag === 'dark-hc' ? 'hc-black' : 'hc-light'}`).waitFor({ timeout: 20_000 });
        // The webview gets the theme by a message: measure once its body says the new kind.
        await waitThemeKind(view, tag);
        const r = await view.locator('body').evaluate(contrastInPage);
        await screenshot(page, `theme-${tag}.png`);
        lines.push(`${tag}: min ${r.min}:1 over ${r.count} texts`);
        if (r.min < 4.5) bad.push(`${tag}: ${JSON.stringify(r.worst.filter((w) => w.ratio < 4.5))}`);
      }
      await pickTheme(page, 'Default Dark Modern');
      await waitThemeKind(view, 'dark');
      if (bad.length) throw new Error(`${lines.join('; ')}; below 4.5: ${bad.join(' ')}`);
      return lines.join('; ');
    });

    await step('ui: item 8: in a narrow panel the tables scroll inside a box the keyboard reaches; the page never overflows', async () => {
      const width = () => view.locator('body').evaluate(() => document.documentElement.clientWidth);
      const wideWidth = await width();
      await page.setViewportSize({ width: 1000, height: 1000 });
      // The workbench lays the editors out again, then the webview: wait for the narrower panel.
      await waitForValue(async () => (await width()) < wideWidth - 100, 'the panel to narrow', 20_000);
      const measure = () => view.locator('body').evaluate(() => ({
        page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        boxes: [...document.querySelectorAll('.table-scroll')].map((b) => ({ id: b.dataset.test, over: b.scrollWidth - b.clientWidth, tab: b.tabIndex, left: b.scrollLeft })),
      }));
      const m = await measure();
      if (m.page > 0) throw new Error(`the page overflows by ${m.page} px`);
      if (m.boxes.some((b) => b.tab !== 0)) throw new Error('a table box is not in the tab order');
      const wide = m.boxes.find((b) => b.over > 0);
      let scrolled = 'no table wider than the panel at this width';
      if (wide) {
        await view.locator(`[data-test="${wide.id}"]`).focus();
        for (let i = 0; i < 8; i++) await page.keyboard.press('ArrowRight');
        // Keyboard scrolling is smooth (animated): wait for it to move rather than read it at once (seen: read 0 on a
        // loaded machine, the box scrolled in the screenshot taken just after).
        const after = await waitForValue(async () => {
          const b = (await measure()).boxes.find((x) => x.id === wide.id);
          return b.left > 0 ? b : undefined;
        }, `${wide.id} to scroll with the keyboard`, 10_000);
        scrolled = `${wide.id} (${wide.over} px wider) scrolled to ${after.left} px by the keyboard`;
      }
      await view.locator('#neurons').evaluate((e) => e.scrollIntoView({ block: 'start' }));
      await screenshot(page, 'panel-narrow.png');
      await page.setViewportSize({ width: 1600, height: 1000 });
      await waitForValue(async () => (await width()) >= wideWidth - 2, 'the panel to widen again', 20_000);
      return scrolled;
    });

    if (!(await step('ui: item 3+12: Apply asks to confirm there, then writes the patch file; the notification offers Undo and Show Patches', async () => {
      await view.locator('vscode-button#apply:not([disabled])').click();
      await view.locator('[data-test="confirm"]').waitFor({ timeout: 10_000 });
      await screenshot(page, 'panel-confirm.png');
      if (readPatchFile(ws)) throw new Error('the patch file was written before the confirmation');
      await view.locator('vscode-button#confirm-apply').click();
      await view.locator('[data-test="status"]', { hasText: 'Applied' }).waitFor({ timeout: 60_000 });
      const file = await waitForValue(() => readPatchFile(ws), 'the patch file');
      if (file.patches.length !== 1 || !file.patches[0].enabled || file.patches[0].case.desired !== kase.desired)
        throw new Error(`patch file holds ${JSON.stringify(file.patches.map((p) => [p.id, p.enabled, p.case.desired]))}`);
      const toast = page.locator('.notification-toast', { hasText: 'patch applied' }).first();
      await toast.waitFor({ timeout: 10_000 });
      const buttons = await toast.locator('.monaco-button').allInnerTexts();
      if (!buttons.includes('Undo') || !buttons.includes('Show Patches')) throw new Error(`notification buttons ${JSON.stringify(buttons)}`);
      await toast.screenshot({ path: path.join(RESULTS, 'notification-applied.png') });
      // The panel itself, without the toast in front of it (it stays in the notification centre).
      await closeToasts(page);
      await screenshot(page, 'panel-applied.png');
      return `patch ${file.patches[0].id}, ${file.patches[0].edits.length} neurons; notification: ${buttons.join(', ')}`;
    }))) return;

    await step('ui: item 12: the export dialog counts "1 patch" and proposes a folder outside the workspace', async () => {
      await view.locator('vscode-button#export:not([disabled])').click();
      const title = page.locator('.quick-input-widget .quick-input-title');
      await title.waitFor({ timeout: 20_000 });
      const t = await title.innerText();
      if (!/with 1 patch as/.test(t)) throw new Error(`dialog title ${JSON.stringify(t)}`);
      // While the dialog is open the panel says a folder is being chosen, not that it exports.
      await view.locator('span.busy', { hasText: 'Choosing a folder' }).waitFor({ timeout: 10_000 });
      // Export beside the workspace: the notification offers the next steps.
      const out = path.join(dir, `export-${Date.now()}`);
      const value = await fillSaveDialog(page, (v) => /-patched$/.test(v), out, 'export-dialog.png');
      if (value.startsWith(ws)) throw new Error(`the dialog proposes ${value}, inside the workspace`);
      const done = page.locator('.notification-toast', { hasText: 'patched model' }).first();
      await done.waitFor({ timeout: 60_000 });
      const buttons = await done.locator('.monaco-button').allInnerTexts();
      await screenshot(page, 'export-done.png');
      if (!buttons.includes('Reveal') || !buttons.includes('Use This Model')) throw new Error(`export notification buttons ${JSON.stringify(buttons)}`);
      // Again, into the model's own folder: the error says the path once and keeps the engine's hint.
      const inside = path.join(modelArg ?? path.join(ROOT, 'models', 'demo'), 'patched-here');
      await view.locator('vscode-button#export:not([disabled])').click();
      await title.waitFor({ timeout: 20_000 });
      await fillSaveDialog(page, (v) => /-patched$/.test(v), inside);
      // The same line shows in the panel and in the error toast.
      const err = view.locator('p.error', { hasText: 'Refusing to export' }).first();
      await err.waitFor({ timeout: 60_000 });
      const text = (await err.innerText()).replace(/\s+/g, ' ');
      await screenshot(page, 'export-error.png');
      if (text.split(inside).length - 1 !== 1) throw new Error(`the error names the folder ${text.split(inside).length - 1} times: ${text}`);
      if (!/Export to a new folder beside it/.test(text)) throw new Error(`the error lost its hint: ${text}`);
      return `${t} | proposed ${value} | after: ${buttons.join(', ')} | error: ${text}`;
    });

    await step('ui: item 13: the panel comes back after a window reload as it was, at its scroll position (also after it was hidden)', async () => {
      await showPanel(page);
      await view.locator('#side-effects').evaluate((e) => e.scrollIntoView({ block: 'start' }));
      // The webview says (data-kept-scroll) when it has handed its position to VS Code and to the extension.
      const y = await waitForValue(async () => {
        const [at, kept] = await view.locator('body').evaluate(() => [window.scrollY, document.body.dataset.keptScroll]);
        return at > 0 && String(Math.round(at)) === kept ? at : undefined;
      }, 'the panel to keep its scroll position', 10_000);
      // Hidden (another editor in front of it in its group) and shown again: the webview is rebuilt from its state.
      await palette(page, 'File: New Untitled Text File');
      await page.locator('.tab.active', { hasText: 'Untitled-1' }).first().waitFor({ timeout: 20_000 });
      if ((await page.locator('.tab.active', { hasText: 'Neuron Patch: Repair' }).count()) !== 0) throw new Error('the panel is still in front');
      // Closed again (empty, so without a question): the panel is in front, and takes the focus, as after a click on
      // its tab; no editor is left behind it to show through in later screenshots.
      await page.keyboard.press('Control+w');
      await page.locator('.tab', { hasText: 'Untitled-1' }).first().waitFor({ state: 'detached', timeout: 20_000 });
      await waitWebviewFocus(page);
      const near = (want) => async () => {
        const at = await webview(page).locator('body').evaluate(() => window.scrollY).catch(() => -1);
        return Math.abs(at - want) <= 40 ? at : undefined;
      };
      const y1 = await waitForValue(near(y), `the panel back at ${y} px after it was hidden`, 15_000);
      // As a user reloads: the workbench saves its state (the webview's included) on the way out.
      await page.evaluate(() => (window.__e2eBeforeReload = true));
      await palette(page, 'Developer: Reload Window');
      await waitForValue(() => page.evaluate(() => !window.__e2eBeforeReload).catch(() => false), 'the window to reload', 60_000);
      await waitWorkbench(page);
      const again = webview(page);
      await again.locator('[data-test="status"]', { hasText: 'Applied' }).first().waitFor({ timeout: 60_000 });
      const exported = await again.locator('p.muted', { hasText: 'Exported to' }).count();
      // The restored workbench gives the panel (its active editor) the focus once its webview is up: wait for it, so
      // that it does not close the next step's palette.
      await waitWebviewFocus(page);
      const y2 = await waitForValue(near(y), `the panel back at ${y} px after the reload`, 15_000).catch(async (e) => {
        await screenshot(page, 'panel-after-reload.png');
        throw e;
      });
      await screenshot(page, 'panel-after-reload.png');
      if (exported < 1) throw new Error('the restored panel lost what it showed (the export)');
      return `scrollY ${y}, after hide/show ${y1}, after the reload ${y2}; after the reload: status Applied, export line kept`;
    });

    await step('ui: the completion at that spot is now the desired one', async () => {
      await openFile(page, kase.file);
      await cursorAtEnd(page);
      const text = await suggestionAtCursor(page, 60_000, kase.desired);
      if (!same(text, kase.desired)) throw new Error(`ghost text ${JSON.stringify(text)}`);
      await screenshot(page, 'completion-after.png');
      return JSON.stringify(text);
    });

    await step('ui: the status bar counts the active patch', async () => {
      await page.locator('.statusbar-item', { hasText: '1 patch' }).first().waitFor({ timeout: 10_000 });
    });

    if (!(await step('ui: item 10: the Patches view labels the patch with visible whitespace and where it was made; a click opens it; Space toggles it', async () => {
      await page.keyboard.press('Escape');
      await palette(page, 'Neuron Patch: Focus on Patches View');
      const row = page.locator('.monaco-list-row', { hasText: visibleEdges(kase.desired).slice(0, 20) }).first();
      await row.waitFor({ timeout: 20_000 });
      const text = (await row.innerText()).replace(/\s+/g, ' ');
      if (!text.includes(`${kase.file}:`)) throw new Error(`the row does not say where it was made: ${JSON.stringify(text)}`);
      if ((await row.locator('.custom-view-tree-node-item-checkbox').count()) > 0) throw new Error('the row still has a checkbox');
      await screenshot(page, 'patches-tree.png');
      await row.click();
      await webview(page).locator('[data-test="status"]', { hasText: 'Saved patch' }).waitFor({ timeout: 20_000 });
      await screenshot(page, 'patch-opened.png');
      await row.click();
      await page.keyboard.press('Space');
      await waitForValue(() => readPatchFile(ws)?.patches[0]?.enabled === false, 'enabled: false in the patch file', 20_000);
      await page.locator('.statusbar-item', { hasText: '0 of 1 patch active' }).first().waitFor({ timeout: 10_000 });
      await screenshot(page, 'patches-tree-disabled.png');
      return text;
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
      // The panel showed the saved patch (item 10), which has an After line too: wait for this repair's result.
      const result = webview(page).locator('#app[data-status="pending"] [data-test="after"]');
      await result.waitFor({ timeout: 10 * 60_000 });
      const a = await result.getAttribute('data-text');
      if (!same(a, kase.desired)) throw new Error(`panel after ${JSON.stringify(a)}, desired ${JSON.stringify(kase.desired)}`);
      await screenshot(page, 'panel-from-edit.png');
    });

    await step('ui: a keyed repair lists its added neurons; opened from the Patches view, they are its main table (no empty edited-neurons table)', async () => {
      const view = webview(page);
      await view.locator('vscode-button:not([disabled])', { hasText: 'Try the keyed method' }).first().click();
      await view.locator('#app[data-status="running"]').waitFor({ timeout: 20_000 });
      await view.locator('#app[data-status="pending"] vscode-collapsible#neurons').waitFor({ timeout: 10 * 60_000 });
      const title = await view.locator('vscode-collapsible#neurons').getAttribute('heading');
      await screenshot(page, 'panel-keyed.png');
      await view.locator('vscode-button#apply:not([disabled])').click();
      const confirm = view.locator('vscode-button#confirm-apply');
      await Promise.race([confirm.waitFor({ timeout: 10_000 }).then(() => confirm.click()), view.locator('[data-test="status"]', { hasText: 'Applied' }).waitFor({ timeout: 10_000 })]);
      await view.locator('[data-test="status"]', { hasText: 'Applied' }).waitFor({ timeout: 60_000 });
      const file = await waitForValue(() => readPatchFile(ws)?.patches.find((p) => p.method === 'keyed'), 'the keyed patch in the patch file', 20_000);
      await palette(page, 'Neuron Patch: Focus on Patches View');
      const rows = page.locator('.monaco-list-row', { hasText: visibleEdges(kase.desired).slice(0, 20) });
      await waitForValue(async () => (await rows.count()) >= 2, 'a second row in the Patches view', 20_000);
      await rows.last().click();
      await webview(page).locator('[data-test="status"]', { hasText: 'Saved patch' }).waitFor({ timeout: 20_000 });
      const shown = webview(page);
      const added = await shown.locator('table[data-test="added"] tbody tr').count();
      const edited = await shown.locator('table[data-test="neurons"] tbody tr').count();
      const editedTables = await shown.locator('table[data-test="neurons"]').count();
      await screenshot(page, 'patch-keyed-opened.png');
      const want = file.added?.length ?? 0;
      if (added !== want) throw new Error(`${added} rows of added neurons shown; the patch adds ${want}`);
      if (editedTables && edited === 0) throw new Error('an empty table of edited neurons');
      if (!file.edits.length && editedTables) throw new Error('a table of edited neurons for a patch that edits none');
      return `result section "${title}"; opened: ${added} added neuron rows, ${edited} edited neuron rows (the patch: ${file.edits.length} edits, ${want} added)`;
    });

    await step('ui: item 17: the status bar item opens a menu (completions on/off, model, patches, log)', async () => {
      await page.keyboard.press('Escape');
      await page.locator('.statusbar-item', { hasText: /patch/ }).first().click();
      const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'Turn Inline Completions Off' }).first();
      await row.waitFor({ timeout: 10_000 });
      const items = await page.locator('.quick-input-list .monaco-list-row').allInnerTexts();
      await screenshot(page, 'status-menu.png');
      await page.keyboard.press('Escape');
      return items.map((t) => t.split('\n')[0]).join(' | ');
    });

    await step('ui: item 11: the palette lists none of the commands the extension hides, and one way to show the patches', async () => {
      await page.keyboard.press('Escape');
      await page.keyboard.press('F1');
      await input.fill('>Neuron Patch');
      // The list is filtered at once: when an always-listed row is there, all are.
      await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Neuron Patch: Show Log' }).first().waitFor({ timeout: 10_000 });
      const rows = (await page.locator('.quick-input-list .monaco-list-row').allInnerTexts()).map((t) => t.split('\n')[0]);
      await page.keyboard.press('Escape');
      const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).contributes;
      const titles = new Map(pkg.commands.map((c) => [c.command, `${c.category}: ${c.title}`]));
      const hidden = pkg.menus.commandPalette.filter((m) => m.when === 'false' && titles.has(m.command)).map((m) => titles.get(m.command));
      const shown = rows.filter((r) => hidden.includes(r));
      if (shown.length) throw new Error(`hidden commands in the palette: ${JSON.stringify(shown)}`);
      // VS Code adds a focus command per view ("Focus on Patches View", listed under the view's own \`when\`, which
      // would hide the view too) and an open command per view container ("View: Show Neuron Patch", f1). Neither can be
      // hidden from an extension in 1.100: a \`commandPalette\` entry naming them is refused at load ("Menu item
      // references a command \`neuronpatch.patches.focus\` which is not defined in the 'commands' section", tried).
      const builtIn = rows.filter((r) => /Focus on Patches View|View: Show Neuron Patch/i.test(r));
      return `${hidden.length} commands hidden, none listed; VS Code's own: ${JSON.stringify(builtIn)}; all rows: ${JSON.stringify(rows)}`;
    });

    await step('ui: item 19: the walkthrough lists open the demo, see, repair, apply, revert', async () => {
      await palette(page, 'Welcome: Open Walkthrough...');
      const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'Repair a Code Model' }).first();
      await row.waitFor({ timeout: 10_000 });
      await row.click();
      const steps = page.locator('.getting-started-step');
      await steps.first().waitFor({ timeout: 20_000 });
      const titles = (await steps.allInnerTexts()).map((t) => t.split('\n')[0]);
      await screenshot(page, 'walkthrough.png');
      if (titles.length < 5) throw new Error(`steps: ${JSON.stringify(titles)}`);
      return titles.join(' | ');
    });

    await step('ui: item 15: neuronpatch.modelFolder shows in the User settings tab', async () => {
      await palette(page, 'Preferences: Open User Settings');
      const search = page.locator('.settings-editor .suggest-input-container textarea, .settings-editor .search-container input, .settings-editor .monaco-editor textarea').first();
      await search.waitFor({ timeout: 20_000 });
      await page.keyboard.type('neuronpatch.modelFolder');
      const item = page.locator('.settings-editor .setting-item-contents', { hasText: 'Model Folder' }).first();
      await item.waitFor({ timeout: 20_000 });
      const text = (await item.innerText()).split('\n').slice(0, 2).join(' ');
      const tab = await page.locator('.settings-editor .settings-tabs-widget .action-label.checked, .settings-editor .settings-tabs-widget [aria-selected="true"]').first().innerText().catch(() => '?');
      await screenshot(page, 'settings-user.png');
      await page.keyboard.press('Control+w');
      if (!/User/i.test(tab)) throw new Error(`the settings editor shows the ${tab} tab`);
      return `${tab} tab: ${text}`;
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

// Every run starts from a state it makes itself: no artefact, workspace, profile or export of an earlier run is
// left to be mistaken for this one's (the engine's cache of instrumented graphs stays: it is keyed by the model).
fs.rmSync(SCRATCH, { recursive: true, force: true });
fs.rmSync(RESULTS, { recursive: true, force: true });
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
