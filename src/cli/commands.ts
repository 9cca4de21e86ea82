// One function per CLI command; each parses its options, calls the engine and prints.
import { checkInputFile, float, int, parse, print, promptArg, readJsonl, readText } from './args';
import { UsageError } from './errors';
import { type Command, openModel, readPatches, warn } from './context';
import { demo } from './demo';
import { evaluate } from './eval';
import { exportCommand, repairCommand, traceCommand } from './repair';
import { guardCommand } from './side';

const info: Command = async (args) => {
  const { values } = parse('info', args, {});
  const model = await openModel(values.model, values.threads, values.dtype);
  const i = model.info;
  print(!!values.json, i, () =>
    [
      `model         ${i.name} (${i.folder})`,
      `architecture  ${i.architecture}${i.gated ? ', gated MLP' : ''}, ${i.finalNorm === 'rms' ? 'RMSNorm' : 'LayerNorm'}, ${i.tiedUnembedding ? 'tied' : 'separate'} unembedding`,
      `layers        ${i.layers}`,
      `neurons       ${i.neurons} per layer (${i.layers * i.neurons} in all)`,
      `width         ${i.width}`,
      `vocabulary    ${i.vocab}`,
      `context       ${i.context}`,
      `file          ${i.onnxFile ?? ''}`,
      `weights       ${i.weightFormat ?? i.weightType}${i.weightFormat && !i.weightFormat.startsWith('float16') && i.weightType === 'float16' ? ', float16 activations' : ''}`,
      ...(i.dtype ? [`dtypes        ${i.dtype.files.map((f) => `${f.dtype} (${f.file})`).join(', ')}; loaded ${i.dtype.reason}`] : []),
      `hash          ${i.hash}`,
      '',
    ].join('\n'));
  await model.dispose();
  return 0;
};

const generate: Command = async (args) => {
  const { values } = parse('generate', args, {
    prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, prompts: { type: 'string' },
    'max-new-tokens': { type: 'string' }, patches: { type: 'string', multiple: true }, 'no-heal': { type: 'boolean' },
    multiline: { type: 'boolean' }, temperature: { type: 'string' }, 'top-p': { type: 'string' }, seed: { type: 'string' },
    unescape: { type: 'boolean' },
  });
  const given = [values.prompt !== undefined, !!values['prompt-file'], !!values.prompts].filter(Boolean).length;
  if (given !== 1) throw new UsageError(`generate needs exactly one of --prompt, --prompt-file, --prompts${given ? `, not ${given}` : ''}.`, 'neuronpatch generate --help lists its options.');
  // Every number is checked before the model loads.
  const numbers = {
    maxNewTokens: int(values['max-new-tokens'], 'max-new-tokens', 48), heal: !values['no-heal'], multiline: !!values.multiline,
    temperature: float(values.temperature, 'temperature', 0, { min: 0, what: 'a number of 0 or more (0: greedy)' }),
    topP: float(values['top-p'], 'top-p', 1, { above: 0, max: 1, what: 'a number above 0 and at most 1' }), seed: int(values.seed, 'seed', 0, 0),
  };
  const prompts = values.prompts
    ? readJsonl<{ prompt: string }>(values.prompts, (v) => (typeof (v as { prompt?: unknown })?.prompt === 'string' ? undefined : 'no "prompt" string'), warn, 'prompts', '--prompts').map((p) => p.prompt)
    : [values.prompt !== undefined ? promptArg(values.prompt, !!values.unescape, 'prompt') : readText(values['prompt-file']!, '--prompt-file')];
  for (const f of values.patches ?? []) checkInputFile(f, '--patches');
  const model = await openModel(values.model, values.threads, values.dtype);
  const opts = { ...numbers, patches: await readPatches(model, values.patches ?? []) };
  // One prompt at a time keeps each line's `ms` its own and the output identical to a single call.
  for (const p of prompts) {
    const c = await model.generate(p, opts);
    if (c.notice) warn(c.notice);
    print(!!values.json, c, () => `${c.completion}\n`);
  }
  await model.dispose();
  return 0;
};

export const commands: Record<string, Command> = { info, generate, trace: traceCommand, repair: repairCommand, eval: evaluate, export: exportCommand, demo, guard: guardCommand };
