#!/usr/bin/env bash
# Trains both demo models on a lent GPU (the library's `device` tool), from the tokenized corpus in .build/
# (carried with the working tree), and leaves the weights in $OUT. Back here, finish each with
#   /usr/bin/python3 tools/demo-model/build.py --arch llama --out models/demo --from-weights llama.npz
# which evaluates, exports and writes the model card on this machine, exactly as a CPU build does.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 tools/demo-model/build.py --arch llama --out /tmp/unused --device cuda --train-only "$OUT/llama.npz"
python3 tools/demo-model/build.py --arch gpt2 --out /tmp/unused --device cuda --train-only "$OUT/gpt2.npz"
