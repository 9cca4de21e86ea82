"""The side-by-side baseline of neuron repair: fine-tune the FFN output weights of the demo model's PyTorch twin.

    /usr/bin/python3 tools/baseline/sgd.py --cases bench/cases/dev.jsonl --regression bench/cases/regression.jsonl \
        [--model models/demo] [--weights auto|pt|onnx] [--limit N] [--lr 0.01] [--max-steps 30] [--threads 2]

For every case, from the original weights each time: SGD (lr 0.01) on every layer's `down_proj` weight and nothing
else, on the teacher-forced cross-entropy of the desired text plus the end of the line (the position after the
desired text must produce a token that starts a new line: its loss is -log of their summed probability), summed
over the positions (--reduction mean averages them instead), one
step at a time until the greedy line equals the desired text, at most --max-steps steps. Greedy decoding mirrors
the engine's `generate` (src/engine/generate.ts): the prompt boundary is healed (the last token, or the tokens of
a word, backed off and the first generated tokens constrained to re-spell them), 48 new tokens at most, stop at
the end of the line or at end of sequence.

Measured per case: success, steps, neurons changed (down_proj columns whose change has norm > 1e-6), teacher-
forced failing tokens before, time of the repair (the SGD steps and their greedy checks), time of one greedy
generation of the bad completion, specificity on the regression prompts (share of greedy lines unchanged) and
mean next-token KL there, generalization on the case's variants (share now fixed). Prints one JSON object in the
shape of `neuronpatch eval --json`. Progress goes to stderr.

Weights: tools/demo-model/.build/llama.pt (written at the end of the demo build) or, where it is absent (a fresh
clone), the initializers of models/demo/model.onnx matched to parameters by the nodes that consume them (a
MatMul's weight is stored transposed). Either way the logits are checked against reference_logits.json.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in tools/demo-model

import numpy as np  # noqa: E402
import regex  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "demo-model"))
import bpe  # noqa: E402
from model import Config, LlamaForCausalLM, empty_past  # noqa: E402

DEFAULT_MAX_NEW_TOKENS = 48  # src/engine/generate.ts
WORD_CHAR = regex.compile(r"[\p{L}\p{N}_]")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model and weights

def load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    if c.get("model_type") != "llama":
        raise SystemExit(f"{folder}: model_type {c.get('model_type')!r}; the baseline's twin is the LLaMA-style demo model")
    return Config(arch="llama", vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                  intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
                  num_attention_heads=c["num_attention_heads"], max_position_embeddings=c["max_position_embeddings"],
                  rope_theta=c.get("rope_theta", 10000.0), norm_eps=c.get("rms_norm_eps", 1e-5),
                  bos_token_id=c.get("bos_token_id", 0), eos_token_id=c.get("eos_token_id", 0))


def module_node_prefix(param_name):
    """`model.layers.3.mlp.down_proj.weight` → `/model/layers.3/mlp/down_proj/` (torch.onnx's node scope names)."""
    parts = []
    for p in param_name.split(".")[:-1]:
        if p.isdigit() and parts:
            parts[-1] += "." + p
        else:
            parts.append(p)
    return "/" + "/".join(parts) + "/"


def state_dict_from_onnx(model, path):
    """Each parameter from the initializer its own module's node consumes; a MatMul weight is stored [in, out]."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

    def resolve(name):
        seen = 0
        while name in alias and seen < 100:
            name, seen = alias[name], seen + 1
        return inits.get(name)

    out = {}
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        if name in inits and tuple(inits[name].dims) == shape:
            out[name] = torch.from_numpy(numpy_helper.to_array(inits[name]).copy())
            continue
        prefix = module_node_prefix(name)
        found = None
        for node in g.node:
            if not node.name.startswith(prefix):
                continue
            for inp in node.input:
                t = resolve(inp)
                if t is None:
                    continue
                dims = tuple(t.dims)
                if node.op_type == "MatMul" and dims == shape[::-1]:
                    found = torch.from_numpy(numpy_helper.to_array(t).copy()).t().contiguous()
                elif node.op_type != "MatMul" and dims == shape:
                    found = torch.from_numpy(numpy_helper.to_array(t).copy())
                if found is not None:
                    break
            if found is not None:
                break
        if found is None:
            raise SystemExit(f"{path}: no initializer for {name} {list(shape)} under nodes {prefix}*")
        out[name] = found
    return out


def load_model(folder, weights, pt_path):
    cfg = load_config(folder)
    model = LlamaForCausalLM(cfg)
    source = weights
    if weights == "auto":
        source = "pt" if os.path.exists(pt_path) else "onnx"
    if source == "pt":
        model.load_state_dict(torch.load(pt_path))
    else:
        model.load_state_dict(state_dict_from_onnx(model, os.path.join(folder, "model.onnx")))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cfg, source


@torch.no_grad()
def check_reference(model, folder):
    path = os.path.join(folder, "reference_logits.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        ref = json.load(f)
    worst, argmax_ok = 0.0, True
    for item in ref["inputs"]:
        ids = torch.tensor([item["input_ids"]])
        t = ids.shape[1]
        logits, _ = model(ids, torch.ones(1, t, dtype=torch.long), torch.arange(t).unsqueeze(0), empty_past(model.cfg, 1))
        worst = max(worst, float((logits[0, -1] - torch.tensor(item["last_logits"])).abs().max()))
        argmax_ok &= logits[0].argmax(-1).tolist() == item["argmax"]
    return {"maxAbsDiff": worst, "argmaxEqual": argmax_ok}


# ---------------------------------------------------------------- tokenizer and the engine's decoding

class Tok:
    def __init__(self, folder):
        with open(os.path.join(folder, "tokenizer.json")) as f:
            tj = json.load(f)
        vocab = tj["model"]["vocab"]
        symbols = sorted(vocab, key=vocab.get)
        self.enc = bpe.Encoder(symbols, [tuple(m.split(" ")) for m in tj["model"]["merges"]])
        byte_of = {c: b for b, c in bpe.BYTE_CHARS.items()}
        special = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
        self.special = special
        self.bytes = [b"" if i in special else bytes(byte_of[c] for c in s) for i, s in enumerate(symbols)]
        # Each token's text decoded alone, special tokens as their content (the engine's tokenTexts()).
        self.texts = [s if i in special else self.bytes[i].decode("utf-8", errors="replace") for i, s in enumerate(symbols)]
        config_path = os.path.join(folder, "tokenizer_config.json")
        config = json.load(open(config_path)) if os.path.exists(config_path) else {}
        self.add_bos = config.get("add_bos_token") is True
        self._masks = {}

    def encode(self, text):
        return self.enc.encode(text)

    def decode(self, ids):
        return b"".join(self.bytes[i] for i in ids).decode("utf-8", errors="replace")

    def healing_mask(self, rest):
        m = self._masks.get(rest)
        if m is None:
            m = torch.tensor([bool(s) and "\ufffd" not in s and (s.startswith(rest) or rest.startswith(s)) for s in self.texts])
            self._masks[rest] = m
        return m


def prepare_prompt(tok, prompt, max_new, context, bos=None, heal=True):
    """src/engine/generate.ts preparePrompt: back off the last token (and a word's tokens) to heal the boundary."""
    ids = tok.encode(prompt)
    healed = ""
    if heal and len(ids) > 1:
        keep = len(ids) - 1
        healed = prompt[len(tok.decode(ids[:keep])):]
        while keep > 1 and len(ids) - keep < 3 and WORD_CHAR.match(healed[:1] or " "):
            prev = tok.texts[ids[keep - 1]]
            if not WORD_CHAR.match(prev[-1:] or " ") or regex.match(r"\s", prev):
                break
            keep -= 1
            healed = prompt[len(tok.decode(ids[:keep])):]
        if prompt.startswith(tok.decode(ids[:keep])):
            ids = ids[:keep]
        else:
            healed = ""
    bos_ids = [bos] if tok.add_bos and bos is not None else []
    budget = context - max_new - len(bos_ids)
    if len(ids) > budget:
        ids = ids[len(ids) - budget:]
    ids = bos_ids + ids
    if not ids:
        ids = [bos if bos is not None else 0]
    return ids, healed


@torch.no_grad()
def greedy_lines(model, tok, cfg, prompts, max_new=DEFAULT_MAX_NEW_TOKENS, batch_size=32, want_first=False, expect=None):
    """Greedy lines for a list of prompts, left-padded batches with the KV cache, as the engine decodes them.
    With want_first, also returns each prompt's next-token log-probabilities at the first step. With expect (a
    line per prompt), only the question "is the line exactly this?" is answered: a row stops as soon as its text
    is no longer a prefix of its expected line, and returns the text so far (which then differs from it)."""
    lines, firsts = [], []
    eos = {cfg.eos_token_id}
    context = cfg.max_position_embeddings
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        expected = expect[start:start + batch_size] if expect is not None else None
        prepared = [prepare_prompt(tok, p, max_new, context, cfg.bos_token_id) for p in chunk]
        b = len(prepared)
        width = max(len(ids) for ids, _ in prepared)
        pad = cfg.eos_token_id
        ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in prepared])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in prepared])
        past = empty_past(cfg, b)
        # Text is decoded after the prompt's last token (the anchor), as the engine does.
        rows = [{"out": [], "done": False, "text": "", "healed": h, "anchor": i[-1:], "anchor_len": len(tok.decode(i[-1:]))}
                for i, h in prepared]
        for step in range(max_new):
            if all(r["done"] for r in rows):
                break
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
            hidden, past = model.model(ids, mask, pos, past)
            logits = model.lm_head(hidden[:, -1]).float()
            if step == 0 and want_first:
                firsts.extend(F.log_softmax(logits, -1))
            nxt = []
            for bi, row in enumerate(rows):
                if row["done"]:
                    nxt.append(pad)
                    continue
                consumed = len(tok.decode(row["anchor"] + row["out"])) - row["anchor_len"] if row["out"] else 0
                rest = row["healed"][consumed:]
                lg = logits[bi]
                if rest:
                    allowed = tok.healing_mask(rest)
                    if not bool(allowed.any()):
                        row["done"] = True
                        nxt.append(pad)
                        continue
                    lg = lg.masked_fill(~allowed, float("-inf"))
                tid = int(lg.argmax())
                row["out"].append(tid)
                full = tok.decode(row["anchor"] + row["out"])[row["anchor_len"]:]
                ended = False
                if len(full) >= len(row["healed"]):
                    text = full[len(row["healed"]):]
                    nl = text.find("\n")
                    if nl >= 0:
                        text, ended = text[:nl], True
                    row["text"] = text
                else:
                    row["text"] = ""
                if tid in eos or ended:
                    row["done"] = True
                elif expected is not None and not expected[bi].startswith(row["text"]):
                    row["done"] = True  # diverged: cannot equal the expected line any more
                nxt.append(tid)
            if mask.shape[1] + 1 > context:
                break
            ids = torch.tensor(nxt).unsqueeze(1)
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype)], dim=1)
        lines.extend(r["text"] for r in rows)
    return (lines, firsts) if want_first else lines


