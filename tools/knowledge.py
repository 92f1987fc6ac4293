"""A local knowledge base on embedded LanceDB: ingest documents, search passages.

Documents are cut into sentence-aware chunks, embedded in batches, and upserted by content
hash with LanceDB's `merge_insert`: re-ingesting an unchanged document embeds nothing, a
changed document replaces its old chunks. Search is vector (cosine), full-text (LanceDB's
native BM25 index) or hybrid (both, fused by reciprocal rank with LanceDB's `RRFReranker`).
A vector index (IVF_HNSW_SQ) is built once the table reaches `index_threshold` rows; below
that, brute force is exact and fast enough.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lancedb
import pyarrow as pa
from tqdm.auto import tqdm

from tools.chunking import chunk_text
from tools.documents import Document, as_documents, load_documents
from tools.embeddings import Embedder, default_embedder
from tools.errors import ToolError
from tools.paths import is_uri
from tools.text import clean_text
from tools.types import Passage

SearchMode = Literal["hybrid", "vector", "fts"]
MODES = ("hybrid", "vector", "fts")
_COLUMNS = ["id", "doc_id", "chunk_index", "title", "text", "url", "source", "metadata"]


@dataclass
class IngestStats:
    """What one `ingest` call did."""

    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _schema(dim: int, embedder: str) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
        pa.field("chunk_index", pa.int32()), pa.field("title", pa.string()),
        pa.field("text", pa.string()), pa.field("search_text", pa.string()),
        pa.field("url", pa.string()), pa.field("source", pa.string()),
        pa.field("metadata", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim)),
    ], metadata={"sleuth.embedder": embedder, "sleuth.dim": str(dim)})


class KnowledgeBase:
    """Passages of ingested documents in a LanceDB folder or at a LanceDB URI (`s3://...`,
    `gs://`, `az://`, `db://` LanceDB Cloud, `file://`), searchable by meaning and by words."""

    def __init__(self, path: str | Path, *, table: str = "passages",
                 embedder: Embedder | None = None, chunk_words: int = 120, overlap: int = 1,
                 index_threshold: int = 20_000):
        # a URI (s3://, gs://, az://, db://, file://) goes to LanceDB as it is: Path("s3://b/x")
        # would fold it into the local path "s3:/b/x"
        self.path: Path | str = path if is_uri(path) else Path(path)
        self.table_name = table
        self._embedder = embedder
        self.chunk_words = chunk_words
        self.overlap = overlap
        self.index_threshold = index_threshold
        self.db = lancedb.connect(str(self.path))
        self._table: Any = None
        if table in self.db.list_tables().tables:
            self._table = self.db.open_table(table)
            self._check_embedder()

    # ------------------------------------------------------------------ plumbing

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def _check_embedder(self) -> None:
        meta = self._table.schema.metadata or {}
        stored = meta.get(b"sleuth.embedder", b"").decode()
        if self._embedder is not None and stored and stored != self._embedder.name:
            raise ValueError(f"knowledge base {self.path} was built with embedder {stored!r}, "
                             f"not {self._embedder.name!r}")

    @property
    def table(self) -> Any:
        """The LanceDB table; a clear `ToolError` when nothing was ingested yet."""
        if self._table is None:
            raise ToolError(f"knowledge base {self.path} is empty: ingest documents first "
                            f"(sleuth ingest PATH --kb {self.path})", kind="empty_kb",
                            target=str(self.path))
        return self._table

    def __len__(self) -> int:
        return 0 if self._table is None else self._table.count_rows()

    def refresh(self) -> None:
        """See writes made by other processes since this table was opened."""
        if self._table is None and self.table_name in self.db.list_tables().tables:
            self._table = self.db.open_table(self.table_name)
        elif self._table is not None:
            self._table.checkout_latest()

    # ------------------------------------------------------------------ ingest

    def _rows(self, doc: Document) -> list[dict[str, Any]]:
        meta = clean_text(json.dumps(doc.metadata, sort_keys=True, ensure_ascii=False, default=str))
        source = str(doc.metadata.get("source") or (doc.doc_id.split(":", 1)[0]
                                                     if ":" in doc.doc_id else ""))
        rows = []
        for i, chunk in enumerate(chunk_text(doc.text, self.chunk_words, self.overlap)):
            search_text = f"{doc.title}\n{chunk}" if doc.title else chunk
            key = json.dumps([doc.doc_id, i, doc.title, chunk, doc.url, meta], ensure_ascii=False)
            rows.append({"id": hashlib.sha1(key.encode()).hexdigest()[:24], "doc_id": doc.doc_id,
                         "chunk_index": i, "title": doc.title, "text": chunk,
                         "search_text": search_text, "url": doc.url or "", "source": source,
                         "metadata": meta})
        return rows

    def _existing(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Map chunk id -> doc id of what is stored for these documents."""
        if self._table is None or not doc_ids:
            return {}
        rows = (self._table.search().where(f"doc_id IN ({_sql_list(doc_ids)})")
                .select(["id", "doc_id"]).limit(1 << 30).to_arrow())
        return dict(zip(rows["id"].to_pylist(), rows["doc_id"].to_pylist(), strict=True))

    def _write_batch(self, docs: list[Document], stats: IngestStats) -> None:
        by_id = {d.doc_id: d for d in docs}  # a batch must not hold a key twice: last wins
        rows = {r["id"]: r for d in by_id.values() for r in self._rows(d)}
        existing = self._existing(list(by_id))
        new = [r for cid, r in rows.items() if cid not in existing]
        stale = [cid for cid in existing if cid not in rows]
        if new:
            vecs = self.embedder.embed([r["search_text"] for r in new])
            for r, v in zip(new, vecs, strict=True):
                r["vector"] = v
            if self._table is None:
                self._table = self.db.create_table(
                    self.table_name, schema=_schema(self.embedder.dim, self.embedder.name))
            (self._table.merge_insert("id").when_matched_update_all()
             .when_not_matched_insert_all().execute(new))
        if stale:
            self._table.delete(f"id IN ({_sql_list(stale)})")
        stats.documents += len(by_id)
        stats.chunks += len(rows)
        stats.embedded += len(new)
        stats.unchanged += len(rows) - len(new)
        stats.removed += len(stale)

    def ingest(self, docs: Iterable[Document | dict[str, Any]], *, batch_size: int = 512,
               progress: bool = True) -> IngestStats:
        """Chunk, embed and upsert documents (`{doc_id|id?, title, text, url?, metadata}`)."""
        t0 = time.perf_counter()
        stats = IngestStats()
        total = len(docs) if isinstance(docs, Sequence) else None
        bar = tqdm(total=total, unit="doc", desc="ingest", disable=not progress, leave=False)
        batch: list[Document] = []
        for doc in as_documents(docs):
            batch.append(doc)
            if len(batch) >= batch_size:
                self._write_batch(batch, stats)
                bar.update(len(batch))
                batch = []
        if batch:
            self._write_batch(batch, stats)
            bar.update(len(batch))
        bar.close()
        if stats.embedded or stats.removed:
            self._update_indices()
        stats.seconds = time.perf_counter() - t0
        return stats

    def ingest_paths(self, paths: Iterable[str | Path], **kwargs: Any) -> IngestStats:
        """Ingest `.jsonl` (task or corpus lines), `.txt`, `.md`, `.html` and `.pdf` files and folders."""
        return self.ingest(load_documents(paths), **kwargs)

    def _indexed_columns(self) -> set[str]:
        return {c for idx in self._table.list_indices() for c in idx.columns}

    def _update_indices(self) -> None:
        from lancedb.index import FTS, IvfHnswSq

        indexed = self._indexed_columns()
        if "search_text" not in indexed:
            self._table.create_index("search_text", config=FTS(), replace=True)
        if "vector" not in indexed and self._table.count_rows() >= self.index_threshold:
            self._table.create_index("vector", config=IvfHnswSq(distance_type="cosine"))
        self._table.optimize()  # folds new rows into existing indices

    # ------------------------------------------------------------------ search

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid",
               where: str | None = None) -> list[Passage]:
        """Return the k best passages for the query; `where` is a SQL filter on the columns."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(k, int) or not 1 <= k <= 10_000:
            raise ValueError(f"k must be an int in 1..10000, got {k!r}")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("empty search query", kind="bad_query", target=repr(query))
        query = clean_text(" ".join(query.split())[:1000])
        table = self.table
        try:
            if mode == "vector":
                rows = self._vector(table, query, k, where).to_pylist()
                return [self._passage(r, 1.0 - r["_distance"]) for r in rows]
            if mode == "fts":
                rows = self._fts(table, query, k, where).to_pylist()
                return [self._passage(r, r["_score"]) for r in rows]
            return self._hybrid(table, query, k, where)
        except (ValueError, RuntimeError, OSError) as e:
            if where and ("filter" in str(e).lower() or "sql" in str(e).lower()
                          or "field" in str(e).lower()):
                raise ValueError(f"invalid filter {where!r}: {e}") from None
            raise

    def _vector(self, table: Any, query: str, k: int, where: str | None,
                row_id: bool = False) -> pa.Table:
        vec = self.embedder.embed([query])[0]
        q = table.search(vec, vector_column_name="vector").distance_type("cosine")
        if where:
            q = q.where(where, prefilter=True)
        return q.select([*_COLUMNS, "_distance"]).with_row_id(row_id).limit(k).to_arrow()

    def _fts(self, table: Any, query: str, k: int, where: str | None,
             row_id: bool = False) -> pa.Table:
        q = table.search(query, query_type="fts", fts_columns="search_text")
        if where:
            q = q.where(where, prefilter=True)
        return q.select([*_COLUMNS, "_score"]).with_row_id(row_id).limit(k).to_arrow()

    def _hybrid(self, table: Any, query: str, k: int, where: str | None) -> list[Passage]:
        # LanceDB's own hybrid query cannot select _distance/_score and then logs a deprecation
        # warning per call; running the two legs here and fusing them with LanceDB's
        # RRFReranker gives the same ranking without the noise.
        from lancedb.rerankers import RRFReranker

        depth = max(k * 4, 20)
        vec = self._vector(table, query, depth, where, row_id=True)
        fts = self._fts(table, query, depth, where, row_id=True)
        fused = RRFReranker(return_score="all").rerank_hybrid(query, vec, fts)
        return [self._passage(r, r["_relevance_score"]) for r in fused.slice(0, k).to_pylist()]

    @staticmethod
    def _passage(row: dict[str, Any], score: float) -> Passage:
        return Passage(chunk_id=row["id"], doc_id=row["doc_id"], title=row["title"] or "",
                       text=row["text"], url=row["url"] or None, score=float(score),
                       chunk_index=row["chunk_index"], source=row["source"] or "",
                       metadata=json.loads(row["metadata"] or "{}"))
