#!/usr/bin/python3
"""Model folders of the layouts and inputs real exports have, made from the repository's own fixtures so that CI
tests them without ../shared/ (Debian python3-onnx + numpy; deterministic; a few seconds).

    /usr/bin/python3 tools/inputs/make_inputs.py [--out test/inputs]

Each folder copies a test/fixtures/ model's config and tokenizer and rewrites its graph, from the ONNX operator
specs, into one of these forms (each computes the same function as its source, except the overflow one):

  tiny-qwen2-merged/onnx/decoder_model_merged.onnx  Optimum's merged decoder: If(use_cache_branch), the with-past
      branch reading past_key_values.N.*, the no-past branch starting from empty caches it makes itself; the
      initializers shared in the outer graph.
  tiny-starcoder-fused-kv/     StarCoder's multi-query cache as Optimum exports it: past_key_values.N.key_value
      [batch, past, 2 * head_dim] (key | value on the last axis) and present.N.key_value.
  tiny-gpt-neox-no-positions/  no position_ids input: positions = past length + arange(seq), the same every row.
  tiny-codegen-logits-to-keep/ the required scalar input logits_to_keep (int64; 0 = all positions) slicing the
      hidden states before the lm_head, as newer transformers exports carry.
  tiny-gqa-llama/              a LLaMA whose attention is com.microsoft.GroupQueryAttention (onnxruntime-genai's
      CPU builds), written from the operator's spec in onnxruntime's ContribOperators.md; genai_config.json.
  tiny-gpt-neox-overflow/      the lm_head scaled by 1e38: logits overflow to +-inf (what fp16 builds of large models
      do in float16), for the engine's refusal.

The tests (test/unit/inputs-built.test.ts) compare each against a plain onnxruntime session of its source.
"""
import argparse
import copy
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, 'test', 'fixtures')


def copy_folder(src: str, dst: str, onnx_rel: str = 'model.onnx') -> None:
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(os.path.dirname(os.path.join(dst, onnx_rel)), exist_ok=True)
    for f in os.listdir(src):
        if f.endswith('.onnx') or f == 'reference_logits.json':
            continue
        shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))


def save(model: onnx.ModelProto, path: str) -> None:
    onnx.checker.check_model(model)
    onnx.save(model, path)


def const_i64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def merged(src: onnx.ModelProto) -> onnx.ModelProto:
    """If(use_cache_branch): then = the graph as it is (with past); else = the graph on empty caches of its own."""
    g = src.graph
    pasts = [i for i in g.input if i.name.startswith('past_key_values.')]
    outs = [o.name for o in g.output]

    def branch(prefix: str, with_past: bool) -> onnx.GraphProto:
        nodes = []
        rename = {o: f'{prefix}/{o}' for o in outs}
        if not with_past:
            # Empty [batch, heads, 0, head_dim] caches from the batch size of input_ids.
            nodes += [
                helper.make_node('Shape', ['input_ids'], [f'{prefix}/ids_shape']),
                helper.make_node('Gather', [f'{prefix}/ids_shape', f'{prefix}/zero'], [f'{prefix}/batch'], axis=0),
                helper.make_node('Unsqueeze', [f'{prefix}/batch', f'{prefix}/axes0'], [f'{prefix}/batch1']),
            ]
            for p in pasts:
                nodes += [
                    helper.make_node('Concat', [f'{prefix}/batch1', f'{prefix}/{p.name}/rest'], [f'{prefix}/{p.name}/shape'], axis=0),
                    helper.make_node('ConstantOfShape', [f'{prefix}/{p.name}/shape'], [f'{prefix}/{p.name}'],
                                     value=numpy_helper.from_array(np.zeros(1, np.float32))),
                ]
                rename[p.name] = f'{prefix}/{p.name}'
        for n in g.node:
            m = copy.deepcopy(n)
            m.input[:] = [rename.get(i, i) for i in n.input]
            m.output[:] = [rename.get(o, o) for o in n.output]
            nodes.append(m)
        inits = []
        if not with_past:
            inits += [const_i64(f'{prefix}/zero', 0), const_i64(f'{prefix}/axes0', [0])]
            for p in pasts:
                dims = [d.dim_value for d in p.type.tensor_type.shape.dim]
                inits.append(const_i64(f'{prefix}/{p.name}/rest', [dims[1], 0, dims[3]]))
        outputs = [helper.make_tensor_value_info(rename[o.name], o.type.tensor_type.elem_type, None) for o in g.output]
        return helper.make_graph(nodes, prefix, [], outputs, initializer=inits)

    use = helper.make_tensor_value_info('use_cache_branch', TensorProto.BOOL, [1])
    node = helper.make_node('If', ['use_cache_branch'], outs, name='optimum::if',
                            then_branch=branch('with_past', True), else_branch=branch('no_past', False))
    graph = helper.make_graph([node], g.name, list(g.input) + [use], list(g.output), initializer=list(g.initializer))
    model = helper.make_model(graph, opset_imports=list(src.opset_import), producer_name='neuronpatch tools/inputs')
    model.ir_version = src.ir_version
    return model