# ---------------------------------------------------------------- the repair by SGD

def teacher_forcing(tok, cfg, prompt, desired):
    """Prompt ids (healed) + target ids spelling the healed text and the desired line; the last position must
    start a new line."""
    ids, healed = prepare_prompt(tok, prompt, DEFAULT_MAX_NEW_TOKENS, cfg.max_position_embeddings, cfg.bos_token_id)
    target = tok.encode(healed + desired)
    return ids, target


def case_loss(model, cfg, ids, target, newline_ids, reduction="mean"):
    seq = torch.tensor([ids + target])
    t = seq.shape[1]
    logits, _ = model(seq, torch.ones(1, t, dtype=torch.long), torch.arange(t).unsqueeze(0), empty_past(cfg, 1))
    logp = F.log_softmax(logits[0, len(ids) - 1:].float(), -1)  # predicts target[0..] and the end of the line
    tgt = torch.tensor(target)
    token_nll = -logp[:-1].gather(1, tgt.unsqueeze(1)).squeeze(1)
    eol_nll = -torch.logsumexp(logp[-1, newline_ids], 0)
    nll = torch.cat([token_nll, eol_nll.unsqueeze(0)])
    loss = nll.sum() if reduction == "sum" else nll.mean()
    am = logp.argmax(-1)
    failing = int((am[:-1] != tgt).sum()) + int(not bool((newline_ids == am[-1]).any()))
    return loss, failing


