// Element types of a graph's tensors, inferred from the graph itself: the nodes the engine inserts must take the
// type of the tensor they touch (an fp16 graph with fp32 inputs and outputs has fp16 activations behind fp32
// KV-cache inputs). Declared types (inputs, initializers, value_info, Constants) win; otherwise each op's rule
// from the ONNX and onnxruntime contrib specs, and for elementwise ops the type of their first typed input.
import { onnx } from 'onnx-proto';

const T = onnx.TensorProto.DataType;

/** Ops whose output is always int64 (shapes, indices). */
const INT64_OUT = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin', 'NonMaxSuppression']);
const BOOL_OUT = new Set(['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf']);
/** Ops whose output type is that of input k (not of input 0). */
const TYPE_OF_INPUT: Record<string, number> = { Where: 1, MatMulNBits: 0, MatMulIntegerToFloat: 2, Range: 0, Expand: 0 };

/**
 * The element type (TensorProto.DataType) of tensors of one graph, computed on demand and memoised.
 * `typeOf` returns undefined where no rule applies (an unknown contrib op with no declared output type).
 */
export class ElemTypes {
  private readonly known = new Map<string, number>();
  private readonly producer = new Map<string, onnx.INodeProto>();

  constructor(graph: onnx.IGraphProto) {
    const declare = (v: onnx.IValueInfoProto) => {
      const t = v.type?.tensorType?.elemType;
      if (v.name && t) this.known.set(v.name, t);
    };
    (graph.input ?? []).forEach(declare);
    (graph.output ?? []).forEach(declare);
    (graph.valueInfo ?? []).forEach(declare);
    for (const t of graph.initializer ?? []) if (t.name && t.dataType) this.known.set(t.name, t.dataType);
    for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) this.producer.set(o, n);
  }

  typeOf(tensor: string): number | undefined {
    // Iterative over the producer chain (graphs are deep: a recursive walk could overflow on a 100-layer model).
    const pending: string[] = [tensor];
    const visiting = new Set<string>();
    while (pending.length) {
      const name = pending[pending.length - 1];
      if (this.known.has(name)) {
        pending.pop();
        continue;
      }
      const n = this.producer.get(name);
      if (!n) {
        pending.pop();
        this.known.set(name, 0);
        continue;
      }
      const rule = this.rule(n, name);
      if (typeof rule === 'number') {
        this.known.set(name, rule);
        pending.pop();
        continue;
      }
      // The rule needs the type of another tensor first.
      if (visiting.has(name)) {
        this.known.set(name, 0);
        pending.pop();
        continue;
      }
      visiting.add(name);
      pending.push(rule.needs);
    }
    const t = this.known.get(tensor);
    return t ? t : undefined;
  }

  /** The type of `output` of node `n`, or the input whose type must be known first. */
  private rule(n: onnx.INodeProto, output: string): number | { needs: string } {
    const op = n.opType ?? '';
    const inputs = n.input ?? [];
    const index = (n.output ?? []).indexOf(output);
    const attrInt = (name: string) => {
      const a = n.attribute?.find((x) => x.name === name);
      return a?.i !== undefined && a.i !== null ? Number(a.i) : undefined;
    };
    if (op === 'Cast') return attrInt('to') ?? 0;
    if (op === 'CastLike') return this.needOrType(inputs[1]);
    if (op === 'Constant') return n.attribute?.find((a) => a.name === 'value')?.t?.dataType ?? 0;
    if (op === 'ConstantOfShape') return n.attribute?.find((a) => a.name === 'value')?.t?.dataType ?? T.FLOAT;
    if (INT64_OUT.has(op)) return T.INT64;
    if (BOOL_OUT.has(op)) return T.BOOL;
    if (op === 'DynamicQuantizeLinear') return index === 1 ? T.FLOAT : T.UINT8;
    if (op === 'MatMulInteger' || op === 'ConvInteger') return T.INT32;
    if (op === 'QuantizeLinear') return inputs[2] ? this.needOrType(inputs[2]) : T.UINT8;
    if (op === 'DequantizeLinear') return inputs[1] ? this.needOrType(inputs[1]) : T.FLOAT;
    // com.microsoft EmbedLayerNormalization: (output, mask_index, embedding_sum); floats of the word embedding's type.
    if (op === 'EmbedLayerNormalization') return index === 1 ? T.INT32 : this.needOrType(inputs[2] ?? '');
    if (op === 'SkipLayerNormalization' || op === 'SkipSimplifiedLayerNormalization') return this.needOrType(inputs[0]);
    if (op in TYPE_OF_INPUT) return this.needOrType(inputs[TYPE_OF_INPUT[op]] ?? '');
    const firstTyped = inputs.find((i) => i);
    return firstTyped ? this.needOrType(firstTyped) : 0;
  }

  private needOrType(tensor: string): number | { needs: string } {
    if (!tensor) return 0;
    const t = this.known.get(tensor);
    return t !== undefined ? t : { needs: tensor };
  }
}

/** 'float16' for FLOAT16, 'float32' for FLOAT; anything else is refused by the caller. */
export function floatName(t: number | undefined): 'float16' | 'float32' | undefined {
  return t === T.FLOAT16 ? 'float16' : t === T.FLOAT ? 'float32' : undefined;
}
