"""Sentence-aware chunking with overlap.

Chunks are packed from whole sentences up to `max_words` words; consecutive chunks share
their last `overlap` sentences. A sentence longer than `max_words` is cut into word windows.
all-MiniLM-L6-v2 reads at most 256 word pieces, so the default of 120 words keeps a chunk
(plus its title) inside what the embedder sees.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace and an
# upper-case letter, digit or quote; common abbreviations are not ends.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|etc|e\.g|i\.e|No|Vol|Inc|Ltd|Co|"
                     r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (paragraph breaks always end a sentence)."""
    sentences: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        start = 0
        for m in _BOUNDARY.finditer(para):
            # an abbreviation is at most 5 characters: look at the sentence's tail only, so a
            # run of initials ("A. B. C. ...") costs linear time, not quadratic
            if _ABBREV.search(para, max(start, m.start() - 8), m.start()):
                continue
            candidate = para[start:m.start()].strip()
            if candidate:
                sentences.append(candidate)
            start = m.end()
        tail = para[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def _windows(sentence: str, max_words: int) -> list[str]:
    words = sentence.split()
    return [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]


def chunk_text(text: str, max_words: int = 120, overlap: int = 1) -> list[str]:
    """Cut text into chunks of whole sentences, each at most `max_words` words."""
    if max_words < 1:
        raise ValueError("max_words must be >= 1")
    if overlap < 0:
        raise ValueError("overlap must be >= 0")
    units: list[str] = []
    for s in split_sentences(text):
        units.extend(_windows(s, max_words) if len(s.split()) > max_words else [s])
    chunks: list[str] = []
    current: list[str] = []
    n_words = 0
    fresh = 0  # sentences in `current` that no earlier chunk holds
    for unit in units:
        w = len(unit.split())
        if current and n_words + w > max_words:
            chunks.append(" ".join(current))
            current = current[-overlap:] if overlap else []
            n_words = sum(len(u.split()) for u in current)
            while current and n_words + w > max_words:  # the overlap itself must fit
                n_words -= len(current.pop(0).split())
            fresh = 0
        current.append(unit)
        n_words += w
        fresh += 1
    if current and fresh:
        chunks.append(" ".join(current))
    return chunks