# ---------------------------------------------------------------- MINT (re-implemented)

def mint_steer_basis(model):
    """pinv(W_U diag(gamma)), [d, V]: the semantic steer of MINT (Gu et al., arXiv 2312.05356) maps a logit-space
    direction e_target - e_argmax to a residual direction."""
    w = model.lm_head.weight.detach() * model.model.norm.weight.detach().unsqueeze(0)  # [V, d]
    return torch.linalg.pinv(w.double()).float()  # [d, V]


def mint_case(model, tok, cfg, c, ids, target, newline_ids, pinv, budget, log_prefix):
    """MINT, as its paper describes it, with real gradients: at the first failing position, locate the neuron with
    the largest gradient x activation on the input of an FFN output projection (towards a lower loss of the desired
    token), steer its value vector along pinv(W_U)(e_target - e_argmax), with the blend factor f (in units of the
    value vector's norm) searched on a grid (the smallest that flips the argmax there, else the one that closes the
    gap most), and repeat until teacher forcing produces the desired line or `budget` neurons are edited; the
    caller decides success by greedy decoding. Returns (None, neurons, steps) when teacher forcing passes."""
    downs = [layer.mlp.down_proj for layer in model.model.layers]
    edited = set()
    seq = ids + target
    t_first = len(ids) - 1
    grid = [0.25, 1, 4, 16]
    for step in range(1, budget + 1):
        acts = {}
        hooks = []
        for li, dp in enumerate(downs):
            def pre(mod, inp, li=li):
                acts[li] = inp[0]
            hooks.append(dp.register_forward_pre_hook(pre))
        x = torch.tensor([seq])
        t = x.shape[1]
        emb = model.model.embed_tokens.weight
        emb.requires_grad_(True)  # so that every activation carries a graph to take gradients through
        with torch.enable_grad():
            logits, _ = model(x, torch.ones(1, t, dtype=torch.long), torch.arange(t).unsqueeze(0), empty_past(cfg, 1))
            logp = F.log_softmax(logits[0, t_first:].float(), -1)
            am = logp.argmax(-1)
            fail = None
            for i in range(len(target)):
                if int(am[i]) != target[i]:
                    fail = i
                    break
            if fail is None and not bool((newline_ids == am[len(target)]).any()):
                fail = len(target)
            for h in hooks:
                h.remove()
            if fail is None:
                emb.requires_grad_(False)
                return None, len(edited), step - 1  # teacher forcing passes; the caller decodes
            y = target[fail] if fail < len(target) else int(newline_ids[logp[fail, newline_ids].argmax()])
            a = int(am[fail])
            loss = -logp[fail, y]
            grads = torch.autograd.grad(loss, [acts[li] for li in range(len(downs))])
        emb.requires_grad_(False)
        pos = t_first + fail
        best = None
        for li, g in enumerate(grads):
            score = (acts[li][0, pos] * g[0, pos]).detach()  # grad x activation: > 0 raises the loss
            for j in torch.argsort(score, descending=True)[:4].tolist():
                if (li, j) in edited:
                    continue
                if best is None or float(score[j]) > best[0]:
                    best = (float(score[j]), li, j)
                break
        if best is None:
            return False, len(edited), step
        _, li, j = best
        e = torch.zeros(cfg.vocab_size)
        e[y], e[a] = 1.0, -1.0
        steer = pinv @ e  # [d]
        w = downs[li].weight  # [d, m]: column j is neuron j's value vector
        v0 = w[:, j].clone()
        scale = float(v0.norm()) / max(float(steer.norm()), 1e-12)
        pick, pick_gap = None, None
        with torch.no_grad():
            for f in grid:
                w[:, j] = v0 + f * scale * steer
                lg, _ = model(x, torch.ones(1, t, dtype=torch.long), torch.arange(t).unsqueeze(0), empty_past(cfg, 1))
                row = lg[0, pos]
                gap = float(row[y] - torch.cat([row[:y], row[y + 1:]]).max())
                if pick_gap is None or gap > pick_gap:
                    pick, pick_gap = f, gap
                if gap > 0:
                    pick = f
                    break
            w[:, j] = v0 + pick * scale * steer
        edited.add((li, j))
    return False, len(edited), budget


