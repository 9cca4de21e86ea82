#!/usr/bin/python3
"""Converts an fp32 decoder folder (the embedded models/demo) into the dtype files people download, written from
the operator specs with numpy and python3-onnx only:

  q4           com.microsoft MatMulNBits, 4 bits, fp32 activations and scales
  q4f16        fp16 graph (fp16 I/O) with MatMulNBits, fp16 scales
  int8, uint8  ONNX DynamicQuantizeLinear + MatMulInteger + Cast + Mul(a_scale * b_scale), int8 (symmetric) or
               uint8 (asymmetric) weights, per tensor or per output channel (--per-channel)
  int8-fused   the same weights through com.microsoft MatMulIntegerToFloat (what onnxruntime's optimizer fuses)
  fp16         every float tensor in fp16, fp16 graph inputs and outputs
  fp16-fp32io  fp16 inside, fp32 graph inputs and outputs (Casts at the edges; the keep-io-types recipe)
  dtypes       the onnx-community layout: onnx/model_fp16.onnx (external data), model_int8.onnx,
               model_uint8.onnx, model_q4.onnx, model_q4f16.onnx, and no fp32 file

Specs followed (onnxruntime docs/ContribOperators.md, ONNX Operators.md):
- MatMulNBits: Y = A · dequant(B)ᵀ; B uint8 [N, ceil(K/block), block·bits/8], codes packed low bits first along K;
  scales [N·blocks] of A's type; zero_points optional, uint8 packed [N·ceil(blocks·bits/8)]; default 2^(bits−1).
- DynamicQuantizeLinear: uint8 y = saturate(round(x / s) + zp), s = (max(0, max x) − min(0, min x)) / 255.
- MatMulInteger: int32 (A − a_zp)(B − b_zp), b_zp a scalar or [N] (per column).
- MatMulIntegerToFloat: float (A − a_zp)(B − b_zp) · a_scale · b_scale.

--targets picks which weight MatMuls are quantized: all (default), ffn (each layer's down_proj), lm_head, or a
comma list of those; the others stay float. Usage:

  /usr/bin/python3 tools/formats/convert.py SRC_DIR OUT_DIR --format q4 [--block-size 32] [--zero-points]
"""
import argparse
import os
import re
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = 'com.microsoft'
FOLDER_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']


def weight_matmuls(graph, targets):
    """MatMul nodes whose second input is a 2-D float initializer, filtered by --targets."""
    inits = {t.name: t for t in graph.initializer}
    logits_producer = None
    for n in graph.node:
        if 'logits' in n.output:
            logits_producer = n
    out = []
    for n in graph.node:
        if n.op_type != 'MatMul' or n.input[1] not in inits:
            continue
        t = inits[n.input[1]]
        if t.data_type != TensorProto.FLOAT or len(t.dims) != 2:
            continue
        kind = 'lm_head' if n is logits_producer else 'ffn' if re.search(r'down_proj|c_proj|fc_out|dense_4h_to_h', n.name) and 'attn' not in n.name else 'other'
        if 'all' in targets or kind in targets:
            out.append((n, t))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 4-bit blocks


