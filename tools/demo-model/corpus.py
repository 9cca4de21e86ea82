"""The corpus: the Python standard library of the `python3` first on PATH, plus the Python sources of permissively
licensed Debian packages, each file split by a hash of its path.

A fixed tenth of the files is held out (never trained on); the development repair cases, the regression prompts
and the held-out figures come from the standard library's held-out tenth. The Debian packages are read from the
files `dpkg -L` lists for each package of PACKAGES (its licence as `/usr/share/doc/<package>/copyright` states
it); a package missing here is skipped and reported. `pip`, `setuptools` and `wheel` are never trained on: they are
the "unlike code" of the evaluation (UNLIKE_PACKAGES).
"""
import hashlib
import json
import os
import subprocess
import sys

HELD_OUT_BUCKETS = 10  # one bucket of ten is held out
DIST = "/usr/lib/python3/dist-packages"
# Debian package -> licence of its Python sources (debian/copyright, `Files: *`). Install them with
#   apt-get install -y <the names below>
PACKAGES = {
    "python3-argcomplete": "Apache-2.0",
    "python3-astunparse": "BSD-3-clause",
    "python3-attr": "MIT (Expat)",
    "python3-blinker": "MIT (Expat)",
    "python3-charset-normalizer": "MIT (Expat)",
    "python3-click": "BSD-3-clause",
    "python3-cryptography": "Apache-2.0 or BSD-3-clause",
    "python3-dateutil": "BSD-3-clause",
    "python3-distro": "Apache-2.0",
    "python3-flask": "BSD-3-clause",
    "python3-idna": "BSD-3-clause",
    "python3-itsdangerous": "BSD-3-clause",
    "python3-jinja2": "BSD-3-clause",
    "python3-jwt": "MIT (Expat)",
    "python3-markupsafe": "BSD-3-clause",
    "python3-mpmath": "BSD-3-clause",
    "python3-networkx": "BSD-3-clause",
    "python3-numpy": "BSD-3-clause",
    "python3-oauthlib": "BSD-3-clause",
    "python3-onnx": "Apache-2.0",
    "python3-packaging": "Apache-2.0 or BSD-2-clause",
    "python3-pluggy": "MIT (Expat)",
    "python3-psutil": "BSD-3-clause",
    "python3-pygments": "BSD-2-clause",
    "python3-pyparsing": "MIT (Expat)",
    "python3-requests": "Apache-2.0",
    "python3-six": "MIT (Expat)",
    "python3-sortedcontainers": "Apache-2.0",
    "python3-sympy": "BSD-3-clause",
    "python3-toml": "MIT (Expat)",
    "python3-torch": "BSD-3-clause",
    "python3-typing-extensions": "PSF-2.0",
    "python3-urllib3": "MIT (Expat)",
    "python3-werkzeug": "BSD-3-clause",
    "python3-xmltodict": "MIT (Expat)",
}
PACKAGE_CAP_BYTES = 1_500_000  # at most this much of one package (files in hash order), so none dominates
FILE_CAP_BYTES = 150_000  # larger files of a package are data tables (lexer maps, Unicode tables), not code
UNLIKE_PACKAGES = ("python3-pip", "python3-setuptools", "python3-wheel")  # never trained on: evaluation only


def stdlib_root():
    # The pyenv python3 on PATH, not /usr/bin/python3 that runs this script.
    out = subprocess.run(
        ["env", "-u", "PYTHONHOME", "python3", "-c",
         "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    return out.stdout.strip()


def path_hash(rel_path):
    return hashlib.sha256(rel_path.encode("utf-8")).digest()


def is_held_out(rel_path):
    return path_hash(rel_path)[0] % HELD_OUT_BUCKETS == 0


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


def package_files(package):
    """The .py files (paths relative to DIST) that `dpkg -L package` lists; [] where it is not installed."""
    out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return sorted(os.path.relpath(p, DIST) for p in out.stdout.split("\n")
                  if p.startswith(DIST + "/") and p.endswith(".py") and os.path.isfile(p))


def load_packages():
    """Returns (train, held_out, facts): (path, text) lists of the Debian packages' files, with paths
    `dist-packages/<relative path>`, and per package {licence, files, bytes} or {missing: True}."""
    train, held_out, facts = [], [], {}
    for package, licence in PACKAGES.items():
        rels = package_files(package)
        if not rels:
            facts[package] = {"licence": licence, "missing": True}
            continue
        size, n = 0, 0
        for rel in sorted(rels, key=path_hash):
            text = read_text(os.path.join(DIST, rel))
            if not text or not text.strip() or len(text) > FILE_CAP_BYTES or size + len(text) > PACKAGE_CAP_BYTES:
                continue
            key = "dist-packages/" + rel
            (held_out if is_held_out(key) else train).append((key, text))
            size += len(text)
            n += 1
        facts[package] = {"licence": licence, "files": n, "bytes": size}
    return train, held_out, facts


def unlike_files():
    """(path, text) of pip, setuptools and wheel as Debian installs them: code the model never trained on."""
    docs = []
    for package in UNLIKE_PACKAGES:
        for rel in package_files(package):
            text = read_text(os.path.join(DIST, rel))
            if text and text.strip():
                docs.append(("dist-packages/" + rel, text))
    return docs


def load_corpus(root=None):
    """Returns (root, train, held_out): lists of (relative path, text) of the standard library only."""
    root = root or stdlib_root()
    train, held_out = [], []
    for rel in list_files(root):
        text = read_text(os.path.join(root, rel))
        if not text or not text.strip():
            continue
        (held_out if is_held_out(rel) else train).append((rel, text))
    return root, train, held_out


def load_training(root=None):
    """Returns (root, train, stdlib held out, package facts): the training files are the standard library's and
    the Debian packages' (never their held-out tenths, never pip, setuptools or wheel)."""
    root, train, held = load_corpus(root)
    ptrain, _pheld, facts = load_packages()
    names = {p for _, p in ptrain}
    assert not any(p.startswith("dist-packages/" + u) for p in names for u in ("pip/", "setuptools/", "wheel/"))
    return root, train + ptrain, held, facts


if __name__ == "__main__":
    root, train, held, facts = load_training(sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps({
        "root": root,
        "train_files": len(train), "train_bytes": sum(len(t) for _, t in train),
        "held_out_files": len(held), "held_out_bytes": sum(len(t) for _, t in held),
        "packages": facts,
        "unlike_bytes": sum(len(t) for _, t in unlike_files()),
    }, indent=2))
