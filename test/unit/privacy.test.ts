// Nothing leaves the machine: onnxruntime's telemetry is off in every front door. Measured, not assumed: the CLI
// runs a generation under strace(1) until 10 s past a control's first look-up (at least 20 s), and no connect()
// may reach anything but loopback (name-service look-ups included: the runtime's upload starts with a DNS query
// about 9 s into a run on an idle machine, later under load), and neither /tmp/mat-debug-<pid>.log nor
// ~/.cache/Microsoft/ may appear. The control loads onnxruntime-node without the door, traced the same way at the
// same time, and must show all three: otherwise the probe proves nothing and the test fails, saying so.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { entry, root, tempDir, testCacheDir } from '../helpers/models';

/** The traced run lasts until the control's first look-up plus this margin (s), and at least MIN_SECONDS: the
 * runtime's first two upload attempts came about 9 s and 15 s into a run on an idle machine, later under load. */
const MARGIN_SECONDS = 10;
const MIN_SECONDS = 20;
/** Past this, the control never looked anything up and the probe is inconclusive (the test fails, saying so). */
const MAX_SECONDS = 120;

const strace = spawnSync('strace', ['-V'], { encoding: 'utf8' });
const straceMissing = strace.error || strace.status !== 0
  ? 'strace is not installed (Debian package strace; .ci/run installs it): the network probe cannot run'
  : undefined;

