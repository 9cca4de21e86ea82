// The `neuronpatch` command: a thin front door over the engine. `--json` prints one JSON object on stdout; an
// error goes to stderr (with --json as one JSON object, see errors.ts) with a non-zero exit code (errors.ts EXIT).
import '../engine/onnx/privacy'; // first: onnxruntime's telemetry off before anything loads it
import { commands } from './commands';
import { commandUsage, usage } from './args';
import { didYouMean, errorObject, errorText, exitCodeOf, EXIT, fromFsError, UsageError, word } from './errors';

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(rest[0] && commands[rest[0]] ? commandUsage(rest[0]) : usage);
    return EXIT.ok;
  }
  if (!name) {
    process.stderr.write(usage);
    return EXIT.usage;
  }
  const command = commands[name];
  if (!command) {
    const names = Object.keys(commands);
    throw new UsageError(
      name.startsWith('-') ? `a command comes first, before options like ${word(name)}.` : `unknown command ${word(name)}${didYouMean(name, names)}`,
      `The commands are ${names.join(', ')}; neuronpatch --help describes them.`,
    );
  }
  // `neuronpatch repair --help`: that command's usage (before its options are parsed, so nothing else is needed).
  const options = rest.slice(0, rest.includes('--') ? rest.indexOf('--') : rest.length);
  if (options.includes('--help') || options.includes('-h')) {
    process.stdout.write(commandUsage(name));
    return EXIT.ok;
  }
  return command(rest);
}

const argv = process.argv.slice(2);
// --json anywhere among the options (not after `--`) makes an error one JSON object, even one about the options.
const json = argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length).includes('--json');

main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (thrown: unknown) => {
    const e = fromFsError(thrown);
    // Messages quote file contents and arguments: escaped and cut before they reach the terminal.
    process.stderr.write(json ? `${JSON.stringify(errorObject(e))}\n` : errorText(e));
    process.exitCode = exitCodeOf(e);
  },
);
