"""Bytes to text: main-text extraction from HTML with trafilatura (bounded in time, see
MAX_ELEMENTS), and the text of PDFs with pypdf (the optional `pdf` extra; capped in bytes and
pages, see `extract_pdf`)."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import trafilatura
from trafilatura.utils import load_html

from tools.errors import ToolError

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


# --------------------------------------------------------------------------- PDF

# A PDF's text comes from its first MAX_PDF_PAGES pages, and a PDF over MAX_PDF_BYTES is not
# parsed: pypdf reads the whole cross-reference table, so cost grows with the file, and a
# research run wants the opening pages of a paper or report, not all of a 900-page manual.
MAX_PDF_PAGES = 50
MAX_PDF_BYTES = 20_000_000
PDF_EXTRA = "reading PDFs needs the pdf extra: pip install 'sleuth[pdf]' (or pip install pypdf)"


def is_pdf(raw: bytes) -> bool:
    """Whether bytes start like a PDF file (`%PDF-`, perhaps after a little junk, as readers allow)."""
    return b"%PDF-" in raw[:1024]


def _pdf_reader(raw: bytes, name: str) -> Any:
    """A pypdf reader of these bytes, decrypted when the password is empty; ToolError otherwise."""
    try:
        import pypdf
        from pypdf.errors import PyPdfError
    except ImportError:
        raise ToolError(PDF_EXTRA, kind="missing_extra", target=name) from None
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every repairable flaw
    try:
        reader = pypdf.PdfReader(io.BytesIO(raw), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):  # owner-only protection opens with ""
            raise ToolError(f"{name} is an encrypted PDF (password protected): its text cannot "
                            "be read", kind="encrypted", target=name)
        return reader
    except ToolError:
        raise
    except PyPdfError as e:  # DependencyError (AES without `cryptography`) is one of these
        kind = "encrypted" if "crypt" in str(e).lower() else "corrupt"
        raise ToolError(f"{name} is not a readable PDF ({kind}: {e})", kind=kind,
                        target=name) from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails deep in the parser, any type
        raise ToolError(f"{name} is not a readable PDF (corrupt: {type(e).__name__}: {e})",
                        kind="corrupt", target=name) from None


def extract_pdf(raw: bytes, *, name: str = "this file", max_pages: int = MAX_PDF_PAGES,
                max_bytes: int = MAX_PDF_BYTES) -> Extracted | None:
    """Title and text of a PDF's first `max_pages` pages; None when they hold no text (a scan).

    A file over `max_bytes`, an encrypted or corrupt PDF, and a missing `pdf` extra are each a
    `ToolError` (kinds `too_large`, `encrypted`, `corrupt`, `missing_extra`) naming `name`.
    `metadata` tells the pages read and the pages in the file (`pages_truncated` when capped).
    """
    if len(raw) > max_bytes:
        raise ToolError(f"{name} is a {len(raw):,}-byte PDF, over the {max_bytes:,}-byte cap",
                        kind="too_large", target=name)
    reader = _pdf_reader(raw, name)
    pages, texts = _pdf_pages(reader, name, max_pages)
    text = "\n\n".join(t.strip() for t in texts if t and t.strip())
    if not text:
        return None
    meta: dict[str, Any] = {"extractor": "pypdf", "pages": pages, "pages_read": len(texts)}
    if len(texts) < pages:
        meta["pages_truncated"] = True
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception:  # noqa: BLE001 - a broken info dictionary costs the title only
        title = ""
    return Extracted(title=" ".join(title.split()), text=text, metadata=meta)


def _pdf_pages(reader: Any, name: str, max_pages: int) -> tuple[int, list[str]]:
    """The number of pages, and the text of the first `max_pages` of them."""
    try:
        pages = len(reader.pages)
        return pages, [reader.pages[i].extract_text() or "" for i in range(min(pages, max_pages))]
    except Exception as e:  # noqa: BLE001 - as in _pdf_reader: damage surfaces as any type
        raise ToolError(f"{name} is not a readable PDF (corrupt: {type(e).__name__}: {e})",
                        kind="corrupt", target=name) from None
