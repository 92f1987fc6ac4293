"""Retrieval benchmark: ingest overhead, search latency at 10k and 100k chunks, gold recall.

1. Ingest overhead: `KnowledgeBase.ingest` of N documents against the raw embedder on
   exactly the texts ingest embeds (same chunks, same model), alternated, median of R runs.
   Ratio = our ingest time / raw embedding time (goal <= 1.10).
2. Search latency p50/p95 of vector, FTS and hybrid over real questions:
   - 10k: real chunks (all paragraphs of ../shared/data, topped up with generated-world
     pages), real MiniLM embeddings; below the index threshold, so vector search is exact.
     Vector and hybrid times include embedding the query.
   - 100k: the same texts repeated with a copy marker, with *random* vectors (HashEmbedder)
     standing in for real embeddings (embedding 100k chunks takes ~1 h here); IVF_HNSW_SQ
     index built. Query embedding is not included there (hash vectors cost ~0).
3. Gold-document recall@5 of the 100 first HotpotQA questions, against the union of their
   paragraphs and against the whole 10k mixed corpus.

Usage: python benchmarks/retrieval.py [--quick]   (writes benchmarks/results/retrieval.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tools.chunking import chunk_text  # noqa: E402
from tools.documents import Document, load_documents, read_tasks  # noqa: E402
from tools.embeddings import HashEmbedder, default_embedder  # noqa: E402
from tools.knowledge import KnowledgeBase  # noqa: E402
from tools.worlds import generate_world  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
FILES = ["hotpotqa_dev.jsonl", "2wikimultihopqa_dev.jsonl", "musique_dev.jsonl",
         "rezero_apollo13_corpus.jsonl"]
console = Console()


def shared_tasks(name: str, limit: int | None = None) -> list[dict]:
    """Rows of a task file in ../shared/data."""
    return read_tasks(DATA / name, limit)


def chunk_texts(kb: KnowledgeBase, docs: list[Document]) -> list[str]:
    """The exact texts `ingest` embeds for these documents."""
    return [f"{d.title}\n{c}" if d.title else c
            for d in docs for c in chunk_text(d.text, kb.chunk_words, kb.overlap)]


def bench_ingest(docs: list[Document], repeats: int) -> dict:
    """Median ingest time vs median raw embedding time on the same chunks."""
    emb = default_embedder()
    emb.embed(["warm up"] * 8)
    texts = chunk_texts(KnowledgeBase(tempfile.mkdtemp()), docs)
    raw, ours = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emb.embed(texts)
        raw.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            kb = KnowledgeBase(d, embedder=emb)
            t0 = time.perf_counter()
            kb.ingest(docs, progress=False)
            ours.append(time.perf_counter() - t0)
    return {"documents": len(docs), "chunks": len(texts), "repeats": repeats,
            "raw_embed_s": statistics.median(raw), "ingest_s": statistics.median(ours),
            "raw_chunks_per_s": len(texts) / statistics.median(raw),
            "ingest_chunks_per_s": len(texts) / statistics.median(ours),
            "ingest_overhead": statistics.median(ours) / statistics.median(raw)}


def latency(kb: KnowledgeBase, queries: list[str], mode: str) -> dict:
    """p50/p95 search latency in ms over the queries (after 5 warm-up calls)."""
    for q in queries[:5]:
        kb.search(q, k=10, mode=mode)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        kb.search(q, k=10, mode=mode)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "queries": len(times)}


def recall(kb: KnowledgeBase, tasks: list[dict], mode: str, k: int = 5) -> float:
    """Mean share of gold documents among the top-k passages."""
    total = 0.0
    for t in tasks:
        gold = {d["doc_id"] for d in t["docs"] if d["gold"]}
        total += len(gold & {p.doc_id for p in kb.search(t["question"], k=k, mode=mode)}) / len(gold)
    return total / len(tasks)


def corpus_10k(target: int, kb: KnowledgeBase) -> list[Document]:
    """Shared paragraphs, topped up with world pages, until `target` chunks."""
    docs: list[Document] = []
    n, seed = 0, 1000
    sources = load_documents([DATA / f for f in FILES])
    while n < target:
        d = next(sources, None)
        if d is None:  # shared data exhausted: top up with generated pages
            sources = (Document.from_dict(x) for x in generate_world(seed, 400).docs)
            seed += 1
            continue
        docs.append(d)
        n += len(chunk_texts(kb, [d]))
    return docs


def main() -> None:
    """Run all parts, print tables, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    n_ingest, repeats, big = (120, 1, 5_000) if args.quick else (600, 3, 100_000)
    small = 1_500 if args.quick else 10_000
    hotpot = shared_tasks("hotpotqa_dev.jsonl", 100)
    queries = [t["question"] for f in FILES[:3] for t in shared_tasks(f, 70)][:200]
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}

    console.print("[bold]1. ingest overhead[/bold]")
    ingest_docs = [Document.from_dict(d) for d in
                   {d["doc_id"]: d for t in shared_tasks("hotpotqa_dev.jsonl") for d in t["docs"]}
                   .values()][:n_ingest]
    results["ingest"] = bench_ingest(ingest_docs, repeats)

    console.print("[bold]2. recall@5 on the union corpus of 100 HotpotQA questions[/bold]")
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase(d)
        kb.ingest([d for t in hotpot for d in t["docs"]], progress=False)
        results["recall_union"] = {"chunks": len(kb), **{m: recall(kb, hotpot, m)
                                                         for m in ("vector", "fts", "hybrid")}}

    console.print(f"[bold]3. {small} real chunks[/bold]")
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase(d)
        t0 = time.perf_counter()
        kb.ingest(corpus_10k(small, kb), progress=True)
        results["latency_10k"] = {"chunks": len(kb), "ingest_s": time.perf_counter() - t0,
                                  "vectors": "MiniLM (real)", "vector_index": "none (exact)",
                                  **{m: latency(kb, queries, m) for m in ("vector", "fts", "hybrid")}}
        results["recall_10k"] = {m: recall(kb, hotpot, m) for m in ("vector", "fts", "hybrid")}

    console.print(f"[bold]4. {big} chunks, random vectors[/bold]")
    texts = [c for c in chunk_texts(KnowledgeBase(tempfile.mkdtemp()),
                                    list(load_documents([DATA / f for f in FILES])))]
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase(d, embedder=HashEmbedder(), chunk_words=10_000)
        rows = ({"id": f"c{i}", "title": "", "text": f"{texts[i % len(texts)]} (copy {i // len(texts)})"}
                for i in range(big))
        t0 = time.perf_counter()
        kb.ingest(rows, progress=True, batch_size=5_000)
        build = time.perf_counter() - t0
        indices = sorted(i.index_type for i in kb.table.list_indices())
        results["latency_100k"] = {"chunks": len(kb), "ingest_and_index_s": build,
                                   "vectors": "random (HashEmbedder)", "indices": indices,
                                   **{m: latency(kb, queries, m) for m in ("vector", "fts", "hybrid")}}

    lat10, lat100 = results["latency_10k"], results["latency_100k"]
    results["summary"] = {"ingest_overhead": round(results["ingest"]["ingest_overhead"], 3),
                          "hybrid_p50_ms_10k": round(lat10["hybrid"]["p50_ms"], 2),
                          "hybrid_p50_ms_100k": round(lat100["hybrid"]["p50_ms"], 2),
                          "recall5_hybrid_hotpotqa100": results["recall_union"]["hybrid"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "retrieval_quick.json" if args.quick else "retrieval.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")

    ing = results["ingest"]
    t = Table(title="ingest: ours vs raw embedder, same chunks")
    for col in ("chunks", "raw embed s", "ingest s", "chunks/s raw", "chunks/s ingest", "overhead"):
        t.add_column(col)
    t.add_row(str(ing["chunks"]), f"{ing['raw_embed_s']:.1f}", f"{ing['ingest_s']:.1f}",
              f"{ing['raw_chunks_per_s']:.1f}", f"{ing['ingest_chunks_per_s']:.1f}",
              f"{ing['ingest_overhead']:.3f}x")
    console.print(t)
    t = Table(title="search latency, k=10 (ms)")
    for col in ("chunks", "vectors", "mode", "p50", "p95"):
        t.add_column(col)
    for lat in (lat10, lat100):
        for m in ("vector", "fts", "hybrid"):
            t.add_row(str(lat["chunks"]), lat["vectors"], m, f"{lat[m]['p50_ms']:.1f}",
                      f"{lat[m]['p95_ms']:.1f}")
    console.print(t)
    t = Table(title="gold recall@5, 100 HotpotQA questions")
    for col in ("corpus", "vector", "fts", "hybrid"):
        t.add_column(col)
    ru, r10 = results["recall_union"], results["recall_10k"]
    modes = ("vector", "fts", "hybrid")
    t.add_row(f"their paragraphs ({ru['chunks']} chunks)", *(f"{ru[m]:.3f}" for m in modes))
    t.add_row(f"mixed corpus ({lat10['chunks']} chunks)", *(f"{r10[m]:.3f}" for m in modes))
    console.print(t)
    console.print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
