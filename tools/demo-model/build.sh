#!/usr/bin/env bash
# Rebuilds both embedded models from scratch (about 60 minutes on 2 cores): tokenizer, training, export.
# Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-regex and libopenblas0-pthread.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf tools/demo-model/.build
/usr/bin/python3 tools/demo-model/build.py --arch llama --out models/demo
/usr/bin/python3 tools/demo-model/build.py --arch gpt2 --out models/demo-gpt2
