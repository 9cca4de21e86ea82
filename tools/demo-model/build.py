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
import subprocess
import sys
import time

# One BLAS thread: on a 2-core machine shared with other work, 2 torch threads and OpenBLAS threads waiting on
# each other were 6x slower than 1 (measured: 192 vs 1267 tokens/s, load average 21).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
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
CONTEXT = 1024  # the exported model's window (max_position_embeddings); training reaches it at the end
SHORT_CONTEXT = 256  # the window of most training steps (see train)

PRESETS = {
    # d, layers, heads, ffn; steps (an upper bound where minutes is set), tokens a step, peak lr, time budget
    "llama": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, intermediate_size=512,
                  steps=100_000, batch_tokens=4096, lr=3e-3, minutes=75),
    "gpt2": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                 steps=100_000, batch_tokens=4096, lr=3e-3, minutes=30),
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def prepare_tokens():
    """Tokenizer + token streams, cached. Returns (tokenizer files dict, encoder, train ids, held-out docs)."""
    os.makedirs(CACHE, exist_ok=True)
    tok_path = os.path.join(CACHE, "tokenizer.json")
    root, train_files, held_files, _facts = corpus.load_training()
    log(f"corpus {root} + Debian packages: {len(train_files)} train files, {len(held_files)} held-out stdlib files")
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


def eval_windows(enc, docs, n_windows, seed, length=CONTEXT):
    """Fixed windows [n_windows, length + 1] of token ids drawn from the given documents."""
    rng = random.Random(seed)
    stream = []
    for _, text in docs:
        stream.extend(enc.encode(text))
        stream.append(0)
    stream = np.array(stream, dtype=np.int64)
    starts = sorted(rng.randrange(0, len(stream) - length - 1) for _ in range(n_windows))
    return torch.tensor(np.stack([stream[s:s + length + 1] for s in starts]))


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
    """Up to limit_bytes of pip, setuptools and wheel (corpus.UNLIKE_PACKAGES, never trained on), files in a seeded
    order: code unlike the training corpus."""
    docs = sorted(corpus.unlike_files())
    random.Random(7).shuffle(docs)
    out, size = [], 0
    for path, text in docs:
        if size < limit_bytes:
            out.append((path, text))
            size += len(text)
    return out