/** connect() calls of a strace log that leave the machine or ask a name service. */
function outsideConnects(log: string): string[] {
  return log.split('\n').filter((l) => /\bconnect\(/.test(l)).filter((l) => {
    if (/sa_family=AF_UNIX/.test(l)) return /nscd|resolve/.test(l); // a name-service look-up
    if (/sa_family=AF_INET6?\b/.test(l)) return !/inet_addr\("127\.|inet_pton\(AF_INET6, "::1"/.test(l);
    return false;
  });
}

/** A process running under strace -ff (one trace file per thread, named by its id; the process's own is the lowest). */
interface Traced {
  /** The trace of every thread so far. */
  log(): string;
  pid(): number;
  /** Kills strace and its tracees; resolves when strace has exited. */
  stop(): Promise<void>;
}

function traced(args: string[], env: NodeJS.ProcessEnv): Traced {
  const dir = tempDir('strace');
  const child = spawn('strace', ['-ff', '-e', 'trace=connect', '-o', path.join(dir, 'trace'), ...args],
    { cwd: root, env, stdio: 'ignore', detached: true });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const files = (): string[] => fs.readdirSync(dir).filter((f) => /^trace\.\d+$/.test(f));
  return {
    log: () => files().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n'),
    pid: () => Math.min(...files().map((f) => Number(f.slice('trace.'.length)))),
    stop: async () => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
      await exited;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('privacy: onnxruntime telemetry', () => {
  it('the engine\'s door sets ORT_DISABLE_TELEMETRY before onnxruntime-node loads', () => {
    // This test process reached onnxruntime only through the engine (test/helpers imports it from runtime.ts).
    assert.equal(process.env.ORT_DISABLE_TELEMETRY, '1');
    // A file of that name from before this process started is another process's that had the same pid.
    const log = path.join(os.tmpdir(), `mat-debug-${process.pid}.log`);
    const ours = fs.existsSync(log) && fs.statSync(log).mtimeMs >= performance.timeOrigin;
    assert.equal(ours, false, 'onnxruntime wrote its telemetry debug log for this test process');
  });

  it('no source file loads onnxruntime-node except through the door (src/engine/onnx/runtime.ts)', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
        const f = path.join(dir, d.name);
        if (d.isDirectory()) walk(f);
        else if (/\.(ts|mts|cts)$/.test(d.name) && !f.endsWith(path.join('onnx', 'runtime.ts'))) {
          const text = fs.readFileSync(f, 'utf8');
          // Type-only imports load nothing; a value import or require() would load the runtime before the door.
          if (/^import (?!type\b)[^;]*from 'onnxruntime-node'|require\('onnxruntime-node'\)|import\('onnxruntime-node'\)/m.test(text)) {
            offenders.push(path.relative(root, f));
          }
        }
      }
    };
    for (const dir of ['src', 'test', 'bench']) walk(path.join(root, dir));
    assert.deepEqual(offenders, [], 'import { ort } from src/engine/onnx/runtime instead');
  });

  it('a long CLI generation connects to nothing outside the machine and leaves no telemetry files',
    { skip: straceMissing, timeout: (MAX_SECONDS + 30) * 1000 }, async (t) => {
      const cli = path.join(root, 'dist', 'cli.js');
      assert.ok(fs.existsSync(cli), 'dist/cli.js is missing: npm test builds it first (pretest)');
      const prompts = path.join(tempDir('prompts'), 'prompts.jsonl');
      const lines = Array.from({ length: 20000 }, (_, i) => JSON.stringify({ prompt: `def f${i}(x):\n    return ` }));
      fs.writeFileSync(prompts, lines.join('\n') + '\n');
      // The user's environment may say otherwise; the door must win. onnxruntime sends nothing where CI is set
      // (measured: no look-up in 120 s), so both processes run as on a user's machine, without it.
      const { CI: _ci, ...userEnv } = process.env;
      const env = { ...userEnv, ORT_DISABLE_TELEMETRY: '0', NEURONPATCH_CACHE: testCacheDir() };
      // Each process gets its own HOME, to see whether the runtime writes its device id and events there.
      const cliHome = tempDir('home-cli');
      const controlHome = tempDir('home-control');
      const telemetryDir = (home: string): string => path.join(home, '.cache', 'Microsoft');
      // The control keeps the runtime busy (each session creation is a telemetry event) without the door.
      const control = `const ort = require(${JSON.stringify(require.resolve('onnxruntime-node'))});`
        + `(async () => { for (;;) await ort.InferenceSession.create(${JSON.stringify(path.join(entry('demo').dir, 'model.onnx'))}); })()`;
      const cliProc = traced([process.execPath, cli, 'generate', '--prompts', prompts, '--json'], { ...env, HOME: cliHome });
      const controlProc = traced([process.execPath, '-e', control], { ...env, HOME: controlHome });
      const start = Date.now();
      let lookedUp: number | undefined;
      for (;;) {
        await sleep(500);
        const elapsed = (Date.now() - start) / 1000;
        if (lookedUp === undefined && outsideConnects(controlProc.log()).length > 0) lookedUp = elapsed;
        if (elapsed >= MAX_SECONDS || (lookedUp !== undefined && elapsed >= Math.max(MIN_SECONDS, lookedUp + MARGIN_SECONDS))) break;
      }
      await Promise.all([cliProc.stop(), controlProc.stop()]);
      const cliRun = { log: cliProc.log(), pid: cliProc.pid() };
      const controlRun = { log: controlProc.log(), pid: controlProc.pid() };
      t.diagnostic(`traced ${((Date.now() - start) / 1000).toFixed(0)} s; the control's first look-up at `
        + `${lookedUp === undefined ? 'never' : `${lookedUp.toFixed(1)} s`}`);
      assert.ok(outsideConnects(controlRun.log).length > 0,
        `the control (onnxruntime-node loaded without the door) made no look-up in ${MAX_SECONDS} s either: this `
        + 'runtime build sends nothing, so the probe cannot tell the door works');
      assert.deepEqual(outsideConnects(cliRun.log), [], 'the CLI connected outside the machine');
      assert.ok(Number.isFinite(cliRun.pid));
      assert.equal(fs.existsSync(path.join(os.tmpdir(), `mat-debug-${cliRun.pid}.log`)), false,
        'onnxruntime wrote /tmp/mat-debug-<pid>.log for the CLI');
      assert.equal(fs.existsSync(path.join(os.tmpdir(), `mat-debug-${controlRun.pid}.log`)), true,
        'the control wrote no mat-debug log: the probe cannot tell the door works');
      assert.equal(fs.existsSync(telemetryDir(cliHome)), false, 'onnxruntime wrote telemetry files under the CLI\'s HOME');
      assert.equal(fs.existsSync(telemetryDir(controlHome)), true, 'the control wrote no telemetry files under its HOME');
    });
});