def quantize_nbits(w, block, bits, zero_points):
    """w [K, N] float32 -> codes uint8 [N, blocks, block*bits/8], scales [N*blocks], packed zero points or None."""
    K, N = w.shape
    blocks = -(-K // block)
    wt = np.zeros((N, blocks * block), np.float32)
    wt[:, :K] = w.T
    wt = wt.reshape(N, blocks, block)
    qmax = (1 << bits) - 1
    if zero_points:
        lo = np.minimum(wt.min(axis=2), 0)
        hi = np.maximum(wt.max(axis=2), 0)
        scale = (hi - lo) / qmax
        scale[scale == 0] = 1
        zp = np.clip(np.round(-lo / scale), 0, qmax)
    else:
        # Symmetric: the value of largest magnitude maps to code 0 (−2^(bits−1) around zero point 2^(bits−1)).
        idx = np.abs(wt).argmax(axis=2)
        peak = np.take_along_axis(wt, idx[..., None], axis=2)[..., 0]
        zp = np.full(peak.shape, 1 << (bits - 1), np.float32)
        scale = peak / -(1 << (bits - 1))
        scale[scale == 0] = 1
    q = np.clip(np.round(wt / scale[..., None] + zp[..., None]), 0, qmax).astype(np.uint8)
    per_byte = 8 // bits
    q = q.reshape(N, blocks, block // per_byte, per_byte)
    codes = np.zeros(q.shape[:3], np.uint8)
    for i in range(per_byte):  # low bits first
        codes |= (q[..., i] << (i * bits)).astype(np.uint8)
    packed_zp = None
    if zero_points:
        zrow = -(-blocks * bits // 8)
        padded = np.zeros((N, zrow * per_byte), np.uint8)
        padded[:, :blocks] = zp.astype(np.uint8)
        padded = padded.reshape(N, zrow, per_byte)
        packed_zp = np.zeros((N, zrow), np.uint8)
        for i in range(per_byte):
            packed_zp |= (padded[..., i] << (i * bits)).astype(np.uint8)
        packed_zp = packed_zp.reshape(-1)
    return codes, scale.reshape(-1).astype(np.float32), packed_zp


def to_nbits(model, targets, block, zero_points, scale_type):
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    drop = set()
    for n, t in weight_matmuls(g, targets):
        w = numpy_helper.to_array(t).astype(np.float32)
        K, N = w.shape
        codes, scales, zp = quantize_nbits(w, block, 4, zero_points)
        base = t.name
        new = [numpy_helper.from_array(codes, base + '_Q4'), numpy_helper.from_array(scales.astype(scale_type), base + '_scales')]
        inputs = [n.input[0], base + '_Q4', base + '_scales']
        if zp is not None:
            new.append(numpy_helper.from_array(zp, base + '_zp'))
            inputs.append(base + '_zp')
        g.initializer.extend(new)
        q = helper.make_node('MatMulNBits', inputs, list(n.output), name=n.name + '_Q4', domain=MS,
                             K=K, N=N, bits=4, block_size=block)
        n.CopyFrom(q)
        drop.add(base)
    keep = [t for t in g.initializer if t.name not in drop or any(t.name in m.input for m in g.node)]
    del g.initializer[:]
    g.initializer.extend(keep)
    ensure_ms(model)


def ensure_ms(model):
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))


# ---------------------------------------------------------------------------------------------------------------
# 8-bit dynamic


def quantize_linear(w, signed, per_channel):
    """w [K, N] -> codes, scale (scalar or [N]), zero point (same shape, codes' type)."""
    axis = 0 if per_channel else None
    if signed:
        amax = np.abs(w).max(axis=axis)
        scale = np.where(amax == 0, 1, amax / 127).astype(np.float32)
        zp = np.zeros_like(scale, dtype=np.int8)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    else:
        lo = np.minimum(w.min(axis=axis), 0)
        hi = np.maximum(w.max(axis=axis), 0)
        scale = np.where(hi == lo, 1, (hi - lo) / 255).astype(np.float32)
        zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
        q = np.clip(np.round(w / scale) + zp.astype(np.float32), 0, 255).astype(np.uint8)
    return q, np.asarray(scale, np.float32), np.asarray(zp)


def to_int8(model, targets, signed, per_channel, fused):
    g = model.graph
    nodes = list(g.node)
    quantized = {}  # activation -> (q, scale, zp) tensor names, one DynamicQuantizeLinear per activation
    out_nodes = []
    plan = {id(n): t for n, t in weight_matmuls(g, targets)}
    drop = set()
    for n in nodes:
        t = plan.get(id(n))
        if t is None:
            out_nodes.append(n)
            continue
        a = n.input[0]
        if a not in quantized:
            names = (a + '_quantized', a + '_scale', a + '_zero_point')
            out_nodes.append(helper.make_node('DynamicQuantizeLinear', [a], list(names), name=a + '_QuantizeLinear'))
            quantized[a] = names
        aq, a_scale, a_zp = quantized[a]
        w = numpy_helper.to_array(t).astype(np.float32)
        q, scale, zp = quantize_linear(w, signed, per_channel)
        base = t.name
        g.initializer.extend([numpy_helper.from_array(q, base + '_quantized'), numpy_helper.from_array(scale, base + '_scale'),
                              numpy_helper.from_array(zp, base + '_zero_point')])
        drop.add(base)
        y = n.output[0]
        if fused:
            out_nodes.append(helper.make_node('MatMulIntegerToFloat', [aq, base + '_quantized', a_scale, base + '_scale', a_zp, base + '_zero_point'],
                                              [y], name=n.name + '_quant', domain=MS))
        else:
            out_nodes.append(helper.make_node('MatMulInteger', [aq, base + '_quantized', a_zp, base + '_zero_point'], [y + '_int32'], name=n.name + '_quant'))
            out_nodes.append(helper.make_node('Cast', [y + '_int32'], [y + '_float'], name=n.name + '_cast', to=TensorProto.FLOAT))
            out_nodes.append(helper.make_node('Mul', [a_scale, base + '_scale'], [y + '_scales'], name=n.name + '_scales'))
            out_nodes.append(helper.make_node('Mul', [y + '_float', y + '_scales'], [y], name=n.name + '_scale_mul'))
    del g.node[:]
    g.node.extend(out_nodes)
    keep = [t for t in g.initializer if t.name not in drop or any(t.name in m.input for m in g.node)]
    del g.initializer[:]
    g.initializer.extend(keep)
    if fused:
        ensure_ms(model)


# ---------------------------------------------------------------------------------------------------------------
# fp16


def to_fp16(model, keep_io):
    """Every float initializer, Constant and Cast-to-float in fp16; graph I/O in fp16, or kept fp32 with Casts."""
    g = model.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in g.node:
        if n.op_type == 'Constant':
            for a in n.attribute:
                if a.name == 'value' and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(np.clip(numpy_helper.to_array(a.t), -65504, 65504).astype(np.float16), a.t.name))
        if n.op_type == 'Cast':
            for a in n.attribute:
                if a.name == 'to' and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
    del g.value_info[:]
    front, back = [], []
    for i in g.input:
        if i.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if keep_io:
            inner = i.name + '/fp16'
            for n in g.node:
                for k, x in enumerate(n.input):
                    if x == i.name:
                        n.input[k] = inner
            front.append(helper.make_node('Cast', [i.name], [inner], name=i.name + '/cast_in', to=TensorProto.FLOAT16))
        else:
            i.type.tensor_type.elem_type = TensorProto.FLOAT16
    for o in g.output:
        if o.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if keep_io:
            inner = o.name + '/fp16'
            for n in g.node:
                for k, x in enumerate(n.output):
                    if x == o.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == o.name:
                        n.input[k] = inner
            back.append(helper.make_node('Cast', [inner], [o.name], name=o.name + '/cast_out', to=TensorProto.FLOAT))
        else:
            o.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = front + list(g.node) + back
    del g.node[:]
    g.node.extend(nodes)


