"""The corpus: the Python standard library of the `python3` first on PATH, split by a hash of each path.

A fixed tenth of the files is held out (never trained on); the development repair cases and the
regression prompts come from it. `site-packages` and `dist-packages` are never read.
"""
import hashlib
import json
import os
import subprocess
import sys

HELD_OUT_BUCKETS = 10  # one bucket of ten is held out


def stdlib_root():
    # The pyenv python3 on PATH, not /usr/bin/python3 that runs this script.
    out = subprocess.run(
        ["env", "-u", "PYTHONHOME", "python3", "-c",
         "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    return out.stdout.strip()


def is_held_out(rel_path):
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return digest[0] % HELD_OUT_BUCKETS == 0


def list_files(root):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                files.append(os.path.relpath(full, root))
    return files


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # a few test files are deliberately not UTF-8
    return text.replace("\r\n", "\n")


def load_corpus(root=None):
    """Returns (root, train, held_out): lists of (relative path, text)."""
    root = root or stdlib_root()
    train, held_out = [], []
    for rel in list_files(root):
        text = read_text(os.path.join(root, rel))
        if not text or not text.strip():
            continue
        (held_out if is_held_out(rel) else train).append((rel, text))
    return root, train, held_out


if __name__ == "__main__":
    root, train, held = load_corpus(sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps({
        "root": root,
        "train_files": len(train), "train_bytes": sum(len(t) for _, t in train),
        "held_out_files": len(held), "held_out_bytes": sum(len(t) for _, t in held),
    }, indent=2))