def fused_kv(src: onnx.ModelProto) -> onnx.ModelProto:
    """past_key_values.N.key/value [b, 1, past, hd] → one past_key_values.N.key_value [b, past, 2 hd]."""
    m = copy.deepcopy(src)
    g = m.graph
    layers = sorted({int(i.name.split('.')[1]) for i in g.input if i.name.startswith('past_key_values.')})
    hd = [d.dim_value for d in g.input[3].type.tensor_type.shape.dim][3]
    assert [d.dim_value for d in g.input[3].type.tensor_type.shape.dim][1] == 1, 'multi-query: one KV head'
    new_inputs = [i for i in g.input if not i.name.startswith('past_key_values.')]
    new_outputs = [o for o in g.output if not o.name.startswith('present.')]
    head, tail = [], []
    g.initializer.extend([const_i64('fkv_split', [hd, hd]), const_i64('fkv_axes1', [1])])
    for L in layers:
        k, v = f'past_key_values.{L}.key', f'past_key_values.{L}.value'
        pk, pv = f'present.{L}.key', f'present.{L}.value'
        fused, pfused = f'past_key_values.{L}.key_value', f'present.{L}.key_value'
        new_inputs.append(helper.make_tensor_value_info(fused, TensorProto.FLOAT, ['batch_size', 'past_sequence_length', 2 * hd]))
        new_outputs.append(helper.make_tensor_value_info(pfused, TensorProto.FLOAT, ['batch_size', 'total_sequence_length', 2 * hd]))
        head += [
            helper.make_node('Split', [fused, 'fkv_split'], [f'fkv{L}_k3', f'fkv{L}_v3'], axis=2),
            helper.make_node('Unsqueeze', [f'fkv{L}_k3', 'fkv_axes1'], [k]),
            helper.make_node('Unsqueeze', [f'fkv{L}_v3', 'fkv_axes1'], [v]),
        ]
        tail += [
            helper.make_node('Squeeze', [pk, 'fkv_axes1'], [f'fkv{L}_pk']),
            helper.make_node('Squeeze', [pv, 'fkv_axes1'], [f'fkv{L}_pv']),
            helper.make_node('Concat', [f'fkv{L}_pk', f'fkv{L}_pv'], [pfused], axis=2),
        ]
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend(new_inputs)
    del g.output[:]
    g.output.extend(new_outputs)
    return m


