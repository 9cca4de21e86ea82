import re


def count_words(text):
    words = re.findall(r"[A-Za-z']+", text)
    counts = {}
    for word in words:
        word = word.lower()
        counts[word] = counts.get(word, 0) + 1
    return counts


def top_words(text, n=10):
    counts = count_words(text)
    ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    return ranked[:n]


def read_lines(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f]


def is_palindrome(text):
    cleaned = "".join(ch.lower() for ch in text if ch.isalnum())
    return cleaned == cleaned[::-1]
