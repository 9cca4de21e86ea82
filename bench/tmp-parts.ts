import { readFileSync } from 'node:fs';
import { generate } from '../src/engine/generate';
import { loadModel } from '../src/engine/model/load';
import { repairTarget, teacherForce } from '../src/engine/trace/teacher';
import { productABt } from '../src/engine/onnx/products';
import { repair } from '../src/engine/repair/index';
import { options } from './common';
const opt = options({ id: { type: 'string', default: 'dev-0003' } });
const min = async (f: () => Promise<unknown>, n = 7) => { let best = Infinity; for (let i = 0; i < n; i++) { const t = performance.now(); await f(); best = Math.min(best, performance.now() - t); } return best.toFixed(1); };
async function main() {
  const model = await loadModel(opt.model!);
  const cases = readFileSync('bench/cases/dev.jsonl', 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const c = cases.find((x: any) => x.id === opt.id);
  const ref = readFileSync('/tmp/keyed/ref30.jsonl', 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).prompt);
  const t = repairTarget(model, c.prompt, c.desired);
  console.log('tokens', t.input.length, 'targets', t.targets.length);
  console.log('teacherForce', await min(() => teacherForce(model, t, undefined, [], true)));
  console.log('teacherForce+ffn', await min(() => teacherForce(model, t, undefined, [], true, [3, 4, 5])));
  console.log('teacherForce all acts', await min(() => teacherForce(model, t, undefined, [0, 1, 2, 3, 4, 5], true, [3, 4, 5])));
  console.log('forward lastOnly', await min(() => model.session.forward({ ids: [t.input], lastOnly: true })));
  console.log('forward 1 tok w/o cache', await min(() => model.session.forward({ ids: [[5]], lastOnly: true })));
  console.log('generate bad', await min(() => generate(model, [c.prompt], {})));
  console.log('generate 1 tok', await min(() => generate(model, [c.prompt], { maxNewTokens: 1 })));
  const A = new Float32Array(7139 * 192).fill(0.01); const B = new Float32Array(8 * 192).fill(0.02);
  console.log('productABt', await min(() => productABt(A, 7139, B, 8, 192)));
  const r = await repair(model, c, { method: 'keyed', reference: ref, analyse: false });
  console.log('repair ms', r.ms.toFixed(0), 'gen', r.generationMs.toFixed(0));
  const rs: number[] = [];
  for (let i = 0; i < 5; i++) { const q = await repair(model, c, { method: 'keyed', reference: ref, analyse: false }); rs.push(q.ms); }
  console.log('repair min', Math.min(...rs).toFixed(0));
  await model.release();
}
main();
