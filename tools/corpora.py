"""Task documents -> something to search: the one place a task file becomes a corpus.

A corpus is the de-duplicated union of the tasks' `docs` (`corpus_of`). `open_corpus` turns
it into the sources a research run searches: a knowledge base (an explicit folder, built
from the docs when absent, or one cached per distinct corpus under `$SLEUTH_HOME/kb-cache/`)
or a web (the corpus server over the docs on loopback, or a given search URL when the tasks
carry no docs). `sleuth record`, `sleuth eval`, evaluation and GRPO all come through here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tools.corpus_server import CorpusServer
from tools.embeddings import Embedder, MiniLMEmbedder
from tools.knowledge import KnowledgeBase
from tools.paths import is_uri, sleuth_home

Backend = Literal["kb", "web"]
COMPLETE = ".complete"  # written after a cached build finished; absent = rebuild
NO_DOCS = ("the tasks carry no documents (Bamboogle ships none), so there is no corpus to search: "
           "give a search URL with the web backend (--backend web --search-url URL / "
           "backend='web', search_url=URL) or an existing knowledge base (--kb DIR / kb=DIR)")


def corpus_of(tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The de-duplicated union of the tasks' documents (by `doc_id`, last one wins)."""
    return list({d["doc_id"]: dict(d) for t in tasks for d in t.get("docs") or []}.values())


def corpus_key(docs: Sequence[Mapping[str, Any]], embedder: str = MiniLMEmbedder.name) -> str:
    """A content hash of the documents (doc_id, title, text) and the embedder's name."""
    h = hashlib.sha256(f"{embedder}\x02".encode())
    for d in sorted(docs, key=lambda d: d["doc_id"]):
        h.update(f"{d['doc_id']}\x00{d.get('title', '')}\x00{d['text']}\x01".encode())
    return h.hexdigest()[:16]


def cached_kb(docs: Sequence[Mapping[str, Any]], root: Path | None = None, *,
              embedder: Embedder | None = None) -> KnowledgeBase:
    """A knowledge base of these documents, built once per distinct corpus.

    It lives in `root` (default `$SLEUTH_HOME/kb-cache`) under the corpus's content hash; a
    build that did not finish (no completion marker) is resumed by the next call.
    """
    name = embedder.name if embedder is not None else MiniLMEmbedder.name
    path = Path(root or sleuth_home() / "kb-cache") / corpus_key(docs, name)
    kb = KnowledgeBase(path, embedder=embedder)
    if len(kb) == 0 or not (path / COMPLETE).exists():
        kb.ingest(list(docs))
        (path / COMPLETE).touch()
    return kb


@dataclass
class Sources:
    """What a research run searches: a knowledge base and/or a search URL."""

    knowledge: KnowledgeBase | None = None
    web: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The `knowledge=` / `web=` keyword arguments of `graph.run.research_many`."""
        return {"knowledge": self.knowledge, "web": self.web}


def _needs_build(path: Path) -> bool:
    if path.is_file():
        raise ValueError(f"knowledge base {path} is a file: give a folder (--kb DIR / kb=DIR)")
    return not path.exists() or not any(path.iterdir())


def _knowledge(docs: list[dict[str, Any]], kb: str | Path | None,
               root: Path | None) -> KnowledgeBase:
    if kb is None:
        if not docs:
            raise ValueError(NO_DOCS)
        return cached_kb(docs, root)
    if is_uri(kb):  # a remote LanceDB: built from the docs while it holds no passages
        knowledge = KnowledgeBase(kb)
        if len(knowledge) == 0 and docs:
            knowledge.ingest(docs)
        return knowledge
    path = Path(kb)
    if not _needs_build(path):
        return KnowledgeBase(path)
    if not docs:
        raise ValueError(f"no knowledge base at {path} and no task documents to build it "
                         f"from. {NO_DOCS}")
    knowledge = KnowledgeBase(path)
    knowledge.ingest(docs)
    return knowledge


@contextmanager
def _web(docs: list[dict[str, Any]], search_url: str | None) -> Iterator[Sources]:
    if not docs:
        if not search_url:
            raise ValueError(NO_DOCS)
        yield Sources(web=search_url)
        return
    with CorpusServer(docs) as server:
        yield Sources(web=server.url)


@contextmanager
def open_corpus(tasks: Iterable[Mapping[str, Any]], *, backend: Backend = "kb",
                kb: str | Path | None = None, search_url: str | None = None,
                root: Path | None = None) -> Iterator[Sources]:
    """The sources to research these tasks over; a corpus server stops on exit.

    backend "kb": the knowledge base folder `kb` (built from the tasks' docs when it does not
    exist yet or is empty) or, without `kb`, the cached knowledge base of the docs (`root`).
    backend "web": the corpus server over the tasks' docs on loopback, or `search_url` when
    the tasks carry no docs. `ValueError` when there is nothing to search.
    """
    docs = corpus_of(tasks)
    if backend == "kb":
        yield Sources(knowledge=_knowledge(docs, kb, root))
    elif backend == "web":
        with _web(docs, search_url) as sources:
            yield sources
    else:
        raise ValueError(f"backend is 'kb' or 'web', not {backend!r}")


__all__ = ["NO_DOCS", "Sources", "cached_kb", "corpus_key", "corpus_of", "open_corpus"]
