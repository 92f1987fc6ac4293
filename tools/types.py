"""The plain data types the layers exchange: passages, search hits, pages, and the protocols
of the things that produce them.

This module imports nothing but pydantic, so agents, graph state and training can name these
types without loading LanceDB, httpx or trafilatura.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class Passage(BaseModel):
    """A chunk of a document returned by a search, with the score that ranked it."""

    chunk_id: str
    doc_id: str
    title: str = ""
    text: str
    url: str | None = None
    score: float = 0.0
    chunk_index: int = 0
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchHit(BaseModel):
    """One search result: where it points and why it matched."""

    title: str
    url: str
    snippet: str = ""
    score: float | None = None
    rank: int = 0
    source: str = ""
    doc_id: str | None = None


class Page(BaseModel):
    """A fetched page reduced to its main text."""

    url: str
    requested_url: str
    status: int
    content_type: str
    title: str = ""
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    truncated: bool = False
    n_bytes: int = 0


@runtime_checkable
class Retriever(Protocol):
    """Maps a query to at most k passages, best first."""

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """Return at most k passages."""
        ...


@runtime_checkable
class SearchBackend(Protocol):
    """A web search engine: `search(query, k)` and its async twin."""

    name: str

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Return at most k hits for the query, best first."""
        ...

    async def asearch(self, query: str, k: int = 5) -> list[SearchHit]:
        """Async `search`."""
        ...


__all__ = ["Page", "Passage", "Retriever", "SearchBackend", "SearchHit"]