def no_positions(src: onnx.ModelProto) -> onnx.ModelProto:
    """position_ids computed inside: past length + arange(seq), expanded over the batch."""
    m = copy.deepcopy(src)
    g = m.graph
    inputs = [i for i in g.input if i.name != 'position_ids']
    del g.input[:]
    g.input.extend(inputs)
    g.initializer.extend([const_i64('np_c1', 1), const_i64('np_i1', [1]), const_i64('np_i2', [2]), const_i64('np_i3', [3]), const_i64('np_ax0', [0])])
    nodes = [
        helper.make_node('Shape', ['past_key_values.0.key'], ['np_pshape']),
        helper.make_node('Slice', ['np_pshape', 'np_i2', 'np_i3', 'np_ax0'], ['np_past1']),
        helper.make_node('Squeeze', ['np_past1', 'np_ax0'], ['np_past']),
        helper.make_node('Shape', ['input_ids'], ['np_ishape']),
        helper.make_node('Slice', ['np_ishape', 'np_i1', 'np_i2', 'np_ax0'], ['np_seq1']),
        helper.make_node('Squeeze', ['np_seq1', 'np_ax0'], ['np_seq']),
        helper.make_node('Add', ['np_past', 'np_seq'], ['np_end']),
        helper.make_node('Range', ['np_past', 'np_end', 'np_c1'], ['np_range']),
        helper.make_node('Unsqueeze', ['np_range', 'np_ax0'], ['np_row']),
        helper.make_node('Expand', ['np_row', 'np_ishape'], ['position_ids']),
    ]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    return m


def logits_to_keep(src: onnx.ModelProto) -> onnx.ModelProto:
    """hidden[:, -k:, :] before the lm_head MatMul (k = 0 keeps all: Slice from -0 = 0)."""
    m = copy.deepcopy(src)
    g = m.graph
    head = next(n for n in g.node if n.op_type == 'MatMul' and 'lm_head' in n.name)
    hidden = head.input[0]
    g.input.append(helper.make_tensor_value_info('logits_to_keep', TensorProto.INT64, []))
    g.initializer.extend([const_i64('ltk_zero', [0]), const_i64('ltk_big', [2**62]), const_i64('ltk_axes', [1])])
    nodes = [
        helper.make_node('Neg', ['logits_to_keep'], ['ltk_neg']),
        helper.make_node('Unsqueeze', ['ltk_neg', 'ltk_zero'], ['ltk_start']),
        helper.make_node('Slice', [hidden, 'ltk_start', 'ltk_big', 'ltk_axes'], ['ltk_hidden']),
    ]
    head.input[0] = 'ltk_hidden'
    at = list(g.node).index(head)
    all_nodes = list(g.node)
    del g.node[:]
    g.node.extend(all_nodes[:at] + nodes + all_nodes[at:])
    logits = next(o for o in g.output if o.name == 'logits')
    logits.type.tensor_type.shape.dim[1].dim_param = 'kept_sequence_length'
    return m


def overflow(src: onnx.ModelProto) -> onnx.ModelProto:
    m = copy.deepcopy(src)
    head = next(n for n in m.graph.node if n.op_type == 'MatMul' and ('embed_out' in n.name or 'lm_head' in n.name))
    t = next(t for t in m.graph.initializer if t.name == head.input[1])
    w = numpy_helper.to_array(t).astype(np.float32) * np.float32(1e38)
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    return m


