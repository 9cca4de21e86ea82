"""Prints the held-out tenth of the demo model's corpus as JSON: {"root": ..., "files": [[path, text], ...]}.

    /usr/bin/python3 tools/cases/heldout.py

The split is tools/demo-model/corpus.py's own (a hash of each path), so the cases come from files the demo model
never trained on. Files are sorted by path.
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in tools/demo-model
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo-model"))
import corpus  # noqa: E402

if __name__ == "__main__":
    root, _train, held = corpus.load_corpus(sys.argv[1] if len(sys.argv) > 1 else None)
    json.dump({"root": root, "files": sorted(held)}, sys.stdout, ensure_ascii=False)
