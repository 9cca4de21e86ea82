"""Random-weight stand-ins of real code models, with their exact shapes, in the layout public exports use.

    /usr/bin/python3 tools/scale/build.py --size 0.5b --dtypes fp32,fp16,q4 [--out DIR]

Writes DIR/qwen2.5-coder-<size>/ (default DIR: $NEURONPATCH_CACHE/scale, else ~/.cache/neuronpatch/scale):

    config.json  generation_config.json  tokenizer.json  tokenizer_config.json  STANDIN.md
    onnx/model.onnx       + model.onnx_data        (fp32)
    onnx/model_fp16.onnx  + model_fp16.onnx_data   (fp16 weights, activations, KV cache and logits)
    onnx/model_q4.onnx    + model_q4.onnx_data     (every linear layer and the lm_head as com.microsoft
                                                    MatMulNBits, 4 bits, block 32, with zero points; fp32 elsewhere)

The graph is Qwen2ForCausalLM as Optimum exports it (node names are the module paths: `/model/layers.N/mlp/
down_proj/MatMul`), with Optimum's KV-cache interface (`past_key_values.N.key/value` → `present.N.key/value`),
written op by op with onnx.helper: no torch, so that a 1.5B model is built one tensor at a time and never held in
memory whole (peak: the largest tensor, the embedding, about 0.9 GB at 1.5B fp32). Weights are random (normal,
std 0.02; norms 1): these models show what loading, decoding, tracing and repairing COST at the real size, never
repair quality. The same seeds give the same weights in every dtype (q4 is the quantization of the fp32 weights).

The tokenizer is the embedded demo model's byte-level BPE (4096 ids, which fit the 151,936-token vocabulary);
ids the model produces beyond it decode to nothing.

MatMulNBits (onnxruntime contrib op spec): A [M, K] × dequant(B) with B [N, K/32, 16] uint8, two 4-bit codes per
byte, the lower nibble first; scales [N · K/32]; zero_points [N · ceil(K/32 / 2)] uint8, packed the same way;
weight = (code − zero_point) · scale.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The exact configurations (config.json of Qwen/Qwen2.5-Coder-0.5B and -1.5B).
CONFIGS = {
    "0.5b": dict(name="Qwen2.5-Coder-0.5B", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768),
    "1.5b": dict(name="Qwen2.5-Coder-1.5B", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768),
    # Not a real model: the same graph at toy size, for checking the builder in seconds.
    "tiny": dict(name="tiny Qwen2 stand-in", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
}
VOCAB = 151936
ROPE_THETA = 1000000.0
RMS_EPS = 1e-6
# <|endoftext|> of the stand-in tokenizer (the demo BPE's id 0): the engine checks that config's ids are tokens of
# tokenizer.json (Qwen's own id, 151643, is not one of the demo BPE's).
BOS = EOS = 0
OPSET = 17
BLOCK = 32
STD = 0.02


class DataFile:
    """Appends tensors to one external data file and returns initializers that point into it."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.f = open(path, "wb")
        self.offset = 0

    def add(self, name, array, data_type):
        buf = np.ascontiguousarray(array).tobytes()
        pad = (-self.offset) % 64  # aligned like onnx's own external-data writer (mmap-friendly)
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        self.f.write(buf)
        t = TensorProto()
        t.name = name
        t.data_type = data_type
        t.dims.extend(array.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.name), ("offset", str(self.offset)), ("length", str(len(buf)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.offset += len(buf)
        return t

    def close(self):
        self.f.close()


def seeded(name, shape, std=STD):
    """The same tensor for a name in every dtype: a normal draw seeded by the name's hash."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def quantize_q4(w):
    """w [K, N] (input × output) → MatMulNBits B [N, K/32, 16] uint8, scales [N·K/32], zero_points, asymmetric."""
    k, n = w.shape
    assert k % BLOCK == 0, f"K={k} is not a multiple of the block size {BLOCK}"
    nb = k // BLOCK
    blocks = w.T.reshape(n, nb, BLOCK)
    lo = np.minimum(blocks.min(axis=2), 0)
    hi = np.maximum(blocks.max(axis=2), 0)
    scale = (hi - lo) / 15
    scale[scale == 0] = 1
    zp = np.clip(np.round(-lo / scale), 0, 15).astype(np.uint8)
    q = np.clip(np.round(blocks / scale[:, :, None]) + zp[:, :, None], 0, 15).astype(np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    zpad = zp if nb % 2 == 0 else np.concatenate([zp, np.zeros((n, 1), np.uint8)], axis=1)
    zpacked = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    return packed, scale.astype(np.float32).reshape(-1), zpacked


class Builder:
    def __init__(self, cfg, dtype, data):
        self.cfg = cfg
        self.dtype = dtype  # 'fp32' | 'fp16' | 'q4'
        self.data = data
        self.nodes = []
        self.inits = []
        self.small = 0
        self.ftype = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
        self.np_f = np.float16 if dtype == "fp16" else np.float32

    # ---- helpers -----------------------------------------------------------------------------------------------
    def const(self, value, dtype=np.int64):
        name = f"/const_{self.small}"
        self.small += 1
        self.inits.append(onnx.numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def fconst(self, value):
        return self.const(value, self.np_f)

    def node(self, op, inputs, name, n_out=1, domain=None, **attrs):
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, name, shape, std=STD, ones=False):
        w = np.ones(shape, np.float32) if ones else seeded(name, shape, std)
        if self.dtype == "fp16":
            self.inits.append(self.data.add(name, w.astype(np.float16), TensorProto.FLOAT16))
        else:
            self.inits.append(self.data.add(name, w, TensorProto.FLOAT))
        return name

    def linear(self, prefix, x, k, n, bias=False):
        """x [b, t, k] → [b, t, n]: MatMul by W [k, n] (MatMulNBits for q4), plus a bias."""
        wname = f"{prefix}.weight"
        if self.dtype == "q4":
            packed, scales, zps = quantize_q4(seeded(wname, (k, n)))
            self.inits.append(self.data.add(f"{wname}_Q4", packed, TensorProto.UINT8))
            self.inits.append(self.data.add(f"{wname}_scales", scales, TensorProto.FLOAT))
            self.inits.append(self.data.add(f"{wname}_zp", zps, TensorProto.UINT8))
            y = self.node("MatMulNBits", [x, f"{wname}_Q4", f"{wname}_scales", f"{wname}_zp"],
                          f"/{prefix.replace('.', '/').replace('/layers/', '/layers.')}/MatMulNBits",
                          domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK)
        else:
            # Optimum's exports store linear weights transposed, [in, out], under generic names.
            self.weight(wname, (k, n))
            y = self.node("MatMul", [x, wname], f"/{prefix.replace('.', '/').replace('/layers/', '/layers.')}/MatMul")
        if bias:
            b = self.weight(f"{prefix}.bias", (n,))
            y = self.node("Add", [y, b], f"/{prefix.replace('.', '/').replace('/layers/', '/layers.')}/Add")
        return y

    def rms_norm(self, prefix, x, d):
        p = f"/{prefix}"
        sq = self.node("Pow", [x, self.fconst(2.0)], f"{p}/Pow")
        mean = self.node("ReduceMean", [sq], f"{p}/ReduceMean", axes=[-1], keepdims=1)
        var = self.node("Add", [mean, self.fconst(RMS_EPS)], f"{p}/Add")
        rms = self.node("Sqrt", [var], f"{p}/Sqrt")
        inv = self.node("Reciprocal", [rms], f"{p}/Reciprocal")
        xn = self.node("Mul", [x, inv], f"{p}/Mul")
        g = self.weight(f"{prefix.replace('/', '.').replace('.layers.', '.layers.')}.weight", (d,), ones=True)
        return self.node("Mul", [g, xn], f"{p}/Mul_1")

    # ---- the model ---------------------------------------------------------------------------------------------
    def build(self):
        c = self.cfg
        d, m, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
        H, KV = c["num_attention_heads"], c["num_key_value_heads"]
        hd = d // H
        rep = H // KV
        ft = self.ftype
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        ]
        outputs = [helper.make_tensor_value_info("logits", ft, ["batch_size", "sequence_length", VOCAB])]
        for i in range(L):
            for kv in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", ft, ["batch_size", KV, "past_sequence_length", hd]))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", ft, ["batch_size", KV, "total_sequence_length", hd]))

        # Embedding (kept in float for q4, as the public q4 exports do).
        emb_name = "model.embed_tokens.weight"
        emb = seeded(emb_name, (VOCAB, d))
        self.inits.append(self.data.add(emb_name, emb.astype(np.float16) if self.dtype == "fp16" else emb,
                                        TensorProto.FLOAT16 if self.dtype == "fp16" else TensorProto.FLOAT))
        x = self.node("Gather", [emb_name, "input_ids"], "/model/embed_tokens/Gather")

        # Rotary tables [b, 1, t, hd] from position_ids.
        inv_freq = (1.0 / (ROPE_THETA ** (np.arange(0, hd, 2, dtype=np.float32) / hd))).astype(np.float32)
        pos = self.node("Cast", [self.node("Unsqueeze", ["position_ids", self.const([2])], "/model/rotary_emb/Unsqueeze")],
                        "/model/rotary_emb/Cast", to=TensorProto.FLOAT)
        freqs = self.node("Mul", [pos, self.const(inv_freq, np.float32)], "/model/rotary_emb/Mul")
        emb2 = self.node("Concat", [freqs, freqs], "/model/rotary_emb/Concat", axis=-1)
        cos = self.node("Cos", [emb2], "/model/rotary_emb/Cos")
        sin = self.node("Sin", [emb2], "/model/rotary_emb/Sin")
        if self.dtype == "fp16":
            cos = self.node("Cast", [cos], "/model/rotary_emb/Cast_1", to=ft)
            sin = self.node("Cast", [sin], "/model/rotary_emb/Cast_2", to=ft)
        cos = self.node("Unsqueeze", [cos, self.const([1])], "/model/rotary_emb/Unsqueeze_1")
        sin = self.node("Unsqueeze", [sin, self.const([1])], "/model/rotary_emb/Unsqueeze_2")

        # Additive mask [b, 1, 1, t, T]: causal over the cache and the new positions, padding from attention_mask.
        T = self.node("Gather", [self.node("Shape", ["attention_mask"], "/model/mask/Shape"), self.const(1)], "/model/mask/Gather")
        t = self.node("Gather", [self.node("Shape", ["input_ids"], "/model/mask/Shape_1"), self.const(1)], "/model/mask/Gather_1")
        past = self.node("Sub", [T, t], "/model/mask/Sub")
        rows = self.node("Unsqueeze", [self.node("Range", [past, T, self.const(1)], "/model/mask/Range"), self.const([1])], "/model/mask/Unsqueeze")
        cols = self.node("Range", [self.const(0), T, self.const(1)], "/model/mask/Range_1")
        causal = self.node("LessOrEqual", [cols, rows], "/model/mask/LessOrEqual")
        pad = self.node("Unsqueeze", [self.node("Cast", ["attention_mask"], "/model/mask/Cast", to=TensorProto.BOOL), self.const([1, 2, 3])], "/model/mask/Unsqueeze_1")
        allowed = self.node("And", [causal, pad], "/model/mask/And")
        neg = float(np.finfo(self.np_f).min)
        bias = self.node("Where", [allowed, self.fconst(0.0), self.fconst(neg)], "/model/mask/Where")

        for i in range(L):
            p = f"model.layers.{i}"
            P = f"/model/layers.{i}"
            h = self.rms_norm(f"model/layers.{i}/input_layernorm", x, d)
            q = self.linear(f"{p}.self_attn.q_proj", h, d, H * hd, bias=True)
            k = self.linear(f"{p}.self_attn.k_proj", h, d, KV * hd, bias=True)
            v = self.linear(f"{p}.self_attn.v_proj", h, d, KV * hd, bias=True)
            q = self.node("Transpose", [self.node("Reshape", [q, self.const([0, 0, H, hd])], f"{P}/self_attn/Reshape")], f"{P}/self_attn/Transpose", perm=[0, 2, 1, 3])
            k = self.node("Transpose", [self.node("Reshape", [k, self.const([0, 0, KV, hd])], f"{P}/self_attn/Reshape_1")], f"{P}/self_attn/Transpose_1", perm=[0, 2, 1, 3])
            v = self.node("Transpose", [self.node("Reshape", [v, self.const([0, 0, KV, hd])], f"{P}/self_attn/Reshape_2")], f"{P}/self_attn/Transpose_2", perm=[0, 2, 1, 3])

            def rope(z, tag):
                half = hd // 2
                z1 = self.node("Slice", [z, self.const([0]), self.const([half]), self.const([3])], f"{P}/self_attn/Slice_{tag}1")
                z2 = self.node("Slice", [z, self.const([half]), self.const([hd]), self.const([3])], f"{P}/self_attn/Slice_{tag}2")
                rot = self.node("Concat", [self.node("Neg", [z2], f"{P}/self_attn/Neg_{tag}"), z1], f"{P}/self_attn/rotary/Concat_{tag}", axis=-1)
                a = self.node("Mul", [z, cos], f"{P}/self_attn/Mul_{tag}1")
                b = self.node("Mul", [rot, sin], f"{P}/self_attn/Mul_{tag}2")
                return self.node("Add", [a, b], f"{P}/self_attn/Add_{tag}")

            q, k = rope(q, "q"), rope(k, "k")
            k = self.node("Concat", [f"past_key_values.{i}.key", k], f"{P}/self_attn/Concat_past_k", axis=2)
            v = self.node("Concat", [f"past_key_values.{i}.value", v], f"{P}/self_attn/Concat_past_v", axis=2)
            self.nodes.append(helper.make_node("Identity", [k], [f"present.{i}.key"], name=f"{P}/self_attn/present_key"))
            self.nodes.append(helper.make_node("Identity", [v], [f"present.{i}.value"], name=f"{P}/self_attn/present_value"))
            # Grouped-query attention by broadcasting: q [b, KV, rep, t, hd] against k, v [b, KV, 1, T, hd].
            q5 = self.node("Reshape", [q, self.const([0, KV, rep, -1, hd])], f"{P}/self_attn/Reshape_3")
            k5 = self.node("Unsqueeze", [k, self.const([2])], f"{P}/self_attn/Unsqueeze_k")
            v5 = self.node("Unsqueeze", [v, self.const([2])], f"{P}/self_attn/Unsqueeze_v")
            kt = self.node("Transpose", [k5], f"{P}/self_attn/Transpose_3", perm=[0, 1, 2, 4, 3])
            s = self.node("MatMul", [q5, kt], f"{P}/self_attn/MatMul")
            s = self.node("Mul", [s, self.fconst(1.0 / np.sqrt(hd))], f"{P}/self_attn/Mul")
            s = self.node("Add", [s, bias], f"{P}/self_attn/Add")
            a = self.node("Softmax", [s], f"{P}/self_attn/Softmax", axis=-1)
            o = self.node("MatMul", [a, v5], f"{P}/self_attn/MatMul_1")
            o = self.node("Reshape", [o, self.const([0, H, -1, hd])], f"{P}/self_attn/Reshape_4")
            o = self.node("Transpose", [o], f"{P}/self_attn/Transpose_4", perm=[0, 2, 1, 3])
            o = self.node("Reshape", [o, self.const([0, 0, H * hd])], f"{P}/self_attn/Reshape_5")
            o = self.linear(f"{p}.self_attn.o_proj", o, H * hd, d)
            x = self.node("Add", [x, o], f"{P}/Add")
            h = self.rms_norm(f"model/layers.{i}/post_attention_layernorm", x, d)
            gate = self.linear(f"{p}.mlp.gate_proj", h, d, m)
            up = self.linear(f"{p}.mlp.up_proj", h, d, m)
            act = self.node("Mul", [gate, self.node("Sigmoid", [gate], f"{P}/mlp/act_fn/Sigmoid")], f"{P}/mlp/act_fn/Mul")
            z = self.node("Mul", [act, up], f"{P}/mlp/Mul")
            y = self.linear(f"{p}.mlp.down_proj", z, m, d)
            x = self.node("Add", [x, y], f"{P}/Add_1")
            print(f"  layer {i + 1}/{L}", end="\r", file=sys.stderr, flush=True)

        h = self.rms_norm("model/norm", x, d)
        # Tied embeddings, stored twice as exports do: the lm_head reads its own [d, V] copy.
        if self.dtype == "q4":
            packed, scales, zps = quantize_q4(emb.T)
            self.inits.append(self.data.add("lm_head.weight_Q4", packed, TensorProto.UINT8))
            self.inits.append(self.data.add("lm_head.weight_scales", scales, TensorProto.FLOAT))
            self.inits.append(self.data.add("lm_head.weight_zp", zps, TensorProto.UINT8))
            logits_in = [h, "lm_head.weight_Q4", "lm_head.weight_scales", "lm_head.weight_zp"]
            self.nodes.append(helper.make_node("MatMulNBits", logits_in, ["logits"], name="/lm_head/MatMulNBits",
                                               domain="com.microsoft", K=d, N=VOCAB, bits=4, block_size=BLOCK))
        else:
            wt = np.ascontiguousarray(emb.T)
            self.inits.append(self.data.add("onnx::MatMul_lm_head", wt.astype(np.float16) if self.dtype == "fp16" else wt,
                                            self.ftype))
            self.nodes.append(helper.make_node("MatMul", [h, "onnx::MatMul_lm_head"], ["logits"], name="/lm_head/MatMul"))
        del emb
        graph = helper.make_graph(self.nodes, "main_graph", inputs, outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.dtype == "q4":
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="neuronpatch tools/scale")
        model.ir_version = 8
        return model


FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "q4": "model_q4.onnx"}


def write_folder(size, out_root, dtypes):
    cfg = CONFIGS[size]
    folder = os.path.join(out_root, f"qwen2.5-coder-{size}")
    os.makedirs(os.path.join(folder, "onnx"), exist_ok=True)
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    config = {
        "_name_or_path": f"{cfg['name']} (random-weight stand-in)",
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": cfg["hidden_size"], "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_hidden_layers"], "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"], "head_dim": hd, "vocab_size": VOCAB,
        "max_position_embeddings": cfg["max_position_embeddings"], "rope_theta": ROPE_THETA, "rms_norm_eps": RMS_EPS,
        "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": BOS, "eos_token_id": EOS,
        "torch_dtype": "bfloat16", "use_cache": True,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": BOS, "eos_token_id": EOS}, f, indent=2)
    demo = os.path.join(ROOT, "models", "demo")
    shutil.copyfile(os.path.join(demo, "tokenizer.json"), os.path.join(folder, "tokenizer.json"))
    # The demo tokenizer's config, with the stand-in's context: transformers.js truncates prompts to model_max_length.
    with open(os.path.join(demo, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    tok_config["model_max_length"] = cfg["max_position_embeddings"]
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
    with open(os.path.join(folder, "STANDIN.md"), "w") as f:
        f.write(f"# {cfg['name']} stand-in (random weights)\n\nBuilt by `tools/scale/build.py`: the exact shapes of "
                f"{cfg['name']} with random weights. It shows what loading, decoding, tracing and repairing cost at this size, "
                "never repair quality. Tokenizer: the demo model's byte-level BPE (4096 ids).\n")
    for dt in dtypes:
        onnx_path = os.path.join(folder, "onnx", FILES[dt])
        if os.path.exists(onnx_path) and os.path.exists(onnx_path + "_data"):
            print(f"{onnx_path} exists", file=sys.stderr)
            continue
        started = time.time()
        tmp = onnx_path + ".tmp"
        data = DataFile(onnx_path + "_data.tmp")
        data.name = os.path.basename(onnx_path) + "_data"
        model = Builder(cfg, dt, data).build()
        data.close()
        onnx.save_model(model, tmp)
        os.replace(onnx_path + "_data.tmp", onnx_path + "_data")
        os.replace(tmp, onnx_path)
        gb = os.path.getsize(onnx_path + "_data") / 2**30
        print(f"{onnx_path}: {gb:.2f} GiB of weights, {time.time() - started:.0f} s", file=sys.stderr)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--dtypes", default="fp32,fp16,q4")
    cache = os.environ.get("NEURONPATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "neuronpatch")
    ap.add_argument("--out", default=os.path.join(cache, "scale"))
    a = ap.parse_args()
    dtypes = [d for d in a.dtypes.split(",") if d]
    for d in dtypes:
        if d not in FILES:
            ap.error(f"unknown dtype {d!r}: use fp32, fp16 or q4")
    print(write_folder(a.size, a.out, dtypes))


if __name__ == "__main__":
    main()
