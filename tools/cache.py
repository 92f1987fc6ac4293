"""Record/replay cache for search and fetch, in SQLite.

Modes:
- ``off``: every call goes through; nothing is stored.
- ``record``: the first response to each call (hits, page, or the `ToolError`) is stored and
  returned for every later identical call, so a recorded run sees one consistent web.
- ``replay``: only stored responses are returned; a call never recorded raises `ReplayMiss`.
  A replayed evaluation or RL run is therefore exactly repeatable without the network.

Keys are (kind, namespace, request): a search is keyed by the backend's name (override it
with `namespace=`, e.g. when the corpus server runs on a different port each time), the
query and k; a fetch by its URL; a retrieval (`CachedRetriever`, e.g. around a
`KnowledgeBase`) by the retriever's name, the query, k and the search options.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from tools.errors import ReplayMiss, ToolError
from tools.types import Page, Passage, SearchBackend, SearchHit
from tools.web import fetch_page

CacheMode = Literal["off", "record", "replay"]
MODES = ("off", "record", "replay")
_MISSING = object()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
)"""


class ToolCache:
    """A SQLite file of recorded tool responses, safe to share between threads and processes."""

    def __init__(self, path: str | Path, mode: CacheMode = "record"):
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {MODES}, got {mode!r}")
        self.path = Path(path)
        self.mode: CacheMode = mode
        self._lock = threading.Lock()
        if mode == "replay" and not self.path.exists():
            raise FileNotFoundError(f"replay cache {self.path} does not exist: record it first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    @staticmethod
    def _key(kind: str, request: dict[str, Any]) -> str:
        blob = json.dumps([kind, request], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, kind: str, request: dict[str, Any]) -> Any | None:
        """Return the stored response of a call, or None."""
        with self._lock:
            row = self._db.execute("SELECT response FROM calls WHERE key = ?",
                                   (self._key(kind, request),)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, request: dict[str, Any], response: Any) -> None:
        """Store a response unless one is stored already (the first response wins)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO calls (key, kind, request, response, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self._key(kind, request), kind, json.dumps(request, ensure_ascii=False),
                 json.dumps(response, ensure_ascii=False), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _answer(self, kind: str, request: dict[str, Any]) -> Any:
        stored = self.get(kind, request)
        if stored is None:
            if self.mode == "replay":
                raise ReplayMiss(f"replay cache {self.path} has no {kind} call {request}; "
                                 "record it first with mode='record'", target=str(request))
            return _MISSING
        if "error" in stored:
            err = stored["error"]
            raise ToolError(err["message"], kind=err["kind"], target=err.get("target"))
        return stored["ok"]

    def call(self, kind: str, request: dict[str, Any], run: Callable[[], Any]) -> Any:
        """Answer a call from the cache according to the mode, running `run()` when needed.

        `run` returns a JSON-ready response or raises `ToolError`; errors are recorded too,
        and replayed as the same `ToolError`.
        """
        if self.mode == "off":
            return run()
        answer = self._answer(kind, request)
        if answer is _MISSING:
            try:
                self.put(kind, request, {"ok": run()})
            except ToolError as e:
                self.put(kind, request, {"error": e.to_dict()})
            answer = self._answer(kind, request)  # a concurrent recorder may have won
        return answer

    async def acall(self, kind: str, request: dict[str, Any],
                    run: Callable[[], Awaitable[Any]]) -> Any:
        """Async `call`: `run()` returns an awaitable."""
        if self.mode == "off":
            return await run()
        answer = self._answer(kind, request)
        if answer is _MISSING:
            try:
                self.put(kind, request, {"ok": await run()})
            except ToolError as e:
                self.put(kind, request, {"error": e.to_dict()})
            answer = self._answer(kind, request)
        return answer


class CachedSearch:
    """A `SearchBackend` that answers through a `ToolCache`."""

    def __init__(self, backend: SearchBackend, cache: ToolCache, *, namespace: str | None = None):
        self.backend = backend
        self.cache = cache
        self.name = namespace or backend.name

    @property
    def base_url(self) -> str | None:
        """The backend's endpoint (a web retriever trusts its origin for page fetches)."""
        return getattr(self.backend, "base_url", None)

    def _request(self, query: str, k: int) -> dict[str, Any]:
        return {"backend": self.name, "query": query, "k": k}

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Return at most k hits, from the cache when recorded."""
        rows = self.cache.call("search", self._request(query, k),
                               lambda: [h.model_dump() for h in self.backend.search(query, k)])
        return [SearchHit.model_validate(r) for r in rows]

    async def asearch(self, query: str, k: int = 5) -> list[SearchHit]:
        """Async `search`: the backend's own `asearch` on a miss."""
        async def run() -> list[dict[str, Any]]:
            return [h.model_dump() for h in await self.backend.asearch(query, k)]

        rows = await self.cache.acall("search", self._request(query, k), run)
        return [SearchHit.model_validate(r) for r in rows]


class CachedFetch:
    """`fetch_page` through a `ToolCache`: call it like `fetch_page(url, **options)`."""

    def __init__(self, cache: ToolCache, fetch: Callable[..., Page] = fetch_page):
        self.cache = cache
        self.fetch = fetch

    def __call__(self, url: str, **kwargs: Any) -> Page:
        """Return the page at `url`, from the cache when recorded."""
        data = self.cache.call("fetch", {"url": url},
                               lambda: self.fetch(url, **kwargs).model_dump())
        return Page.model_validate(data)


class CachedRetriever:
    """Any retriever (`search(query, k, **options) -> list[Passage]`, e.g. a `KnowledgeBase`)
    answering through a `ToolCache`; its `retriever` is the wrapped one."""

    def __init__(self, retriever: Any, cache: ToolCache, *, namespace: str | None = None):
        self.retriever = retriever
        self.cache = cache
        self.name = namespace or getattr(retriever, "name", None) or type(retriever).__name__

    def search(self, query: str, k: int = 5, **options: Any) -> list[Passage]:
        """Return the retriever's passages for the query, from the cache when recorded."""
        request = {"retriever": self.name, "query": query, "k": k, **options}
        rows = self.cache.call("retrieve", request, lambda: [
            p.model_dump(mode="json") for p in self.retriever.search(query, k=k, **options)])
        return [Passage.model_validate(r) for r in rows]
