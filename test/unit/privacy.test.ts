// Nothing leaves the machine: onnxruntime's telemetry is off in every front door. Measured, not assumed: the CLI
// runs a long generation under strace(1) and no connect() may reach anything but loopback (name-service look-ups
// included: the runtime's upload starts with a DNS query about 9 s into a run, again at about 15 s), and neither
// /tmp/mat-debug-<pid>.log nor ~/.cache/Microsoft/ may appear. A control process that loads onnxruntime-node
// without the door, traced the same way at the same time, must show all three: otherwise the probe proves nothing.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { entry, root, tempDir, testCacheDir } from '../helpers/models';

/** Seconds each traced process runs: long enough for the runtime's first two upload attempts (≈ 9 s and 15 s). */
const TRACE_SECONDS = 20;

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

/** Runs `args` under strace for `seconds`, then kills it with its tracees; the trace of every thread and the
 * traced process's pid (strace -ff writes one file per thread, named by its id; the process's own is the lowest). */
function traced(args: string[], seconds: number, env: NodeJS.ProcessEnv): Promise<{ log: string; pid: number }> {
  const dir = tempDir('strace');
  const child = spawn('strace', ['-ff', '-e', 'trace=connect', '-o', path.join(dir, 'trace'), ...args],
    { cwd: root, env, stdio: 'ignore', detached: true });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), seconds * 1000);
    child.on('error', reject);
    child.on('exit', () => {
      clearTimeout(timer);
      const files = fs.readdirSync(dir).filter((f) => /^trace\.\d+$/.test(f));
      const pid = Math.min(...files.map((f) => Number(f.slice('trace.'.length))));
      resolve({ log: files.map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n'), pid });
    });
  });
}

describe('privacy: onnxruntime telemetry', () => {
  it('the engine\'s door sets ORT_DISABLE_TELEMETRY before onnxruntime-node loads', () => {
    // This test process reached onnxruntime only through the engine (test/helpers imports it from runtime.ts).
    assert.equal(process.env.ORT_DISABLE_TELEMETRY, '1');
    assert.equal(fs.existsSync(path.join(os.tmpdir(), `mat-debug-${process.pid}.log`)), false,
      'onnxruntime wrote its telemetry debug log for this test process');
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

  it(`a ${TRACE_SECONDS} s CLI generation connects to nothing outside the machine and leaves no mat-debug log`,
    { skip: straceMissing, timeout: (TRACE_SECONDS + 30) * 1000 }, async () => {
      const cli = path.join(root, 'dist', 'cli.js');
      assert.ok(fs.existsSync(cli), 'dist/cli.js is missing: npm test builds it first (pretest)');
      const prompts = path.join(tempDir('prompts'), 'prompts.jsonl');
      const lines = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ prompt: `def f${i}(x):\n    return ` }));
      fs.writeFileSync(prompts, lines.join('\n') + '\n');
      // The user's environment may say otherwise; the door must win.
      const env = { ...process.env, ORT_DISABLE_TELEMETRY: '0', NEURONPATCH_CACHE: testCacheDir() };
      // Each process gets its own HOME, to see whether the runtime writes its device id and events there.
      const cliHome = tempDir('home-cli');
      const controlHome = tempDir('home-control');
      const telemetryDir = (home: string): string => path.join(home, '.cache', 'Microsoft');
      const control = `require(${JSON.stringify(require.resolve('onnxruntime-node'))}).InferenceSession.create(`
        + `${JSON.stringify(path.join(entry('demo').dir, 'model.onnx'))}).then(() => setTimeout(() => {}, 1e9))`;
      const [cliRun, controlRun] = await Promise.all([
        traced([process.execPath, cli, 'generate', '--prompts', prompts, '--json'], TRACE_SECONDS, { ...env, HOME: cliHome }),
        traced([process.execPath, '-e', control], TRACE_SECONDS, { ...env, HOME: controlHome }),
      ]);
      assert.ok(outsideConnects(controlRun.log).length > 0,
        'the control (onnxruntime-node loaded without the door) made no look-up either: this runtime build sends '
        + 'nothing, so the probe cannot tell the door works');
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
