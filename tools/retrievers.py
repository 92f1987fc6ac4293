"""Retrievers: anything that turns a query into `Passage`s.

`KnowledgeBase` is one. `WebRetriever` is the web's: it searches a `SearchBackend`, fetches
the top pages behind the SSRF guard, cuts them into chunks and keeps the chunks that best
match the query. A hit whose page cannot be fetched still yields its snippet, marked as such,
and the failure goes to the caller's `on_fetch_error` (agents record it as a failed tool call).

The search endpoint's own origin (`host:port` of the backend's `base_url`) is allow-listed for
page fetches, since the corpus server serves its pages there; other ports of that host, and
anything its results or redirects point at, go through the SSRF guard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tools.chunking import chunk_text
from tools.errors import ToolError
from tools.text import overlap
from tools.types import Page, Passage, SearchBackend
from tools.web import allow_entry, fetch_page


class WebRetriever:
    """Search the web (or the corpus server), fetch the best pages, return their best chunks."""

    def __init__(self, backend: SearchBackend, *, pages: int = 3, chunks_per_page: int = 2,
                 allow_hosts: Iterable[str] = (), fetch: Callable[..., Page] = fetch_page,
                 chunk_words: int = 120, fetch_options: dict[str, Any] | None = None):
        self.backend = backend
        self.name = f"web:{backend.name}"
        self.pages = pages
        self.chunks_per_page = chunks_per_page
        self.allow_hosts = list(allow_hosts)
        endpoint = getattr(backend, "base_url", None)
        if isinstance(endpoint, str) and "://" in endpoint:
            self.allow_hosts.append(allow_entry(endpoint))
        self.fetch = fetch
        self.chunk_words = chunk_words
        self.fetch_options = dict(fetch_options or {})
        self.fetch_errors: list[ToolError] = []

    def search(self, query: str, k: int = 5, *,
               on_fetch_error: Callable[[str, ToolError], None] | None = None) -> list[Passage]:
        """Return at most k passages from the top pages for the query.

        A page that cannot be fetched is reported to `on_fetch_error(url, error)` and replaced
        by its hit's snippet.
        """
        hits = self.backend.search(query, k=max(k, self.pages))
        passages: list[Passage] = []
        for hit in hits[:self.pages]:
            doc_id = hit.doc_id or hit.url
            try:
                page = self.fetch(hit.url, allow_hosts=self.allow_hosts, **self.fetch_options)
            except ToolError as e:
                self.fetch_errors.append(e)
                if on_fetch_error is not None:
                    on_fetch_error(hit.url, e)
                if hit.snippet:
                    passages.append(Passage(chunk_id=f"{doc_id}#snippet", doc_id=doc_id,
                                            title=hit.title, text=hit.snippet, url=hit.url,
                                            score=0.0, source=hit.source,
                                            metadata={"snippet_only": True, "error": e.message}))
                continue
            chunks = chunk_text(page.text, self.chunk_words, overlap=1) or [page.text[:1000]]
            ranked = sorted(enumerate(chunks), key=lambda ic: -overlap(query, ic[1]))
            for i, chunk in ranked[:self.chunks_per_page]:
                passages.append(Passage(chunk_id=f"{doc_id}#{i}", doc_id=doc_id,
                                        title=page.title or hit.title, text=chunk, url=page.url,
                                        score=overlap(query, chunk) + 1.0 / max(hit.rank, 1),
                                        chunk_index=i, source=hit.source))
        passages.sort(key=lambda p: -p.score)
        return passages[:k]
