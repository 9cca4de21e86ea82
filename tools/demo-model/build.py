"""Builds a demo model folder from scratch: tokenizer, training, evaluation, ONNX export, reference logits, card.

    /usr/bin/python3 tools/demo-model/build.py --arch llama --out models/demo
    /usr/bin/python3 tools/demo-model/build.py --arch gpt2 --out models/demo-gpt2

Deterministic: fixed seeds, a fixed number of steps, one fixed split of the corpus. The tokenizer and the
tokenized corpus are cached in tools/demo-model/.build/ and shared by both architectures.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
try:
    import bpe  # noqa: E402
except ImportError:  # a lent GPU machine without python3-regex: it only trains (--train-only)
    bpe = None
from model import Config, build, empty_past, forward_full  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".build")
VOCAB = 4096
CONTEXT = 256
UNLIKE_ROOT = "/usr/lib/python3/dist-packages"  # Debian's Python packages: code unlike the stdlib

PRESETS = {
    # d, layers, heads, ffn, steps, batch, peak lr
    "llama": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, intermediate_size=512,
                  steps=800, batch=32, lr=3e-3),
    "gpt2": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                 steps=200, batch=32, lr=3e-3),
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def prepare_tokens():
    """Tokenizer + token streams, cached. Returns (tokenizer files dict, encoder, train ids, held-out docs)."""
    os.makedirs(CACHE, exist_ok=True)
    tok_path = os.path.join(CACHE, "tokenizer.json")
    root, train_files, held_files = corpus.load_corpus()
    log(f"corpus {root}: {len(train_files)} train files, {len(held_files)} held-out files")
    if not os.path.exists(tok_path):
        t0 = time.time()
        symbols, merges = bpe.train([t for _, t in train_files], VOCAB)
        with open(tok_path, "w") as f:
            json.dump(bpe.tokenizer_json(symbols, merges), f, ensure_ascii=False)
        log(f"tokenizer trained: {len(symbols)} tokens in {time.time() - t0:.0f}s")
    with open(tok_path) as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    symbols = sorted(vocab, key=vocab.get)
    merges = [tuple(m.split(" ")) for m in tj["model"]["merges"]]
    enc = bpe.Encoder(symbols, merges)
    ids_path = os.path.join(CACHE, "train_ids.npy")
    if not os.path.exists(ids_path):
        t0 = time.time()
        stream = []
        for _, text in train_files:
            stream.extend(enc.encode(text))
            stream.append(0)
        np.save(ids_path, np.array(stream, dtype=np.int16))
        log(f"train corpus tokenized: {len(stream)} tokens in {time.time() - t0:.0f}s")
    train_ids = np.load(ids_path).astype(np.int64)
    return tj, enc, train_ids, held_files, root


def eval_windows(enc, docs, n_windows, seed):
    """Fixed windows of CONTEXT+1 tokens drawn from the given documents."""
    rng = random.Random(seed)
    stream = []
    for _, text in docs:
        stream.extend(enc.encode(text))
        stream.append(0)
    stream = np.array(stream, dtype=np.int64)
    starts = sorted(rng.randrange(0, len(stream) - CONTEXT - 1) for _ in range(n_windows))
    return torch.tensor(np.stack([stream[s:s + CONTEXT + 1] for s in starts]))


@torch.no_grad()
def evaluate(model, windows):
    model.eval()
    loss_sum, correct, top5, count = 0.0, 0, 0, 0
    for i in range(0, len(windows), 8):
        w = windows[i:i + 8]
        logits = forward_full(model, w[:, :-1]).float()
        target = w[:, 1:]
        loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
        top5 += (logits.topk(5, dim=-1).indices == target.unsqueeze(-1)).any(-1).sum().item()
        count += target.numel()
    model.train()
    return {"loss": loss_sum / count, "top1": correct / count, "top5": top5 / count, "tokens": count}


def unlike_docs(limit_bytes=3_000_000):
    files = []
    if os.path.isdir(UNLIKE_ROOT):
        for dirpath, dirnames, filenames in os.walk(UNLIKE_ROOT):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".py"):
                    files.append(os.path.join(dirpath, name))
    rng = random.Random(7)
    rng.shuffle(files)
    docs, size = [], 0
    for path in files:
        text = corpus.read_text(path)
        if text and size < limit_bytes:
            docs.append((path, text))
            size += len(text)
    return docs


def train(model, train_ids, steps, batch, lr, device="cpu"):
    torch.manual_seed(0)
    model.to(device)
    rng = np.random.default_rng(0)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    t0 = time.time()
    for step in range(steps):
        frac = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * frac) if step >= warmup else lr * frac
        starts = rng.integers(0, len(train_ids) - CONTEXT - 1, size=batch)
        w = torch.from_numpy(np.stack([train_ids[s:s + CONTEXT + 1] for s in starts])).to(device)
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = forward_full(model, w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t0
            tps = (step + 1) * batch * CONTEXT / max(el, 1e-9)
            log(f"step {step}/{steps} loss {loss.item():.3f} {tps:.0f} tok/s, eta {(steps - step - 1) * el / (step + 1) / 60:.1f} min")
    return time.time() - t0


def hf_config(cfg):
    if cfg.arch == "llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
                "num_key_value_heads": cfg.num_attention_heads, "head_dim": cfg.head_dim,
                "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.norm_eps,
                "rope_theta": cfg.rope_theta, "hidden_act": "silu", "tie_word_embeddings": False,
                "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "torch_dtype": "float32",
                "use_cache": True}
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
            "n_embd": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "n_head": cfg.num_attention_heads,
            "n_inner": cfg.intermediate_size, "n_positions": cfg.max_position_embeddings,
            "n_ctx": cfg.max_position_embeddings, "activation_function": "gelu_new",
            "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": True,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "torch_dtype": "float32",
            "use_cache": True}


def export_onnx(model, cfg, path):
    model.eval()
    b, t, p = 2, 5, 3
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).unsqueeze(0).expand(b, t).contiguous()
    past = [(torch.randn(b, cfg.num_attention_heads, p, cfg.head_dim),
             torch.randn(b, cfg.num_attention_heads, p, cfg.head_dim)) for _ in range(cfg.num_hidden_layers)]
    n = cfg.num_hidden_layers
    past_names = [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for name in past_names:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in present_names:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}

    # Export the model itself (not the wrapper) so node names start at the model's own modules.
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask, pos, past), path, input_names=["input_ids", "attention_mask",
                          "position_ids"] + past_names, output_names=["logits"] + present_names,
                          dynamic_axes=axes, opset_version=14, do_constant_folding=True)


@torch.no_grad()
def greedy_line(model, enc, prompt_ids, max_new=48):
    ids = list(prompt_ids[-(CONTEXT - max_new):])
    out = []
    for _ in range(max_new):
        logits = forward_full(model, torch.tensor([ids]))[0, -1]
        nxt = int(logits.argmax())
        if nxt == 0:
            break
        out.append(nxt)
        ids.append(nxt)
        if "\n" in enc.decode(out):
            break
    return enc.decode(out).split("\n")[0]


def sample_completions(model, enc, held_files, n=10):
    rng = random.Random(11)
    samples = []
    files = sorted(held_files)
    while len(samples) < n:
        rel, text = files[rng.randrange(len(files))]
        lines = text.split("\n")
        if len(lines) < 20:
            continue
        k = rng.randrange(10, len(lines) - 1)
        if not lines[k].strip():
            continue
        prefix = "\n".join(lines[:k]) + "\n"
        got = greedy_line(model, enc, enc.encode(prefix))
        samples.append({"file": rel, "line": k + 1, "context": lines[k - 1], "true": lines[k], "model": got})
    return samples


@torch.no_grad()
def reference_logits(model, enc):
    texts = ["import os\nimport sys\n\ndef main(", "    for i in range(len(", "class Foo(object):\n    def __init__(self"]
    out = []
    for text in texts:
        ids = enc.encode(text)
        logits = forward_full(model, torch.tensor([ids]))[0]
        out.append({"text": text, "input_ids": ids,
                    "argmax": logits.argmax(-1).tolist(),
                    "last_logits": [round(float(x), 6) for x in logits[-1]]})
    return {"note": "PyTorch fp32 logits at export; positions 0..T-1, no past, no padding", "inputs": out}


def model_card(args, cfg, n_params, stats):
    s = stats
    lines = [
        f"# {os.path.basename(args.out)}: a {cfg.arch.upper()}-style code model built by neuronpatch",
        "",
        "Written by `tools/demo-model/build.py`; do not edit by hand.",
        "",
        "## Data",
        f"- The Python standard library of `{s['corpus_root']}` (modules and tests, `site-packages` and "
        "`dist-packages` excluded), split by a hash of each file's path: a fixed tenth is held out.",
        f"- Training: {s['train_files']} files, {s['train_tokens']:,} tokens. Held out: {s['held_files']} files.",
        f"- Tokenizer: byte-level BPE, {cfg.vocab_size} tokens, trained on the training files (`tokenizer.json`).",
        "",
        "## Model",
        f"- {hf_config(cfg)['architectures'][0]}-style: {cfg.num_hidden_layers} layers, residual width "
        f"{cfg.hidden_size}, FFN width {cfg.intermediate_size}, {cfg.num_attention_heads} heads, context "
        f"{cfg.max_position_embeddings}; {n_params:,} parameters; fp32 ONNX (opset 14) with a KV cache.",
        f"- Training: {args.steps} steps of {args.batch} x {CONTEXT} tokens ({args.steps * args.batch * CONTEXT:,} "
        f"tokens), AdamW, bf16 autocast; {s['train_seconds'] / 60:.1f} minutes on {s['trained_on']}.",
        "",
        "## Held-out quality (next token, teacher forced)",
        "| data | loss (nats/token) | top-1 | top-5 | tokens |",
        "|---|---|---|---|---|",
    ]
    for name, key in (("held-out tenth of the stdlib", "held_out"), ("unlike code (Debian dist-packages)", "unlike")):
        if key in s:
            e = s[key]
            lines.append(f"| {name} | {e['loss']:.3f} | {e['top1'] * 100:.1f} % | {e['top5'] * 100:.1f} % | {e['tokens']:,} |")
    lines += ["", "## Ten greedy line completions on held-out files (plain greedy, no token healing)", ""]
    for smp in s["samples"]:
        mark = "same" if smp["model"] == smp["true"] else "differs"
        lines.append(f"- `{smp['file']}:{smp['line']}` ({mark})")
        lines.append(f"  - after: `{smp['context']}`")
        lines.append(f"  - true:  `{smp['true']}`")
        lines.append(f"  - model: `{smp['model']}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=list(PRESETS), default="llama")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu (the documented rebuild) or cuda")
    ap.add_argument("--train-only", metavar="NPZ",
                    help="train, then save the weights and training facts to NPZ and stop (for a lent GPU)")
    ap.add_argument("--from-weights", metavar="NPZ",
                    help="skip training: evaluate, export and describe the weights a --train-only run saved")
    ap.add_argument("--export-only", action="store_true",
                    help="re-export model.onnx from the weights saved in .build/ by an earlier full run")
    args = ap.parse_args()
    preset = dict(PRESETS[args.arch])
    args.steps = args.steps or preset.pop("steps")
    args.batch = args.batch or preset.pop("batch")
    preset.pop("steps", None)
    preset.pop("batch", None)
    lr = preset.pop("lr")
    torch.set_num_threads(args.threads)
    random.seed(0)

    if args.train_only and os.path.exists(os.path.join(CACHE, "train_ids.npy")):
        # On a lent machine the corpus is not there: the tokenized training stream travels in .build/.
        with open(os.path.join(CACHE, "tokenizer.json")) as f:
            tj = json.load(f)
        train_ids = np.load(os.path.join(CACHE, "train_ids.npy")).astype(np.int64)
    else:
        tj, enc, train_ids, held_files, root = prepare_tokens()
    cfg = Config(arch=args.arch, vocab_size=len(tj["model"]["vocab"]), max_position_embeddings=CONTEXT, **preset)
    model = build(cfg)
    if args.export_only:
        model.load_state_dict(torch.load(os.path.join(CACHE, f"{args.arch}.pt")))
        export_onnx(model, cfg, os.path.join(args.out, "model.onnx"))
        log(f"re-exported {args.out}/model.onnx")
        return
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    log(f"{args.arch}: {n_params:,} parameters, {args.steps} steps x {args.batch} x {CONTEXT}")
    trained_on = f"{args.device}, {torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    if args.from_weights:
        saved = np.load(args.from_weights)
        model.load_state_dict({k: torch.from_numpy(saved[k]) for k in model.state_dict()})
        secs, trained_on = float(saved["__train_seconds"]), str(saved["__trained_on"])
        log(f"weights from {args.from_weights}: trained {secs / 60:.1f} min on {trained_on}")
    else:
        secs = train(model, train_ids, args.steps, args.batch, lr, args.device)
        model.to("cpu")
    if args.train_only:
        arrays = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
        np.savez(args.train_only, __train_seconds=np.array(secs), __trained_on=np.array(trained_on
                 + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")), **arrays)
        log(f"saved {args.train_only}")
        return

    stats = {"corpus_root": root, "train_files": None, "train_tokens": int(len(train_ids)),
             "held_files": len(held_files), "train_seconds": secs, "trained_on": trained_on}
    stats["train_files"] = len(corpus.load_corpus(root)[1])
    stats["held_out"] = evaluate(model, eval_windows(enc, held_files, 96, seed=1))
    unlike = unlike_docs()
    if unlike:
        stats["unlike"] = evaluate(model, eval_windows(enc, unlike, 96, seed=2))
    log("held-out", stats["held_out"], "unlike", stats.get("unlike"))
    stats["samples"] = sample_completions(model, enc, held_files)

    os.makedirs(args.out, exist_ok=True)
    export_onnx(model, cfg, os.path.join(args.out, "model.onnx"))
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(bpe.tokenizer_config_json(CONTEXT), f, indent=2)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}, f, indent=2)
    with open(os.path.join(args.out, "reference_logits.json"), "w") as f:
        json.dump(reference_logits(model, enc), f)
    with open(os.path.join(args.out, "MODEL_CARD.md"), "w") as f:
        f.write(model_card(args, cfg, n_params, stats))
    torch.save(model.state_dict(), os.path.join(CACHE, f"{args.arch}.pt"))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
