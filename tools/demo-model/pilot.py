"""A short pilot that picks the demo model's size by measurement on this machine, under its present load.

    /usr/bin/python3 tools/demo-model/pilot.py [--seconds 150] [--sizes 192,6,6,512 128,4,4,384 256,6,8,768]

For each size (d, layers, heads, FFN width): trains from scratch for the same wall-clock time with the build's own
schedule (build.train, short windows, a time budget) and scores the held-out probe; then times a few steps with
full-context windows. The size with the lowest probe loss per unit of time is the one to train for longer (the
ranking after a short run is only a guide: bigger models gain more from a longer run).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402
from model import Config  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--sizes", nargs="+", default=["192,6,6,512", "128,4,4,384", "256,6,8,768"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tj, enc, train_ids, held, _root = build.prepare_tokens()
    probe = build.eval_windows(enc, held, 16, seed=3, length=build.SHORT_CONTEXT)
    rows = []
    for size in args.sizes:
        d, n, h, f = (int(x) for x in size.split(","))
        cfg = Config(arch="llama", vocab_size=len(tj["model"]["vocab"]), hidden_size=d, num_hidden_layers=n,
                     num_attention_heads=h, intermediate_size=f, max_position_embeddings=build.CONTEXT)
        model = build.build(cfg)
        params = sum(p.numel() for p in model.parameters())
        secs, steps, tokens = build.train(model, train_ids, 10**9, 4096, 3e-3, minutes=args.seconds / 60,
                                          long_fraction=0.0, short_context=build.SHORT_CONTEXT, warmup_steps=5)
        e = build.evaluate(model, probe)
        # Full-context throughput: 4 steps of one window of CONTEXT tokens, after one to warm up.
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        w = torch.from_numpy(train_ids[: 4 * (build.CONTEXT + 1)].reshape(4, -1))
        times = []
        for i in range(5):
            t0 = time.time()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = build.forward_full(model, w[i % 4:i % 4 + 1, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[i % 4:i % 4 + 1, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.time() - t0)
        long_tps = build.CONTEXT / (sum(times[1:]) / 4)
        rows.append((size, params, steps, tokens, tokens / secs, long_tps, e["loss"], e["top1"]))
        build.log(f"pilot {size}: {params:,} params, {steps} steps, {tokens:,} tokens in {secs:.0f}s "
                  f"({tokens / secs:.0f} tok/s at T={build.SHORT_CONTEXT}, {long_tps:.0f} tok/s at T={build.CONTEXT}), "
                  f"probe loss {e['loss']:.3f}, top-1 {e['top1'] * 100:.1f} %")
    print("| size d,layers,heads,ffn | params | steps | tokens | tok/s T=256 | tok/s T=1024 | probe loss | top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]:,} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.3f} | {r[7] * 100:.1f} % |")


if __name__ == "__main__":
    main()
