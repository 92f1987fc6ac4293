"""Word-level text helpers shared by BM25 ranking and lexical relevance checks."""

from __future__ import annotations

import re
import string

_TOKEN = re.compile(r"\w+", re.UNICODE)
_PUNCT = frozenset(string.punctuation)
STOP_WORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the "
    "their they this to was were what when where which who whom whose why how with did does do "
    "not no yes than then there these those also into about after before".split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS]


def overlap(query: str, text: str) -> float:
    """Share of the query's distinct content words that occur in the text (0..1)."""
    q = set(tokenize(query))
    if not q:
        return 0.0
    return len(q & set(tokenize(text))) / len(q)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())