def weights_from_onnx(model, path):
    """Loads an exported model.onnx of the same shape back into `model` (to continue training a demo model): named
    initializers by name, linear weights through the MatMul node that consumes them (exported transposed under
    generic names). Raises ValueError naming any parameter the file does not hold."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    state = model.state_dict()
    got = {k: torch.from_numpy(inits[k].copy()) for k in state if k in inits}
    for node in m.graph.node:
        if node.op_type == "MatMul" and node.name.endswith("/MatMul"):
            key = node.name.strip("/")[:-len("/MatMul")].replace("/", ".") + ".weight"
            w = [x for x in node.input if x in inits]
            if key in state and w:
                got[key] = torch.from_numpy(inits[w[0]].T.copy())
    missing = [k for k in state if k not in got or tuple(got[k].shape) != tuple(state[k].shape)]
    if missing:
        raise ValueError(f"{path} does not hold {missing[:4]} in this model's shapes: --init-from needs a demo model "
                         "of the same size")
    model.load_state_dict(got)


def lr_at(progress, step, lr, warmup_steps):
    """Learning rate at a point of training: linear warm-up over the first steps, then a cosine from lr to lr/10
    over progress (0..1, the share of the step or time budget spent)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(model, train_ids, steps, batch_tokens, lr, device="cpu", minutes=None, long_fraction=0.25,
          short_context=256, checkpoint=None, checkpoint_minutes=5.0, probe=None, warmup_steps=None):
    """Trains in place; returns (seconds, steps done, tokens seen).

    Each step is batch_tokens tokens: batch_tokens // short_context windows of short_context + 1 tokens until
    progress reaches 1 - long_fraction, then windows of the full CONTEXT (the model learns the far positions at
    the end, where a step costs the most: attention is quadratic in the window). progress is step / steps, or,
    with a time budget (minutes), the larger of that and the share of the budget spent, so training stops and
    the schedule ends on time whatever the machine's load. A checkpoint (model, optimizer, step, clock) is
    written every checkpoint_minutes and read back if present, so a killed run resumes where it stopped.
    probe: held-out windows [n, short_context + 1] scored at each checkpoint (logged only). warmup_steps: linear
    warm-up (default 100 steps with a time budget, a twentieth of the steps without).
    """
    torch.manual_seed(0)
    model.to(device)
    rng = np.random.default_rng(0)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = warmup_steps or (100 if minutes else max(1, steps // 20))
    step, spent, tokens = 0, 0.0, 0
    if checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent, tokens = state["step"], state["seconds"], state["tokens"]
        rng = np.random.default_rng(step)
        log(f"resumed from {checkpoint}: step {step}, {spent / 60:.1f} min, {tokens:,} tokens")
    t0 = time.time() - spent
    last_ckpt = time.time()
    smooth = None

    def progress():
        p = step / steps
        return max(p, (time.time() - t0) / (minutes * 60)) if minutes else p

    while progress() < 1:
        p = progress()
        context = short_context if p < 1 - long_fraction else CONTEXT
        rows = max(1, batch_tokens // context)
        for g in opt.param_groups:
            g["lr"] = lr_at(p, step, lr, warmup)
        starts = rng.integers(0, len(train_ids) - context - 1, size=rows)
        w = torch.from_numpy(np.stack([train_ids[s:s + context + 1] for s in starts])).to(device)
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = forward_full(model, w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += rows * context
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if step % 50 == 0:
            el = time.time() - t0
            log(f"step {step} T={context} loss {smooth:.3f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{tokens / el:.0f} tok/s, {tokens:,} tokens, {el / 60:.1f} min, progress {progress() * 100:.1f} %")
        if checkpoint and (time.time() - last_ckpt > checkpoint_minutes * 60 or progress() >= 1):
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "seconds": time.time() - t0, "tokens": tokens}, checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)
            last_ckpt = time.time()
            if probe is not None:
                e = evaluate(model, probe)
                log(f"checkpoint step {step}: probe loss {e['loss']:.3f} top-1 {e['top1'] * 100:.1f} %")
    return time.time() - t0, step, tokens


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


def engine_eval(out_dir, lines=200):
    """The engine's own figures of the exported model (tools/demo-model/engine_eval.mjs: exact lines with healing,
    latency, samples), or None where node cannot run it."""
    root = os.path.dirname(os.path.dirname(HERE))
    try:
        res = subprocess.run(["node", os.path.join(HERE, "engine_eval.mjs"), "--model", os.path.abspath(out_dir),
                              "--lines", str(lines), "--windows", "16"],
                             cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"engine_eval.mjs failed, the card leaves its figures out: {getattr(e, 'stderr', e)}")
        return None
    return json.loads(res.stdout.strip().split("\n")[-1])


@torch.no_grad()
def reference_logits(model, enc):
    texts = ["import os\nimport sys\n\ndef main(", "    for i in range(len(", "class Foo(object):\n    def __init__(self"]
    # One input near the full window, so that far positions are checked too.
    long_text = "".join(f"value_{i} = compute({i}, scale={i % 7})\n" for i in range(200))
    texts.append(enc.decode(enc.encode(long_text)[:CONTEXT - 24]))
    out = []
    for text in texts:
        ids = enc.encode(text)
        logits = forward_full(model, torch.tensor([ids]))[0]
        out.append({"text": text, "input_ids": ids,
                    "argmax": logits.argmax(-1).tolist(),
                    "last_logits": [round(float(x), 6) for x in logits[-1]]})
    return {"note": "PyTorch fp32 logits at export; positions 0..T-1, no past, no padding", "inputs": out}


TARGETS = {"held_top1": 0.52, "exact": 0.10, "unlike_top1": 0.40, "latency_ms": 500, "size_mb": 64}


def model_card(args, cfg, n_params, stats):
    s = stats
    ev = s.get("engine")
    mb = s["model_bytes"] / 1e6
    lines = [
        f"# {os.path.basename(args.out)}: a {cfg.arch.upper()}-style code model built by neuronpatch",
        "",
        "Written by `tools/demo-model/build.py` (`tools/demo-model/build.sh` rebuilds it); do not edit by hand.",
        "",
        "## Data",
        f"- The Python standard library of `{s['corpus_root']}` (modules and tests, `site-packages` and "
        "`dist-packages` excluded), and the Python sources of the permissively licensed Debian packages below "
        f"(the `.py` files `dpkg -L` lists; at most {corpus.PACKAGE_CAP_BYTES / 1e6:.1f} MB of a package, files over "
        f"{corpus.FILE_CAP_BYTES // 1000} kB left out as data tables). Every file is split by a hash of its path: a "
        "fixed tenth is held out and never trained on; the held-out figures and the repair cases come from the "
        "standard library's held-out tenth.",
        "- Never trained on: `pip`, `setuptools` and `wheel` (Debian's `python3-pip`, `python3-setuptools`, "
        "`python3-wheel`); they are kept apart as the \"unlike code\" of the evaluation.",
        f"- Training: {s['train_files']} files, {s['train_tokens']:,} tokens. Held out (standard library): "
        f"{s['held_files']} files.",
        (f"- Tokenizer: byte-level BPE, {cfg.vocab_size} tokens (`tokenizer.json`), the one of the model it continues "
         "(trained on the standard library's training files)." if args.init_from else
         f"- Tokenizer: byte-level BPE, {cfg.vocab_size} tokens, trained on the training files (`tokenizer.json`)."),
        "",
        "| Debian package | licence (debian/copyright) | files | bytes |",
        "|---|---|---|---|",
    ]
    for package, f in s["packages"].items():
        if f.get("missing"):
            lines.append(f"| {package} | {f['licence']} | not installed: left out | |")
        else:
            lines.append(f"| {package} | {f['licence']} | {f['files']} | {f['bytes']:,} |")
    lines += [
        "",
        "## Model",
        f"- {hf_config(cfg)['architectures'][0]}-style: {cfg.num_hidden_layers} layers, residual width "
        f"{cfg.hidden_size}, FFN width {cfg.intermediate_size}, {cfg.num_attention_heads} heads, context "
        f"{cfg.max_position_embeddings} tokens; {n_params:,} parameters; fp32 ONNX (opset 14) with a KV cache, "
        f"{mb:.1f} MB.",
        (f"- Initialised from {s['init_note']}, then trained further as below (the learning rate warms up again "
         "from zero)." if args.init_from else "- Trained from random weights (seed 0)."),
        f"- Training: {args.steps_done:,} steps of {args.batch_tokens:,} tokens ({args.tokens_seen:,} tokens, "
        f"{args.tokens_seen / s['train_tokens']:.2f} passes over the training tokens); windows of {SHORT_CONTEXT} "
        f"tokens, then of {CONTEXT} tokens for the last {args.long_fraction * 100:.0f} % of the budget; AdamW, peak "
        f"learning rate {s['lr']:g}, cosine to a tenth, bf16 autocast; {s['train_seconds'] / 60:.1f} minutes on "
        f"{s['trained_on']}"
        + (f" (budget {args.minutes:g} minutes: the schedule follows the clock, so the step count depends on the "
           "machine's load)." if args.minutes else "."),
        "",
        "## Held-out quality (next token, teacher forced, windows of "
        f"{CONTEXT} tokens)",
        "| data | loss (nats/token) | top-1 | top-5 | tokens |",
        "|---|---|---|---|---|",
    ]
    for name, key in (("held-out tenth of the stdlib", "held_out"), ("unlike code (pip, setuptools, wheel)", "unlike")):
        if key in s:
            e = s[key]
            lines.append(f"| {name} | {e['loss']:.3f} | {e['top1'] * 100:.1f} % | {e['top5'] * 100:.1f} % | {e['tokens']:,} |")
    if ev:
        lines += [
            "",
            "## As the editor uses it (the engine's own decoding: `tools/demo-model/engine_eval.mjs`)",
            f"- Exact lines: {ev['exact']} of {ev['lines']} held-out lines ({ev['exactRate'] * 100:.1f} %) completed "
            "exactly, indentation included, by the engine's greedy decoding with token healing and an end-of-line "
            f"stop. Lines: the candidate lines of the held-out standard-library files (4–80 characters of code, not a "
            f"comment, at least the fourth line of the file), shuffled with seed {ev['seed']}, the first "
            f"{ev['lines']}; each prompt is the file up to that line, cut from the left at a line boundary to at most "
            f"{ev['maxPromptTokens']} tokens (mean {ev['meanPromptTokens']:.0f}).",
            *([f"- The engine's own forward (onnxruntime, fp32) over {ev['nextToken']['heldOut']['tokens']:,} tokens "
               f"(windows of {ev['nextToken']['heldOut']['window']}): top-1 {ev['nextToken']['heldOut']['top1'] * 100:.1f} % "
               f"on the held-out stdlib, {ev['nextToken']['unlike']['top1'] * 100:.1f} % on pip, setuptools and wheel."]
              if ev.get("nextToken") else []),
            f"- First ghost text on a warm model: median {ev['latency']['medianMs']:.0f} ms, max "
            f"{ev['latency']['maxMs']:.0f} ms for one line after a prompt of {ev['latency']['meanPromptTokens']:.0f} "
            f"tokens on average ({ev['latency']['prompts']} prompts, the window full), on this build's machine "
            f"(2 cores; load average {ev['latency'].get('loadAverage', float('nan')):.1f} while it ran).",
        ]
    held, unlike = s.get("held_out", {}), s.get("unlike", {})
    t = TARGETS
    rows = [
        ("held-out top-1", f">= {t['held_top1'] * 100:.0f} %", held.get("top1"), lambda v: f"{v * 100:.1f} %",
         lambda v: v >= t["held_top1"]),
        ("held-out lines exact (engine, healing)", f">= {t['exact'] * 100:.0f} %", ev and ev["exactRate"],
         lambda v: f"{v * 100:.1f} %", lambda v: v >= t["exact"]),
        ("unlike code top-1", f">= {t['unlike_top1'] * 100:.0f} %", unlike.get("top1"), lambda v: f"{v * 100:.1f} %",
         lambda v: v >= t["unlike_top1"]),
        ("first ghost text, warm, full window", f"<= {t['latency_ms']} ms", ev and ev["latency"]["medianMs"],
         lambda v: f"{v:.0f} ms (median)", lambda v: v <= t["latency_ms"]),
        ("model file", f"<= {t['size_mb']} MB", mb, lambda v: f"{v:.1f} MB", lambda v: v <= t["size_mb"]),
    ]
    lines += ["", "## Targets (issue 14)", "| measure | target | measured | met |", "|---|---|---|---|"]
    for name, target, v, fmt, ok in rows:
        lines.append(f"| {name} | {target} | {fmt(v) if v is not None else 'not measured'} | "
                     f"{('yes' if ok(v) else 'no') if v is not None else '-'} |")
    if ev:
        lines += ["", "## Ten line completions on held-out files (the engine's greedy decoding with healing)", ""]
        for smp in ev["samples"]:
            mark = "same" if smp["same"] else "differs"
            lines.append(f"- `{smp['file']}:{smp['line']}` ({mark})")
            lines.append(f"  - after: `{smp['context']}`")
            lines.append(f"  - true:  `{smp['true']}`")
            lines.append(f"  - model: `{smp['model']}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=list(PRESETS), default="llama")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, help="steps (an upper bound where a time budget is set)")
    ap.add_argument("--batch-tokens", type=int, help="tokens a step")
    ap.add_argument("--minutes", type=float, help="time budget of training: the schedule ends and training stops "
                    "when it is spent (0: no budget, --steps only)")
    ap.add_argument("--long-fraction", type=float, default=0.25,
                    help=f"share of training with {CONTEXT}-token windows (the rest: {SHORT_CONTEXT})")
    ap.add_argument("--size", help="override the preset: d,layers,heads,ffn (for a pilot)")
    ap.add_argument("--checkpoint", help="checkpoint file, written every 5 minutes and resumed from "
                    "(default .build/<arch>.ckpt.pt)")
    ap.add_argument("--init-from", metavar="DIR",
                    help="continue training an earlier demo model folder of the same size: its weights (model.onnx) "
                    "and its tokenizer.json (copied into .build/ before the corpus is tokenized)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    ap.add_argument("--engine-lines", type=int, default=200, help="held-out lines of the card's exact-line rate")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see OPENBLAS_NUM_THREADS above)")
    ap.add_argument("--device", default="cpu", help="cpu (the documented rebuild) or cuda")
    ap.add_argument("--train-only", metavar="NPZ",
                    help="train, then save the weights and training facts to NPZ and stop (for a lent GPU, or to "
                    "train in the background and finish with --from-weights)")
    ap.add_argument("--from-weights", metavar="NPZ",
                    help="skip training: evaluate, export and describe the weights a --train-only run saved")
    ap.add_argument("--export-only", action="store_true",
                    help="re-export model.onnx from the weights saved in .build/ by an earlier full run")
    args = ap.parse_args()
    preset = dict(PRESETS[args.arch])
    args.steps = args.steps or preset.pop("steps")
    args.batch_tokens = args.batch_tokens or preset.pop("batch_tokens")
    args.minutes = preset.pop("minutes") if args.minutes is None else args.minutes
    for k in ("steps", "batch_tokens", "minutes"):
        preset.pop(k, None)
    lr = preset.pop("lr")
    lr = args.lr or lr
    if args.size:
        d, n, h, f = (int(x) for x in args.size.split(","))
        preset.update(hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=f)
    torch.set_num_threads(args.threads)
    random.seed(0)

    probe = None
    if args.init_from and not os.path.exists(os.path.join(CACHE, "tokenizer.json")):
        os.makedirs(CACHE, exist_ok=True)
        with open(os.path.join(args.init_from, "tokenizer.json")) as f:
            tj0 = json.load(f)
        with open(os.path.join(CACHE, "tokenizer.json"), "w") as f:
            json.dump(tj0, f, ensure_ascii=False)
    if args.train_only and (bpe is None or args.device != "cpu"):
        # On a lent machine the corpus is not there: the tokenized training stream travels in .build/.
        with open(os.path.join(CACHE, "tokenizer.json")) as f:
            tj = json.load(f)
        train_ids = np.load(os.path.join(CACHE, "train_ids.npy")).astype(np.int64)
    else:
        tj, enc, train_ids, held_files, root = prepare_tokens()
        if not args.from_weights and not args.export_only:
            probe = eval_windows(enc, held_files, 16, seed=3, length=SHORT_CONTEXT)
    cfg = Config(arch=args.arch, vocab_size=len(tj["model"]["vocab"]), max_position_embeddings=CONTEXT, **preset)
    model = build(cfg)
    if args.export_only:
        model.load_state_dict(torch.load(os.path.join(CACHE, f"{args.arch}.pt")))
        export_onnx(model, cfg, os.path.join(args.out, "model.onnx"))
        log(f"re-exported {args.out}/model.onnx")
        return
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    budget = f"{args.minutes:g} min budget" if args.minutes else f"{args.steps} steps"
    log(f"{args.arch}: {n_params:,} parameters, {args.batch_tokens} tokens a step, {budget}, context {CONTEXT}")
    trained_on = f"{args.device}, {torch.get_num_threads()} thread" + "s" * (torch.get_num_threads() > 1) if args.device == "cpu" else args.device
    if args.from_weights:
        saved = np.load(args.from_weights)
        model.load_state_dict({k: torch.from_numpy(saved[k]) for k in model.state_dict()})
        secs, trained_on = float(saved["__train_seconds"]), str(saved["__trained_on"])
        steps_done, tokens_seen = int(saved["__steps"]), int(saved["__tokens"])
        lr, args.minutes = float(saved["__lr"]), float(saved["__minutes"])
        args.init_from, args.long_fraction = str(saved["__init_from"]) or None, float(saved["__long_fraction"])
        log(f"weights from {args.from_weights}: trained {secs / 60:.1f} min on {trained_on}")
    else:
        ckpt = args.checkpoint or os.path.join(CACHE, f"{args.arch}.ckpt.pt")
        if args.init_from and not os.path.exists(ckpt):
            weights_from_onnx(model, os.path.join(args.init_from, "model.onnx"))
            ref = json.load(open(os.path.join(args.init_from, "reference_logits.json")))["inputs"][0]
            with torch.no_grad():
                got = forward_full(model, torch.tensor([ref["input_ids"]]))[0, -1]
            err = float((got - torch.tensor(ref["last_logits"])).abs().max())
            log(f"initialised from {args.init_from}/model.onnx: max |logit - reference| {err:.2e}")
            if err > 1e-3:
                raise ValueError(f"{args.init_from}/model.onnx read back gives logits {err:.2e} off its reference")
        secs, steps_done, tokens_seen = train(model, train_ids, args.steps, args.batch_tokens, lr, args.device,
                                              minutes=args.minutes or None, long_fraction=args.long_fraction,
                                              short_context=SHORT_CONTEXT, checkpoint=ckpt, probe=probe)
        model.to("cpu")
    if args.train_only:
        arrays = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
        np.savez(args.train_only, __train_seconds=np.array(secs), __trained_on=np.array(trained_on
                 + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")),
                 __steps=np.array(steps_done), __tokens=np.array(tokens_seen), __lr=np.array(lr),
                 __init_from=np.array(args.init_from or ""), __minutes=np.array(args.minutes or 0.0),
                 __long_fraction=np.array(args.long_fraction), **arrays)
        log(f"saved {args.train_only}")
        return
    args.steps_done, args.tokens_seen = steps_done, tokens_seen

    stats = {"corpus_root": root, "train_tokens": int(len(train_ids)), "held_files": len(held_files),
             "train_seconds": secs, "trained_on": trained_on, "lr": lr}
    if args.init_from:
        card = os.path.join(args.init_from, "MODEL_CARD.md")
        lines = open(card).read().split("\n") if os.path.exists(card) else []
        said = [ln[len("- Training: "):] for ln in lines if ln.startswith("- Training: ") and " steps " in ln]
        chained = any(ln.startswith("- Initialised from ") for ln in lines)
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "models/demo/model.onnx"], cwd=os.path.dirname(
            os.path.dirname(HERE)), capture_output=True, text=True).stdout.strip()
        stats["init_note"] = (f"`models/demo` of commit {commit}" if commit else f"`{args.init_from}`") + (
            f" (its card: {said[0].rstrip('.')}{'; itself continued from an earlier model' if chained else ''})" if said else "")
    _root, train_files, _held, stats["packages"] = corpus.load_training(root)
    stats["train_files"] = len(train_files)
    stats["held_out"] = evaluate(model, eval_windows(enc, held_files, 24, seed=1))
    unlike = unlike_docs()
    if unlike:
        stats["unlike"] = evaluate(model, eval_windows(enc, unlike, 24, seed=2))
    log("held-out", stats["held_out"], "unlike", stats.get("unlike"))

    os.makedirs(args.out, exist_ok=True)
    export_onnx(model, cfg, os.path.join(args.out, "model.onnx"))
    stats["model_bytes"] = os.path.getsize(os.path.join(args.out, "model.onnx"))
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
    torch.save(model.state_dict(), os.path.join(CACHE, f"{args.arch}.pt"))
    stats["engine"] = engine_eval(args.out, args.engine_lines)
    if stats["engine"]:
        log("engine", {k: v for k, v in stats["engine"].items() if k != "samples"})
    with open(os.path.join(args.out, "MODEL_CARD.md"), "w") as f:
        f.write(model_card(args, cfg, n_params, stats))
    log(f"wrote {args.out}")

if __name__ == "__main__":
    main()
