// Entry of the engine process (bundled as dist/engineProcess.js, started by ./client.ts with child_process.fork):
// loads one model and serves the calls of ./protocol.ts over the IPC channel. Each call gets its own
// AbortController; a cancel message, or a newer call in the same lane, aborts it, and the engine stops at its next
// checkpoint (between forwards). When the extension host goes away (the channel closes) the process ends with
// it, so no model is left holding memory. Never imports vscode.
import { Cancelled, loadModel, type Model, NeuronpatchError, PrefixCache, repair, trace } from '../../engine';
import { patchSet } from '../../engine/patches/patchset';
import { harvestGuard } from '../../engine/repair/guard';
import { greedyLines } from '../../engine/repair/verify';
import { type Call, COMPLETION_LANE, type FromWorker, sideEffectCount, type ToWorker, type WireError } from './protocol';

if (!process.send) throw new Error('engineProcess.js runs as a child process with an IPC channel only (child_process.fork).');
const send = process.send.bind(process);

let model: Model | undefined;
const prefix = new PrefixCache();
const running = new Map<number, AbortController>();
const lanes = new Map<string, number>();

// A host that has gone away cannot be told anything: the 'disconnect' handler below ends the process.
const post = (m: FromWorker) => {
  if (process.connected) send(m, undefined, undefined, () => undefined);
};

process.on('disconnect', () => process.exit(0));

function wire(e: unknown, signal: AbortSignal): WireError {
  const err = e instanceof Error ? e : new Error(String(e));
  return {
    name: err.name, message: err instanceof NeuronpatchError && err.hint ? err.message.split('\n')[0] : err.message,
    hint: err instanceof NeuronpatchError ? err.hint : undefined,
    cancelled: signal.aborted || err instanceof Cancelled,
  };
}

function need(): Model {
  if (!model) throw new NeuronpatchError('No model is loaded in the engine process.');
  return model;
}

async function serve(call: Call, signal: AbortSignal, id: number): Promise<unknown> {
  switch (call.kind) {
    case 'load': {
      if (model) await model.dispose();
      model = undefined;
      prefix.clear();
      // Beside the extension host: onnxruntime's idle threads sleep rather than spin on the cores the host needs.
      model = await loadModel(call.folder, { spinning: false, ...call.options, log: (line) => post({ log: line }) });
      return { info: model.info, onnxPath: model.loaded.onnxPath, graph: model.loaded.graph };
    }
    case 'generate': {
      const m = need();
      // A completion goes ahead of a repair running on the same model: the repair's forwards pause while it decodes.
      return m.generate(call.prompt, {
        ...call.options, patches: call.patches, signal, prefix: call.reusePrefix ? prefix : undefined, interactive: call.lane === COMPLETION_LANE,
      });
    }
    case 'greedyLines': {
      const m = need();
      return greedyLines(m.loaded, call.prompts, call.patches.length ? patchSet(call.patches, m.info.width) : undefined, signal);
    }
    case 'repair':
      return repair(need(), call.case, {
        ...call.options, signal, onProgress: (line) => post({ id, progress: line }),
        onSideEffectProgress: (done, total) => post({ id, progress: sideEffectCount(done, total) }),
      });
    case 'harvestGuard':
      return harvestGuard(need().loaded, call.texts, { max: call.max, signal });
    case 'trace':
      return trace(need(), call.case, { active: call.patches, top: call.top, signal });
  }
}

process.on('message', (msg: ToWorker) => {
  if ('dispose' in msg) {
    for (const ac of running.values()) ac.abort();
    void (model?.dispose() ?? Promise.resolve()).finally(() => process.exit(0));
    return;
  }
  if ('cancel' in msg) {
    running.get(msg.id)?.abort();
    return;
  }
  const { id, call } = msg;
  const ac = new AbortController();
  running.set(id, ac);
  if (call.kind === 'generate' && call.lane) {
    const stale = lanes.get(call.lane);
    if (stale !== undefined) running.get(stale)?.abort();
    lanes.set(call.lane, id);
  }
  serve(call, ac.signal, id).then(
    (value) => post({ id, ok: true, value }),
    (e: unknown) => post({ id, ok: false, error: wire(e, ac.signal) }),
  ).finally(() => {
    running.delete(id);
    if (call.kind === 'generate' && call.lane && lanes.get(call.lane) === id) lanes.delete(call.lane);
  });
});
