"""Documents and the files they come from.

`Document` is what the knowledge base ingests and the corpus server serves. `load_documents`
reads the task JSONL format of `../shared/data` (its `docs`), corpus JSONL lines
(`{id|doc_id, title, text, url?}`), `.txt`, `.md`, `.html` and `.pdf` files (PDFs with the
`pdf` extra, capped in bytes and pages: `tools.extract.extract_pdf`), and folders of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from tools.text import clean_data, clean_text

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES | PDF_SUFFIXES


def content_id(title: str, text: str, prefix: str = "") -> str:
    """Return the id scheme of ../shared/data: `<prefix>:<first 16 hex of sha1(title\\ntext)>`."""
    digest = hashlib.sha1(clean_text(f"{title}\n{text}").encode()).hexdigest()[:16]
    return f"{prefix}:{digest}" if prefix else digest


class Document(BaseModel):
    """One source document: an encyclopedia page, a paragraph of a QA set, a file.

    Its strings are storable: lone surrogates (which a JSON `\\ud800` escape can produce) are
    replaced by U+FFFD when the document is built, so ingest never fails on encoding.
    """

    doc_id: str
    title: str = ""
    text: str
    url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return clean_data(data) if isinstance(data, dict) else data

    @field_validator("doc_id")
    @classmethod
    def _non_empty_id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("doc_id must not be empty")
        return v

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        """Build from `{doc_id|id?, title, text, url?, metadata?}`; a missing id becomes a content hash."""
        if not isinstance(d, dict):
            raise ValueError(f"a document must be a JSON object, got {type(d).__name__}")
        text = d.get("text")
        if not isinstance(text, str):
            raise ValueError("a document needs a string 'text' field")
        text, title = clean_text(text), clean_text(str(d.get("title") or ""))
        doc_id = d.get("doc_id") or d.get("id") or content_id(title, text)
        meta = dict(d.get("metadata") or {})
        for key in ("gold", "source"):
            if key in d and key not in meta:
                meta[key] = d[key]
        return cls(doc_id=str(doc_id), title=title, text=text, url=d.get("url"), metadata=meta)


def _json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a clear error names a bad line."""
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def _read_jsonl(path: Path) -> Iterator[Document]:
    for lineno, row in _json_lines(path):
        try:
            if isinstance(row, dict) and isinstance(row.get("docs"), list):  # a task line
                for d in row["docs"]:
                    yield Document.from_dict({**d, "source": row.get("source")})
            else:
                yield Document.from_dict(row)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None


def _read_text(path: Path, root: Path) -> Document:
    text = path.read_text(encoding="utf-8", errors="replace")
    heading = re.search(r"^#\s+(.+)$", text, flags=re.M) if path.suffix != ".txt" else None
    title = heading.group(1).strip() if heading else path.stem.replace("_", " ")
    rel = path.relative_to(root).as_posix() if path != root else path.name
    return Document(doc_id=rel, title=title, text=text, url=path.resolve().as_uri(),
                    metadata={"source": "file"})


def _read_html(path: Path, root: Path) -> Document | None:
    from tools.extract import extract_html  # trafilatura is slow to import; load on demand

    extracted = extract_html(path.read_bytes(), url=path.resolve().as_uri())
    if extracted is None:
        return None
    rel = path.relative_to(root).as_posix() if path != root else path.name
    return Document(doc_id=rel, title=extracted.title or path.stem, text=extracted.text,
                    url=path.resolve().as_uri(), metadata={"source": "file"})


def _read_pdf(path: Path, root: Path) -> Document | None:
    from tools.errors import ToolError
    from tools.extract import MAX_PDF_BYTES, extract_pdf

    size = path.stat().st_size
    if size > MAX_PDF_BYTES:  # refused before it is read into memory
        raise ToolError(f"{path} is a {size:,}-byte PDF, over the {MAX_PDF_BYTES:,}-byte cap",
                        kind="too_large", target=str(path))
    extracted = extract_pdf(path.read_bytes(), name=str(path))
    if extracted is None:  # a scan: pages of images, no text layer
        return None
    rel = path.relative_to(root).as_posix() if path != root else path.name
    return Document(doc_id=rel, title=extracted.title or path.stem.replace("_", " "),
                    text=extracted.text, url=path.resolve().as_uri(),
                    metadata={"source": "file", **extracted.metadata})


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, Path]]:
    """Yield `(file, root)` for every supported file under the given files and folders."""
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield f, p
        elif p.suffix.lower() in SUPPORTED_SUFFIXES:
            yield p, p.parent
        else:
            raise ValueError(f"{p}: unsupported file type {p.suffix!r} "
                             f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")


def load_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    """Read documents from files and folders, de-duplicated by `doc_id` (first wins)."""
    seen: set[str] = set()
    for f, root in iter_files(paths):
        suffix = f.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            docs: Iterable[Document | None] = _read_jsonl(f)
        elif suffix in HTML_SUFFIXES:
            docs = [_read_html(f, root)]
        elif suffix in PDF_SUFFIXES:
            docs = [_read_pdf(f, root)]
        else:
            docs = [_read_text(f, root)]
        for doc in docs:
            if doc is not None and doc.doc_id not in seen and doc.text.strip():
                seen.add(doc.doc_id)
                yield doc


def as_documents(docs: Iterable[Document | dict[str, Any]]) -> Iterator[Document]:
    """Coerce dicts to `Document`s, leaving `Document`s as they are."""
    for d in docs:
        yield d if isinstance(d, Document) else Document.from_dict(d)


def read_tasks(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a task JSONL file (the ../shared/data format), at most `limit`."""
    rows: list[dict[str, Any]] = []
    for lineno, row in _json_lines(path):
        if limit is not None and len(rows) >= limit:
            break
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise ValueError(f"{path}:{lineno}: a task needs a 'question' string")
        rows.append(row)
    return rows