def gqa_llama(out_dir: str) -> None:
    """A LLaMA-style decoder whose attention is com.microsoft.GroupQueryAttention, as onnxruntime-genai's CPU builds
    make it: seqlens_k = sum(attention_mask) - 1 and total_sequence_length from the mask (int32), rotary inside
    the op (do_rotary, cos/sin caches), no position_ids input, 4 query heads over 2 KV heads; RMSNorm decomposed,
    SiLU-gated MLP with Hugging Face node names, random weights (N(0, 1/fan_in), seed 12)."""
    rng = np.random.default_rng(12)
    d, heads, kv_heads, m, layers, vocab, ctx = 64, 4, 2, 128, 2, 320, 128  # the op wants head_size % 16 == 0
    hd = d // heads
    inits, nodes = [], []

    def w(name, shape, scale=None):
        a = rng.normal(0, scale if scale is not None else 1 / np.sqrt(shape[0]), shape).astype(np.float32)
        inits.append(numpy_helper.from_array(a, name))
        return name

    def rms(x, name, prefix):
        g = numpy_helper.from_array((1 + rng.normal(0, 0.1, d)).astype(np.float32), f'{name}.weight')
        inits.append(g)
        nodes.extend([
            helper.make_node('Pow', [x, 'c_two'], [f'{prefix}/Pow_output_0'], name=f'{prefix}/Pow'),
            helper.make_node('ReduceMean', [f'{prefix}/Pow_output_0'], [f'{prefix}/ReduceMean_output_0'], name=f'{prefix}/ReduceMean', axes=[-1], keepdims=1),
            helper.make_node('Add', [f'{prefix}/ReduceMean_output_0', 'c_eps'], [f'{prefix}/Add_output_0'], name=f'{prefix}/Add'),
            helper.make_node('Sqrt', [f'{prefix}/Add_output_0'], [f'{prefix}/Sqrt_output_0'], name=f'{prefix}/Sqrt'),
            helper.make_node('Div', [x, f'{prefix}/Sqrt_output_0'], [f'{prefix}/Div_output_0'], name=f'{prefix}/Div'),
            helper.make_node('Mul', [f'{prefix}/Div_output_0', f'{name}.weight'], [f'{prefix}/Mul_output_0'], name=f'{prefix}/Mul'),
        ])
        return f'{prefix}/Mul_output_0'

    inits += [numpy_helper.from_array(np.array(2, np.float32), 'c_two'), numpy_helper.from_array(np.array(1e-6, np.float32), 'c_eps'),
              const_i64('c_axes1', [1]), const_i64('c_one', [1]), const_i64('c_idx1', 1)]
    inv = 1.0 / (10000 ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    freqs = np.outer(np.arange(ctx, dtype=np.float32), inv)
    inits += [numpy_helper.from_array(np.cos(freqs).astype(np.float32), 'cos_cache'), numpy_helper.from_array(np.sin(freqs).astype(np.float32), 'sin_cache')]
    w('model.embed_tokens.weight', [vocab, d], 1.0)
    nodes += [
        helper.make_node('Gather', ['model.embed_tokens.weight', 'input_ids'], ['/model/embed_tokens/Gather_output_0'], name='/model/embed_tokens/Gather'),
        # seqlens_k = sum(mask) - 1, total_sequence_length = mask width: int32, as the op wants them.
        helper.make_node('ReduceSum', ['attention_mask', 'c_axes1'], ['/model/attn_mask_reformat/ReduceSum_output_0'], name='/model/attn_mask_reformat/ReduceSum', keepdims=0),
        helper.make_node('Sub', ['/model/attn_mask_reformat/ReduceSum_output_0', 'c_one'], ['/model/attn_mask_reformat/Sub_output_0'], name='/model/attn_mask_reformat/Sub'),
        helper.make_node('Cast', ['/model/attn_mask_reformat/Sub_output_0'], ['seqlens_k'], name='/model/attn_mask_reformat/Cast', to=TensorProto.INT32),
        helper.make_node('Shape', ['attention_mask'], ['/model/attn_mask_reformat/Shape_output_0'], name='/model/attn_mask_reformat/Shape'),
        helper.make_node('Gather', ['/model/attn_mask_reformat/Shape_output_0', 'c_idx1'], ['/model/attn_mask_reformat/Gather_output_0'], name='/model/attn_mask_reformat/Gather'),
        helper.make_node('Cast', ['/model/attn_mask_reformat/Gather_output_0'], ['total_seq_len'], name='/model/attn_mask_reformat/Cast_1', to=TensorProto.INT32),
    ]
    x = '/model/embed_tokens/Gather_output_0'
    inputs = [helper.make_tensor_value_info('input_ids', TensorProto.INT64, ['batch_size', 'sequence_length']),
              helper.make_tensor_value_info('attention_mask', TensorProto.INT64, ['batch_size', 'total_sequence_length'])]
    outputs = [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch_size', 'sequence_length', vocab])]
    for L in range(layers):
        p = f'/model/layers.{L}'
        h = rms(x, f'model.layers.{L}.input_layernorm', f'{p}/input_layernorm')
        for proj, width in (('q_proj', d), ('k_proj', kv_heads * hd), ('v_proj', kv_heads * hd)):
            nodes.append(helper.make_node('MatMul', [h, w(f'model.layers.{L}.self_attn.{proj}.MatMul.weight', [d, width])], [f'{p}/self_attn/{proj}/MatMul_output_0'], name=f'{p}/self_attn/{proj}/MatMul'))
        pk, pv = f'past_key_values.{L}.key', f'past_key_values.{L}.value'
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ['batch_size', kv_heads, 'past_sequence_length', hd]) for n in (pk, pv)]
        outputs += [helper.make_tensor_value_info(f'present.{L}.{n}', TensorProto.FLOAT, ['batch_size', kv_heads, 'total_sequence_length', hd]) for n in ('key', 'value')]
        nodes.append(helper.make_node(
            'GroupQueryAttention',
            [f'{p}/self_attn/q_proj/MatMul_output_0', f'{p}/self_attn/k_proj/MatMul_output_0', f'{p}/self_attn/v_proj/MatMul_output_0', pk, pv, 'seqlens_k', 'total_seq_len', 'cos_cache', 'sin_cache'],
            [f'{p}/self_attn/GroupQueryAttention_output_0', f'present.{L}.key', f'present.{L}.value'],
            name=f'{p}/self_attn/GroupQueryAttention', domain='com.microsoft', num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0))
        nodes += [
            helper.make_node('MatMul', [f'{p}/self_attn/GroupQueryAttention_output_0', w(f'model.layers.{L}.self_attn.o_proj.MatMul.weight', [d, d])], [f'{p}/self_attn/o_proj/MatMul_output_0'], name=f'{p}/self_attn/o_proj/MatMul'),
            helper.make_node('Add', [x, f'{p}/self_attn/o_proj/MatMul_output_0'], [f'{p}/Add_output_0'], name=f'{p}/Add'),
        ]
        h2 = rms(f'{p}/Add_output_0', f'model.layers.{L}.post_attention_layernorm', f'{p}/post_attention_layernorm')
        nodes += [
            helper.make_node('MatMul', [h2, w(f'model.layers.{L}.mlp.gate_proj.MatMul.weight', [d, m])], [f'{p}/mlp/gate_proj/MatMul_output_0'], name=f'{p}/mlp/gate_proj/MatMul'),
            helper.make_node('Sigmoid', [f'{p}/mlp/gate_proj/MatMul_output_0'], [f'{p}/mlp/act_fn/Sigmoid_output_0'], name=f'{p}/mlp/act_fn/Sigmoid'),
            helper.make_node('Mul', [f'{p}/mlp/gate_proj/MatMul_output_0', f'{p}/mlp/act_fn/Sigmoid_output_0'], [f'{p}/mlp/act_fn/Mul_output_0'], name=f'{p}/mlp/act_fn/Mul'),
            helper.make_node('MatMul', [h2, w(f'model.layers.{L}.mlp.up_proj.MatMul.weight', [d, m])], [f'{p}/mlp/up_proj/MatMul_output_0'], name=f'{p}/mlp/up_proj/MatMul'),
            helper.make_node('Mul', [f'{p}/mlp/act_fn/Mul_output_0', f'{p}/mlp/up_proj/MatMul_output_0'], [f'{p}/mlp/Mul_output_0'], name=f'{p}/mlp/Mul'),
            helper.make_node('MatMul', [f'{p}/mlp/Mul_output_0', w(f'model.layers.{L}.mlp.down_proj.MatMul.weight', [m, d])], [f'{p}/mlp/down_proj/MatMul_output_0'], name=f'{p}/mlp/down_proj/MatMul'),
            helper.make_node('Add', [f'{p}/Add_output_0', f'{p}/mlp/down_proj/MatMul_output_0'], [f'{p}/Add_1_output_0'], name=f'{p}/Add_1'),
        ]
        x = f'{p}/Add_1_output_0'
    h = rms(x, 'model.norm', '/model/norm')
    nodes.append(helper.make_node('MatMul', [h, w('lm_head.MatMul.weight', [d, vocab])], ['logits'], name='/lm_head/MatMul'))
    graph = helper.make_graph(nodes, 'gqa-llama', inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17), helper.make_opsetid('com.microsoft', 1)], producer_name='neuronpatch tools/inputs')
    model.ir_version = 8
    copy_folder(os.path.join(FIXTURES, 'tiny-qwen2'), out_dir)
    os.remove(os.path.join(out_dir, 'config.json'))
    onnx.save(model, os.path.join(out_dir, 'model.onnx'))
    import json
    with open(os.path.join(out_dir, 'genai_config.json'), 'w') as f:
        json.dump({'model': {'type': 'llama', 'bos_token_id': 0, 'eos_token_id': 0, 'pad_token_id': 0, 'vocab_size': vocab, 'context_length': ctx,
                             'decoder': {'filename': 'model.onnx', 'hidden_size': d, 'head_size': hd, 'num_attention_heads': heads,
                                         'num_key_value_heads': kv_heads, 'num_hidden_layers': layers,
                                         'inputs': {'input_ids': 'input_ids', 'attention_mask': 'attention_mask',
                                                    'past_key_names': 'past_key_values.%d.key', 'past_value_names': 'past_key_values.%d.value'},
                                         'outputs': {'logits': 'logits', 'present_key_names': 'present.%d.key', 'present_value_names': 'present.%d.value'}}}},
                  f, indent=2)
    with open(os.path.join(out_dir, 'SOURCE.md'), 'w') as f:
        f.write('# tiny-gqa-llama\n\nWritten by `tools/inputs/make_inputs.py` (gqa_llama: ' + gqa_llama.__doc__.split(chr(10))[0] + ' ...); do not edit by hand. The tokenizer is test/fixtures/tiny-qwen2\'s.\n')
    print(f'{out_dir}/model.onnx: {os.path.getsize(os.path.join(out_dir, "model.onnx"))} bytes')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=os.path.join(ROOT, 'test', 'inputs'))
    args = ap.parse_args(argv)
    jobs = [
        ('tiny-qwen2', 'tiny-qwen2-merged', 'onnx/decoder_model_merged.onnx', merged),
        ('tiny-starcoder', 'tiny-starcoder-fused-kv', 'model.onnx', fused_kv),
        ('tiny-gpt-neox', 'tiny-gpt-neox-no-positions', 'model.onnx', no_positions),
        ('tiny-codegen', 'tiny-codegen-logits-to-keep', 'model.onnx', logits_to_keep),
        ('tiny-gpt-neox', 'tiny-gpt-neox-overflow', 'model.onnx', overflow),
    ]
    for src_name, name, rel, fn in jobs:
        src_dir = os.path.join(FIXTURES, src_name)
        dst = os.path.join(args.out, name)
        copy_folder(src_dir, dst, rel)
        save(fn(onnx.load(os.path.join(src_dir, 'model.onnx'))), os.path.join(dst, rel))
        with open(os.path.join(dst, 'SOURCE.md'), 'w') as f:
            f.write(f'# {name}\n\nWritten by `tools/inputs/make_inputs.py` from `test/fixtures/{src_name}` ({fn.__doc__.strip().splitlines()[0] if fn.__doc__ else fn.__name__}); do not edit by hand.\n')
        print(f'{dst}/{rel}: {os.path.getsize(os.path.join(dst, rel))} bytes')
    gqa_llama(os.path.join(args.out, 'tiny-gqa-llama'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