# ---------------------------------------------------------------------------------------------------------------


def convert(src_model, fmt, args):
    m = onnx.ModelProto()
    m.CopyFrom(src_model)
    targets = set(args.targets.split(','))
    if fmt == 'q4':
        to_nbits(m, targets, args.block_size, args.zero_points, np.float32)
    elif fmt == 'q4f16':
        to_fp16(m, keep_io=False)
        # The fp16 weights go back to fp32 for quantization: codes from the fp32 source, scales in fp16.
        restore_float_weights(m, src_model, targets)
        to_nbits(m, targets, args.block_size, args.zero_points, np.float16)
    elif fmt in ('int8', 'uint8', 'int8-fused'):
        to_int8(m, targets, signed=fmt != 'uint8', per_channel=args.per_channel, fused=fmt == 'int8-fused')
    elif fmt == 'fp16':
        to_fp16(m, keep_io=False)
    elif fmt == 'fp16-fp32io':
        to_fp16(m, keep_io=True)
    else:
        raise SystemExit(f'unknown format {fmt}')
    onnx.checker.check_model(m)
    return m


def restore_float_weights(m, src, targets):
    """The weight MatMuls' initializers back in fp32 (as in the source), so that to_nbits quantizes fp32 values."""
    src_inits = {t.name: t for t in src.graph.initializer}
    fp32 = {n.input[1] for n, _ in weight_matmuls(src.graph, targets)}
    for t in m.graph.initializer:
        if t.name in fp32:
            t.CopyFrom(src_inits[t.name])


def copy_folder_files(src, out):
    for f in FOLDER_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src')
    p.add_argument('out')
    p.add_argument('--format', required=True,
                   choices=['q4', 'q4f16', 'int8', 'uint8', 'int8-fused', 'fp16', 'fp16-fp32io', 'dtypes'])
    p.add_argument('--block-size', type=int, default=32)
    p.add_argument('--zero-points', action='store_true', help='asymmetric 4-bit blocks with packed uint8 zero points')
    p.add_argument('--per-channel', action='store_true', help='8-bit weights with one scale and zero point per output column')
    p.add_argument('--targets', default='all', help='all | ffn | lm_head | ffn,lm_head')
    args = p.parse_args()
    src = onnx.load(os.path.join(args.src, 'model.onnx'))
    os.makedirs(args.out, exist_ok=True)
    copy_folder_files(args.src, args.out)
    if args.format == 'dtypes':
        os.makedirs(os.path.join(args.out, 'onnx'), exist_ok=True)
        for fmt, name in [('fp16', 'model_fp16'), ('int8', 'model_int8'), ('uint8', 'model_uint8'), ('q4', 'model_q4'), ('q4f16', 'model_q4f16')]:
            m = convert(src, fmt, args)
            path = os.path.join(args.out, 'onnx', name + '.onnx')
            if fmt == 'fp16':
                onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=name + '.onnx_data', size_threshold=1024)
            else:
                onnx.save_model(m, path)
    else:
        onnx.save_model(convert(src, args.format, args), os.path.join(args.out, 'model.onnx'))
    with open(os.path.join(args.out, 'CONVERTED.md'), 'w') as f:
        f.write(f'Converted from {os.path.basename(os.path.abspath(args.src))} by tools/formats/convert.py: '
                f'{" ".join(sys.argv[3:])}\n')


if __name__ == '__main__':
    main()
