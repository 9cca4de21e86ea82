"""A byte-level BPE trained on the corpus and saved as a Hugging Face `tokenizer.json`.

Pre-tokenization is GPT-2's regex (so a newline keeps the indentation after it, and a space joins the word
after it), bytes are mapped to printable characters the way GPT-2 does, and merges are learnt greedily with
incremental pair counts and a lazy heap, which keeps training to seconds in plain Python.
"""
import collections
import heapq
import json

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL = "<|endoftext|>"


def bytes_to_unicode():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


BYTE_CHARS = bytes_to_unicode()
_PRETOKENIZE = regex.compile(GPT2_PATTERN)


def pretokenize(text):
    return [("".join(BYTE_CHARS[b] for b in piece.encode("utf-8"))) for piece in _PRETOKENIZE.findall(text)]


def train(texts, vocab_size):
    words = collections.Counter()
    for text in texts:
        words.update(pretokenize(text))
    symbols = [SPECIAL] + [BYTE_CHARS[b] for b in range(256)]
    index = {s: i for i, s in enumerate(symbols)}
    word_list = [[index[c] for c in w] for w in words]
    freqs = list(words.values())

    pair_counts = collections.Counter()
    pair_words = collections.defaultdict(set)
    for wi, w in enumerate(word_list):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] += freqs[wi]
            pair_words[(a, b)].add(wi)
    heap = [(-c, symbols[p[0]], symbols[p[1]], p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(symbols) < vocab_size and heap:
        neg, _, _, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale: every change of a count pushed a fresh entry
        if -neg < 2:
            break
        new_id = len(symbols)
        symbols.append(symbols[pair[0]] + symbols[pair[1]])
        merges.append(pair)
        touched = set()
        for wi in list(pair_words[pair]):
            w = word_list[wi]
            f = freqs[wi]
            for p in zip(w, w[1:]):
                pair_counts[p] -= f
                touched.add(p)
            merged, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == pair[0] and w[i + 1] == pair[1]:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(w[i])
                    i += 1
            word_list[wi] = merged
            for p in zip(merged, merged[1:]):
                pair_counts[p] += f
                pair_words[p].add(wi)
                touched.add(p)
        del pair_counts[pair]
        del pair_words[pair]
        for p in touched:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, symbols[p[0]], symbols[p[1]], p))
            elif p in pair_counts:
                del pair_counts[p]
    merge_strings = [(symbols[a], symbols[b]) for a, b in merges]
    return symbols, merge_strings


class Encoder:
    """Encodes text with the learnt merges, exactly as the Hugging Face BPE model does (lowest rank first)."""

    def __init__(self, symbols, merges):
        self.vocab = {s: i for i, s in enumerate(symbols)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.cache = {}

    def encode_word(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        out = []
        for word in pretokenize(text):
            out.extend(self.encode_word(word))
        return out

    def decode(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        byte_of = {c: b for b, c in BYTE_CHARS.items()}
        data = bytearray()
        for i in ids:
            s = inverse[i]
            if s == SPECIAL:
                continue
            data.extend(byte_of[c] for c in s)
        return data.decode("utf-8", errors="replace")


def tokenizer_json(symbols, merges):
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": SPECIAL, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(symbols)},
                  "merges": [a + " " + b for a, b in merges]},
    }


def tokenizer_config_json(context):
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL, "eos_token": SPECIAL, "unk_token": SPECIAL,
        "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
    }
