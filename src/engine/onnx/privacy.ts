// Nothing leaves the machine. onnxruntime-node's Linux library carries Microsoft telemetry (a DNS look-up and
// upload to an events.data.microsoft.com host some seconds into a run, a device id and event files under
// ~/.cache/Microsoft/DeveloperTools/, an empty /tmp/mat-debug-<pid>.log per process). The library reads
// ORT_DISABLE_TELEMETRY from the environment when it starts, so it must be set before onnxruntime-node is first
// loaded: this module has no imports and is the first import of `./runtime`, the engine's only door to the
// runtime, and of every entry point (CLI, extension, tests, benches). Node's process.env setter calls setenv(3),
// so the native library sees it. A user's own `ORT_DISABLE_TELEMETRY=0` is overridden on purpose.

/** The environment variable onnxruntime reads to turn its telemetry off. */
export const TELEMETRY_ENV = 'ORT_DISABLE_TELEMETRY';

process.env[TELEMETRY_ENV] = '1';

/** True once telemetry is turned off in this process's environment (always, after this module loaded). */
export function telemetryDisabled(): boolean {
  return process.env[TELEMETRY_ENV] === '1';
}
