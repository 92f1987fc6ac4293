"""Main-text extraction from HTML bytes with trafilatura."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trafilatura

# trafilatura logs every unparsable body at ERROR level; we report those as ToolErrors instead.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

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
    for trafilatura's main-text heuristics fall back to all visible text.
    """
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
