"""tools/corpora.py: task docs become a cached knowledge base, a folder, or a served web."""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tools.corpora import Sources, cached_kb, corpus_of, open_corpus
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase


class CountingEmbedder(HashEmbedder):
    """The fast test embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def embed(self, texts):
        self.texts += len(texts)
        return super().embed(texts)


def test_corpus_of_is_the_deduplicated_union(small_world):
    tasks = small_world.tasks[:5]
    ids = [d["doc_id"] for t in tasks for d in t["docs"]]
    docs = corpus_of(tasks)
    assert len(ids) > len(set(ids))  # the tasks share documents
    assert sorted(d["doc_id"] for d in docs) == sorted(set(ids))
    assert corpus_of([{"question": "q"}]) == []


def test_cached_kb_builds_once_per_corpus(small_world, tmp_path, monkeypatch):
    ingests = []
    real_ingest = KnowledgeBase.ingest

    def counted(self, docs, **kwargs):
        ingests.append(self.path)
        return real_ingest(self, docs, **kwargs)
    monkeypatch.setattr(KnowledgeBase, "ingest", counted)
    docs = corpus_of(small_world.tasks[:3])
    first = CountingEmbedder()
    kb = cached_kb(docs, tmp_path, embedder=first)
    assert first.texts > 0 and len(kb) > 0 and ingests == [kb.path]
    again = CountingEmbedder()
    same = cached_kb(list(reversed(docs)), tmp_path, embedder=again)
    assert same.path == kb.path and again.texts == 0 and ingests == [kb.path]
    other = cached_kb(docs[:-1], tmp_path, embedder=CountingEmbedder())
    assert other.path != kb.path and len(ingests) == 2
    (kb.path / ".complete").unlink()  # a build that did not finish is completed next time
    resumed = cached_kb(docs, tmp_path, embedder=CountingEmbedder())
    assert resumed.path == kb.path and ingests[-1] == kb.path and len(ingests) == 3
    assert (kb.path / ".complete").exists()


def test_web_backend_serves_the_docs_and_stops_on_exit(small_world):
    task = small_world.tasks[0]
    with open_corpus([task], backend="web") as sources:
        assert sources.knowledge is None and sources.web
        hits = httpx.get(f"{sources.web}/search", params={"q": task["question"],
                                                          "format": "json"}).json()["results"]
        served = {unquote(urlsplit(h["url"]).path.removeprefix("/doc/")) for h in hits}
        assert served and served <= {d["doc_id"] for d in task["docs"]}
    url = urlsplit(sources.web)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((url.hostname, url.port), timeout=2).close()


def test_tasks_without_docs(tmp_path):
    tasks = [{"id": "b1", "question": "Who was president when the tallest tower opened?"}]
    for backend in ("kb", "web"):
        with pytest.raises(ValueError, match="no documents") as e:
            with open_corpus(tasks, backend=backend, root=tmp_path):
                pass
        assert "--search-url" in str(e.value) and "search_url=" in str(e.value)
        assert "Bamboogle" in str(e.value)
    with open_corpus(tasks, backend="web", search_url="http://127.0.0.1:9") as sources:
        assert sources == Sources(web="http://127.0.0.1:9")
        assert sources.as_kwargs() == {"knowledge": None, "web": "http://127.0.0.1:9"}


def test_explicit_kb_folder_is_built_from_the_docs_then_reused(small_world, tmp_path):
    tasks = small_world.tasks[:2]
    with open_corpus(tasks, kb=tmp_path / "kb") as sources:
        built = sources.knowledge
        assert built is not None and built.path == tmp_path / "kb" and len(built) > 0
    no_docs = [{"id": "b1", "question": tasks[0]["question"]}]
    with open_corpus(no_docs, kb=tmp_path / "kb") as sources:  # an existing kb needs no docs
        assert sources.knowledge is not None and len(sources.knowledge) == len(built)
        gold = {d["doc_id"] for d in tasks[0]["docs"] if d["gold"]}
        hits = sources.knowledge.search(tasks[0]["question"], k=5, mode="fts")
        assert gold & {h.doc_id for h in hits}


def test_bad_kb_paths_and_backends_are_clear(small_world, tmp_path):
    tasks = small_world.tasks[:1]
    (tmp_path / "kb.txt").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        with open_corpus(tasks, kb=tmp_path / "kb.txt"):
            pass
    with pytest.raises(ValueError, match="no knowledge base at .* no task documents"):
        with open_corpus([{"question": "q"}], kb=tmp_path / "missing"):
            pass
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="'kb' or 'web'"):
        with open_corpus(tasks, backend="lance"):  # type: ignore[arg-type]
            pass
