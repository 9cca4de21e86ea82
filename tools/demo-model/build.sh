#!/usr/bin/env bash
# Rebuilds the embedded models from scratch: corpus, tokenizer, training, evaluation, export, model card.
# Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-regex, libopenblas0-pthread, the Debian
# packages of the corpus (tools/demo-model/corpus.py's PACKAGES: apt-get install -y "${PACKAGES[@]}"), and node
# with this repository's node_modules (the card's engine figures: tools/demo-model/engine_eval.mjs).
#
# Knobs (environment):
#   LLAMA_MINUTES  training time budget of models/demo (default 75): the learning-rate schedule follows the clock
#                  and training stops when it is spent, whatever the machine's load; the step count is recorded.
#   GPT2_MINUTES   the same for models/demo-gpt2 (default 30); GPT2=0 skips it.
#   LLAMA_LR       peak learning rate of models/demo (default: build.py's preset, 3e-3).
#   INIT_FROM      a demo model folder of the same size to continue from (its weights and tokenizer) instead of
#                  random weights. The committed models/demo was built so, from the previous stdlib-only model:
#                  INIT_FROM=<a copy of that models/demo> LLAMA_MINUTES=57 LLAMA_LR=1.5e-3 LONG_FRACTION=0.3
#   LONG_FRACTION  share of the budget trained on 1,024-token windows (default 0.25; the rest: 256).
#   NICE           niceness of the training processes (default 5).
# Training checkpoints every 5 minutes to tools/demo-model/.build/<arch>.ckpt.pt; rerunning with RESUME=1 keeps
# .build/ and resumes from there. A 2-core machine shared with other work gives about 1–3k tokens/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${RESUME:-0}" = 1 ] || rm -rf tools/demo-model/.build
NICE="${NICE:-5}"
llama=(--minutes "${LLAMA_MINUTES:-75}" --long-fraction "${LONG_FRACTION:-0.25}")
[ -n "${LLAMA_LR:-}" ] && llama+=(--lr "$LLAMA_LR")
[ -n "${INIT_FROM:-}" ] && llama+=(--init-from "$INIT_FROM")
nice -n "$NICE" /usr/bin/python3 tools/demo-model/build.py --arch llama --out models/demo "${llama[@]}"
if [ "${GPT2:-1}" != 0 ]; then
  nice -n "$NICE" /usr/bin/python3 tools/demo-model/build.py --arch gpt2 --out models/demo-gpt2 --minutes "${GPT2_MINUTES:-30}"
fi
