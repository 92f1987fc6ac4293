"""Main-text extraction from HTML bytes with trafilatura (bounded in time, see MAX_ELEMENTS)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import trafilatura
from trafilatura.utils import load_html

# trafilatura logs every unparsable body at ERROR level; we report those as ToolErrors instead.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

# trafilatura's main-text search grows faster than linearly with the number of elements (a
# 0.8 MB page of 57k tiny paragraphs took 8 s on this 2-core machine, a 2 MB one up to 25 s, past
# the fetch's whole time budget) and cannot be stopped once started: it has no timeout option
# and a thread cannot be killed. So a cheap byte scan counts the elements first; a page with
# more than MAX_ELEMENTS (about 1-2 s of trafilatura) gets the linear all-visible-text
# extraction instead (html2txt: one lxml parse), and its metadata says so. A count, not a
# clock, decides, so a replayed run extracts the same text on any machine.
MAX_ELEMENTS = 20_000
_OPEN_TAG = re.compile(rb"<[A-Za-z]")

_META_KEYS = ("author", "date", "description", "sitename", "hostname", "categories", "tags",
              "language")


@dataclass
class Extracted:
    """Title, main text and metadata of one HTML page."""

    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def extract_html(raw: bytes, url: str | None = None) -> Extracted | None:
    """Extract main text, title and metadata from raw HTML bytes; None when no text is found.

    Bytes, not decoded text, go to trafilatura: it reads the charset from the document
    (a latin-1 page without a charset header is mangled by a wrong `r.text`). Pages too short
    for trafilatura's main-text heuristics fall back to all visible text, and so do pages with
    more than `MAX_ELEMENTS` elements (`metadata["extractor"] == "fallback"`).
    """
    n_elements = len(_OPEN_TAG.findall(raw))
    if n_elements > MAX_ELEMENTS:
        return _linear(raw, f"{n_elements} elements > {MAX_ELEMENTS}")
    doc = trafilatura.bare_extraction(raw, url=url, with_metadata=True, include_comments=False,
                                      favor_recall=True)
    text = (doc.text if doc is not None else None) or ""
    if not text.strip():
        text = trafilatura.html2txt(raw) or ""
    if not text.strip():
        return None
    title = (doc.title if doc is not None else None) or ""
    meta: dict[str, Any] = {}
    if doc is not None:
        for key in _META_KEYS:
            value = getattr(doc, key, None)
            if value:
                meta[key] = value
    return Extracted(title=title.strip(), text=text.strip(), metadata=meta)


def _linear(raw: bytes, reason: str) -> Extracted | None:
    """All visible text and the <title>, in time linear in the page's size."""
    tree = load_html(raw)
    if tree is None:
        return None
    # html2txt drops scripts and styles but reads only a <body>; a bare fragment has none
    text = trafilatura.html2txt(raw) or " ".join(tree.text_content().split())
    if not text.strip():
        return None
    title = tree.findtext(".//title")
    return Extracted(title=" ".join((title or "").split()), text=text.strip(),
                     metadata={"extractor": "fallback", "fallback_reason": reason})