def save_deltas(folder, case_id, downs, original):
    """Every down_proj change as float32 [layers, m, d] (row j: neuron j's value-vector change) for the engine to
    measure side effects on exactly as it measures its own patches (bench/measure-deltas.ts)."""
    os.makedirs(folder, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(case_id))
    path = os.path.join(folder, f"{safe}.f32")
    with torch.no_grad():
        arr = torch.stack([(w - w0).t().contiguous() for w, w0 in zip(downs, original)]).float().numpy()
    arr.astype(np.float32).tofile(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--weights", choices=["auto", "pt", "onnx"], default="auto")
    ap.add_argument("--pt", default=os.path.join(ROOT, "tools", "demo-model", ".build", "llama.pt"))
    ap.add_argument("--cases", required=True)
    ap.add_argument("--regression")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--regression-limit", type=int)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: batch-1 decoding gains nothing from more, and loses much on a busy machine)")
    ap.add_argument("--method", choices=["sgd", "mint"], default="sgd",
                    help="sgd: fine-tune every down_proj (default); mint: the MINT re-implementation (mint_case)")
    ap.add_argument("--save-deltas", help="folder: write each case's down_proj change there (float32 [layers, m, d])")
    ap.add_argument("--reduction", choices=["mean", "sum"], default="sum",
                    help="cross-entropy over the target positions: their sum (default: the line's log-likelihood, "
                         "whose step does not shrink as the line grows) or their mean (torch's default, which at "
                         "lr 0.01 fixes fewer than half the dev cases in 30 steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    model, cfg, source = load_model(args.model, args.weights, args.pt)
    reference = check_reference(model, args.model)
    bad = lambda ref: ref is not None and (ref["maxAbsDiff"] > 1e-3 or not ref["argmaxEqual"])  # noqa: E731
    if args.weights == "auto" and source == "pt" and bad(reference):
        log(f"sgd: {args.pt} does not reproduce {args.model} ({reference}); loading the weights from model.onnx")
        model, cfg, source = load_model(args.model, "onnx", args.pt)
        reference = check_reference(model, args.model)
    tok = Tok(args.model)
    log(f"sgd: {source} weights loaded in {time.perf_counter() - t0:.1f}s; reference logits {reference}")
    if bad(reference):
        raise SystemExit(f"sgd: the twin does not reproduce {args.model}/reference_logits.json: {reference}")
    newline_ids = torch.tensor([i for i, s in enumerate(tok.texts) if s.startswith("\n")])

    with open(args.cases) as f:
        cases = [json.loads(line) for line in f if line.strip()]
    if args.limit is not None:
        cases = cases[:args.limit]
    regression = []
    if args.regression:
        with open(args.regression) as f:
            regression = [json.loads(line)["prompt"] for line in f if line.strip()]
        if args.regression_limit is not None:
            regression = regression[:args.regression_limit]

    downs = [layer.mlp.down_proj.weight for layer in model.model.layers]
    original = [w.detach().clone() for w in downs]
    pinv = mint_steer_basis(model) if args.method == "mint" else None
    t1 = time.perf_counter()
    reg_before, reg_first = greedy_lines(model, tok, cfg, regression, want_first=True) if regression else ([], [])
    log(f"sgd: {len(regression)} regression lines in {time.perf_counter() - t1:.1f}s; {len(cases)} cases")

    results = []
    for ci, c in enumerate(cases):
        for w, w0 in zip(downs, original):
            w.data.copy_(w0)
            w.requires_grad_(False)
        g0 = time.perf_counter()
        before = greedy_lines(model, tok, cfg, [c["prompt"]])[0]
        gen_ms = (time.perf_counter() - g0) * 1000
        r = {"id": c.get("id", str(ci)), "before": before, "generationMs": gen_ms}
        if before == c["desired"]:
            r.update(alreadyCorrect=True, success=True)
            results.append(r)
            log(f"sgd: {r['id']} already correct")
            continue
        ids, target = teacher_forcing(tok, cfg, c["prompt"], c["desired"])
        with torch.no_grad():
            _, failing = case_loss(model, cfg, ids, target, newline_ids)
        if args.method == "sgd":
            for w in downs:
                w.requires_grad_(True)
        opt = torch.optim.SGD(downs, lr=args.lr)
        start = time.perf_counter()
        success, steps, after, losses = False, 0, before, [0.0]
        if args.method == "mint":
            ok, _, steps = mint_case(model, tok, cfg, c, ids, target, newline_ids, pinv, 2 * max(1, failing) + 2, r["id"])
            after = greedy_lines(model, tok, cfg, [c["prompt"]])[0]
            success = after == c["desired"]
        for steps in (range(1, args.max_steps + 1) if args.method == "sgd" else []):
            opt.zero_grad(set_to_none=True)
            loss, _ = case_loss(model, cfg, ids, target, newline_ids, args.reduction)
            loss.backward()
            opt.step()
            losses.append(float(loss))
            after = greedy_lines(model, tok, cfg, [c["prompt"]], expect=[c["desired"]])[0]
            if after == c["desired"]:
                success = True
                break
        ms = (time.perf_counter() - start) * 1000
        for w in downs:
            w.requires_grad_(False)
        if not success:
            after = greedy_lines(model, tok, cfg, [c["prompt"]])[0]  # the whole line, for the record
        with torch.no_grad():
            neurons = sum(int(((w - w0).norm(dim=0) > 1e-6).sum()) for w, w0 in zip(downs, original))
        r.update(success=success, steps=steps, after=after, failingTokens=failing, neurons=neurons, ms=ms,
                 firstLoss=losses[0], lastLoss=losses[-1])
        if args.save_deltas:
            r["deltaFile"] = save_deltas(args.save_deltas, r["id"], downs, original)
        if regression:
            s0 = time.perf_counter()
            reg_after, first_after = greedy_lines(model, tok, cfg, regression, want_first=True, expect=reg_before)
            r["specificity"] = sum(a == b for a, b in zip(reg_after, reg_before)) / len(regression)
            r["meanKl"] = float(statistics.fmean(max(0.0, float((p.exp() * (p - q)).sum())) for p, q in zip(reg_first, first_after)))
            r["nextTokenSpecificity"] = sum(int(p.argmax()) == int(q.argmax()) for p, q in zip(reg_first, first_after)) / len(regression)
            r["sideEffectMs"] = (time.perf_counter() - s0) * 1000
        else:
            r["specificity"] = None
        variants = c.get("variants") or []
        if variants:
            got = greedy_lines(model, tok, cfg, [v["prompt"] for v in variants], expect=[v["desired"] for v in variants])
            r["generalization"] = sum(g == v["desired"] for g, v in zip(got, variants)) / len(variants)
        else:
            r["generalization"] = None
        results.append(r)
        log(f"sgd: {r['id']} {'fixed' if success else 'NOT fixed'} in {steps} steps, {ms:.0f} ms, "
            f"{neurons} columns changed, specificity {r['specificity']}, generalization {r['generalization']}")

    tried = [r for r in results if not r.get("alreadyCorrect")]
    fixed = [r for r in tried if r["success"]]

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return statistics.fmean(xs) if xs else None

    out = {
        "method": "sgd-down_proj" if args.method == "sgd" else "mint",
        "cases": len(tried),
        "alreadyCorrect": len(results) - len(tried),
        "successRate": len(fixed) / len(tried) if tried else None,
        "medianNeurons": med([r["neurons"] for r in fixed]),
        "neuronsPerFailingToken": med([r["neurons"] / max(r["failingTokens"], 1) for r in fixed]),
        # As `neuronpatch eval` aggregates them: side effects and generalization over the fixed cases.
        "specificity": mean([r["specificity"] for r in fixed]),
        "nextTokenSpecificity": mean([r.get("nextTokenSpecificity") for r in fixed]),
        "meanKl": mean([r.get("meanKl") for r in fixed]),
        "generalization": mean([r["generalization"] for r in fixed]),
        "specificityAllTried": mean([r["specificity"] for r in tried]),
        "medianMs": med([r["ms"] for r in tried]),
        "medianSteps": med([r["steps"] for r in tried]),
        "medianGenerationMs": med([r["generationMs"] for r in tried]),
        "medianRepairToGeneration": med([r["ms"] / r["generationMs"] for r in tried]),
        "lr": args.lr, "reduction": args.reduction, "maxSteps": args.max_steps, "weights": source, "reference": reference,
        "threads": args.threads, "regressionPrompts": len(regression),
        # The twin's greedy line before any step against the engine's, where the case file records it.
        "beforeAgreesWithEngine": sum(r["before"] == c["before"] for r, c in zip(results, cases) if "before" in c),
        "casesWithEngineBefore": sum("before" in c for c in cases),
        "results": results,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
