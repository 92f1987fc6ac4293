"""The LanceDB knowledge base: the real MiniLM embedder on real multi-hop QA paragraphs, and
hash embedders where the test is about the table, not the embeddings."""

from __future__ import annotations

import pytest

from tools.embeddings import HashEmbedder
from tools.errors import ToolError
from tools.knowledge import KnowledgeBase


def recall_at_k(kb: KnowledgeBase, tasks: list[dict], mode: str, k: int = 5) -> float:
    """Mean share of each question's gold paragraphs among the top-k passages."""
    total = 0.0
    for t in tasks:
        gold = {d["doc_id"] for d in t["docs"] if d["gold"]}
        got = {p.doc_id for p in kb.search(t["question"], k=k, mode=mode)}
        total += len(gold & got) / len(gold)
    return total / len(tasks)


@pytest.mark.slow
def test_gold_recall_hybrid_not_worse_than_best_single_mode(hotpot_kb, hotpot_tasks):
    """Slow: 100 questions over ~1,000 paragraphs. benchmarks/retrieval.py records the same
    figures (recall_union); test_hybrid_keeps_the_best_of_each_mode checks the fusion fast."""
    recall = {m: recall_at_k(hotpot_kb, hotpot_tasks, m) for m in ("vector", "fts", "hybrid")}
    print(f"gold recall@5 on {len(hotpot_tasks)} HotpotQA questions: {recall}")
    assert recall["hybrid"] >= max(recall["vector"], recall["fts"])
    assert recall["hybrid"] > 0.6


class KeyedEmbedder(HashEmbedder):
    """Hash vectors, except that the texts in `same` all get one shared vector."""

    def __init__(self, same: set[str]):
        super().__init__()
        self.name, self.same = "keyed", same
        self.shared = super().embed(["the shared vector"])[0]

    def embed(self, texts):
        out = super().embed(texts)
        for i, t in enumerate(texts):
            if t in self.same:
                out[i] = self.shared
        return out


def test_hybrid_keeps_the_best_of_each_mode(tmp_path):
    """The vector leg's best passage shares no word with the query, the full-text leg's best
    has no similar vector: each single mode finds one of the two, hybrid finds both."""
    query = "lighthouse keeper"
    kb = KnowledgeBase(tmp_path / "kb", embedder=KeyedEmbedder({query, "meaning only"}))
    noise = [{"id": f"n{i}", "title": "", "text": f"noise {i} about bread and rivers"}
             for i in range(30)]
    kb.ingest([{"id": "by-meaning", "title": "", "text": "meaning only"},
               {"id": "by-words", "title": "", "text": "The lighthouse keeper rowed home."},
               *noise], progress=False)
    top = {m: [p.doc_id for p in kb.search(query, k=2, mode=m)] for m in ("vector", "fts", "hybrid")}
    assert top["vector"][0] == "by-meaning" and "by-words" not in top["vector"]
    assert top["fts"] == ["by-words"]  # no other passage holds the words
    assert set(top["hybrid"]) == {"by-meaning", "by-words"}


def test_round_trip_passages_carry_their_document(hotpot_small):
    tasks, kb = hotpot_small
    task = tasks[0]
    gold = {d["doc_id"]: d for d in task["docs"] if d["gold"]}
    for mode in ("vector", "fts", "hybrid"):
        hits = kb.search(task["question"], k=10, mode=mode)
        assert len(hits) == 10
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        found = [h for h in hits if h.doc_id in gold]
        assert found, mode
        assert found[0].title == gold[found[0].doc_id]["title"]
        assert found[0].text in gold[found[0].doc_id]["text"]
        assert found[0].source == "hotpotqa" and found[0].metadata["gold"] is True
        assert len({h.chunk_id for h in hits}) == len(hits)


def test_filters_and_bad_input(hotpot_small):
    _, kb = hotpot_small
    assert kb.search("river", k=5, where="source = 'nowhere'") == []
    some = kb.search("river", k=1)[0].doc_id
    only = kb.search("river", k=3, where=f"doc_id = '{some}'")
    assert only and {h.doc_id for h in only} == {some}
    with pytest.raises(ValueError, match="invalid filter"):
        kb.search("river", where="no_such_column = 1")
    with pytest.raises(ValueError, match="mode"):
        kb.search("river", mode="semantic")  # type: ignore[arg-type]
    with pytest.raises(ToolError, match="empty"):
        kb.search("  ")
    for odd in ['"unbalanced', "zz:yy (ww", "AND OR NOT", "?", "x" * 50_000, "naïve café 東京"]:
        assert len(kb.search(odd, k=2)) == 2  # query syntax is never parsed as an operator
        # the words around the odd syntax are still searched for
        words = f"river {odd}" if len(odd) > 100 else f"{odd} river"
        assert all("river" in f"{h.title} {h.text}".lower() for h in kb.search(words, k=2, mode="fts"))


def test_upsert_by_content_hash(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder(), chunk_words=20)
    docs = [{"id": f"d{i}", "title": f"Doc {i}", "text": f"Alpha beta {i}. " * 30} for i in range(5)]
    first = kb.ingest(docs, progress=False)
    assert first.documents == 5 and first.embedded == first.chunks > 5
    again = kb.ingest(docs + docs[:2], progress=False)  # duplicates in one batch are fine
    assert again.embedded == 0 and again.unchanged == first.chunks
    changed = dict(docs[0], text="Completely new text about gamma.")
    stats = kb.ingest([changed], progress=False)
    assert stats.embedded == 1 and stats.removed > 0
    assert len(kb) == first.chunks - stats.removed + 1
    reopened = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    assert [p.doc_id for p in reopened.search("gamma", k=1, mode="fts")] == ["d0"]


def test_empty_knowledge_base_says_what_to_do(tmp_path):
    kb = KnowledgeBase(tmp_path / "empty", embedder=HashEmbedder())
    with pytest.raises(ToolError, match="sleuth ingest"):
        kb.search("anything")


def test_vector_index_once_large(tmp_path):
    kb = KnowledgeBase(tmp_path / "big", embedder=HashEmbedder(), index_threshold=2_000)
    kb.ingest(({"id": f"d{i}", "title": "", "text": f"row {i} of many"} for i in range(2_500)),
              progress=False)
    kinds = {idx.index_type for idx in kb.table.list_indices()}
    assert kinds == {"FTS", "IvfHnswSq"}
    hits = kb.search("row 17 of many", k=3, mode="vector")
    assert hits[0].doc_id == "d17" and hits[0].score == pytest.approx(1.0, abs=0.02)


def test_ingest_paths_folder(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Apollo\n\nThe oxygen tank failed on the way to the Moon.")
    (folder / "b.txt").write_text("Bread is baked from flour, water and yeast.")
    kb = KnowledgeBase(tmp_path / "kb")
    stats = kb.ingest_paths([folder], progress=False)
    assert stats.documents == 2
    assert kb.search("spacecraft oxygen failure", k=1)[0].doc_id == "a.md"
