"""Word-level text helpers shared by BM25 ranking and lexical relevance checks, and the one
place that makes text storable (`clean_text`: no lone surrogates)."""

from __future__ import annotations

import re
import string
from typing import Any

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


def clean_text(text: str) -> str:
    """The text with every lone surrogate (e.g. from a bad JSON escape) replaced by U+FFFD.

    Python strings may hold lone surrogates; UTF-8, JSON writers and Arrow reject them. Text
    entering storage goes through here once. A valid surrogate pair joins into its character.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean_data(value: Any) -> Any:
    """`clean_text` applied to every string (keys included) inside dicts, lists and tuples."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_data(v) for v in value)
    return value
