// The `neuronpatch` command: a thin front door over the engine. `--json` prints one JSON object on stdout;
// errors go to stderr with a non-zero exit.
import '../engine/onnx/privacy'; // first: onnxruntime's telemetry off before anything loads it
import { NeuronpatchError } from '../engine/types';
import { safeMessage } from '../engine/untrusted';
import { commands } from './commands';
import { usage } from './args';

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`neuronpatch: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  return command(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // Messages quote file contents and arguments: escaped and cut before they reach the terminal.
    if (e instanceof NeuronpatchError) process.stderr.write(`neuronpatch: ${safeMessage(e.message)}\n`);
    else if (e instanceof TypeError && /ERR_PARSE_ARGS/.test(String((e as { code?: string }).code))) process.stderr.write(`neuronpatch: ${safeMessage(e.message)}\n\n${usage}`);
    else process.stderr.write(`neuronpatch: unexpected error: ${safeMessage((e as Error)?.stack ?? String(e), 8000)}\n`);
    process.exitCode = 1;
  },
);
