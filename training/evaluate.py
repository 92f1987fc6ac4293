"""Evaluation: run research over a task file and score every run.

`evaluate(tasks)` builds the corpus of the tasks' documents as a knowledge base (cached by
content hash under `$SLEUTH_HOME/eval-kb/`) or serves it with the corpus server
(`backend="web"`), runs the research graph on every task (`samples` per task), and scores
EM, F1, evidence recall, citation precision, format rate, searches, searches after a miss,
model calls, tokens and seconds per task, overall and by task type. Two reference modes
measure where answers are lost: `mode="retrieval"` (no model: the top passage's title, or its
best sentence, is the answer) and `mode="oracle"` (the graph with a selector that hands the
writer the gold passages only).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from agents.models import sleuth_home
from graph.config import ResearchConfig
from graph.run import ResearchResult, research_many
from graph.trajectory import Gold
from graph.store import TrajectoryStore
from graph.trajectory import ToolStep, Trajectory
from tools.chunking import split_sentences
from tools.corpus_server import CorpusServer
from tools.documents import read_tasks
from tools.knowledge import KnowledgeBase, Passage
from tools.text import overlap
from training import rewards

Mode = Literal["graph", "retrieval", "oracle"]
METRICS = ("em", "f1", "evidence_recall", "citation_precision", "format_rate", "searches",
           "searches_after_miss", "model_calls", "tokens", "seconds")


def corpus_of(tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The de-duplicated union of the tasks' documents."""
    return list({d["doc_id"]: d for t in tasks for d in t.get("docs") or []}.values())


def cached_kb(docs: Sequence[dict[str, Any]], root: Path | None = None) -> KnowledgeBase:
    """A knowledge base of these documents, built once per distinct corpus (content hash)."""
    h = hashlib.sha256()
    for d in sorted(docs, key=lambda d: d["doc_id"]):
        h.update(f"{d['doc_id']}\x00{d.get('title', '')}\x00{d['text']}\x01".encode())
    path = (root or sleuth_home() / "eval-kb") / h.hexdigest()[:16]
    kb = KnowledgeBase(path)
    if len(kb) == 0 or not (path / ".complete").exists():
        kb.ingest(docs)
        (path / ".complete").touch()
    return kb


def score_trajectory(t: Trajectory, gold: Gold | None = None) -> dict[str, float]:
    """The evaluation metrics of one run."""
    m = t.metrics
    return {"em": rewards.exact_match(t, gold), "f1": rewards.f1(t, gold),
            "evidence_recall": rewards.evidence_recall(t, gold),
            "citation_precision": rewards.citation_precision(t, gold),
            "format_rate": rewards.format_rate(t, gold),
            "searches": float(len(rewards.searches(t))),
            "searches_after_miss": float(rewards.searches_after_miss(t, gold)),
            "model_calls": float(len(t.model_steps)), "tokens": float(m.get("tokens", 0)),
            "seconds": float(m.get("seconds", 0.0))}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in METRICS} if rows else {}


def oracle_selector(tasks: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], dict]:
    """A selector that returns the gold passages of the question's task, whatever was found."""
    gold = {" ".join(t["question"].split()): [
        Passage(chunk_id=f"{d['doc_id']}#gold", doc_id=d["doc_id"], title=d.get("title", ""),
                text=d["text"], score=1.0) for d in t.get("docs") or [] if d.get("gold")]
        for t in tasks}

    def select(state: dict[str, Any]) -> dict[str, Any]:
        return {"evidence": gold.get(" ".join(state["question"].split()), [])}
    return select


def retrieval_answers(kb: KnowledgeBase, task: dict[str, Any]) -> dict[str, Trajectory]:
    """The retrieval-only baselines: the top passage's title, and its best sentence."""
    t0 = time.perf_counter()
    hits = kb.search(task["question"], k=5)
    step = ToolStep(tool="knowledge_base", input={"query": task["question"], "k": 5},
                    output=[{"doc_id": p.doc_id, "chunk_id": p.chunk_id, "title": p.title,
                             "text": p.text} for p in hits])
    top = hits[0] if hits else None
    sentence = max(split_sentences(top.text), key=lambda s: overlap(task["question"], s),
                   default="") if top else ""
    seconds = time.perf_counter() - t0
    return {name: Trajectory(task_id=task["id"], question=task["question"], answer=answer,
                             steps=[step], gold=Gold.from_task(task), metrics={"seconds": seconds})
            for name, answer in (("retrieval-title", top.title if top else ""),
                                 ("retrieval-sentence", sentence))}


def evaluate(tasks: str | Path | Sequence[dict[str, Any]], *, model: str | Any = "local:smollm2",
             limit: int | None = None, concurrency: int = 4, samples: int = 1,
             backend: Literal["kb", "web"] = "kb", search_url: str | None = None,
             record: str | Path | None = None, mode: Mode = "graph",
             config: ResearchConfig | None = None, kb_root: Path | None = None,
             progress: Callable[[ResearchResult], None] | None = None) -> dict[str, Any]:
    """Run and score; returns the JSON-ready result (overall, by type, per task)."""
    rows = read_tasks(tasks, limit) if isinstance(tasks, str | Path) else list(tasks)[:limit]
    if not rows:
        raise ValueError("no tasks to evaluate")
    for i, t in enumerate(rows):
        t.setdefault("id", f"q{i}")
    docs = corpus_of(rows)
    if not docs and not (backend == "web" and search_url):
        raise ValueError("these tasks carry no documents (Bamboogle ships none), so there is no "
                         "corpus to search: use backend='web' with search_url= a "
                         "SearXNG-compatible search endpoint")
    if mode != "graph" and not docs:
        raise ValueError(f"mode={mode!r} needs the tasks' gold documents")
    cfg = config or ResearchConfig()
    by_id = {t["id"]: t for t in rows}
    t0 = time.perf_counter()
    server = None
    try:
        if mode == "retrieval":
            kb = cached_kb(docs, kb_root)
            runs = [(name, traj) for t in rows for name, traj in retrieval_answers(kb, t).items()]
            trajectories = {name: [tr for n, tr in runs if n == name]
                            for name in ("retrieval-title", "retrieval-sentence")}
        else:
            if backend == "web":
                if docs:
                    server = CorpusServer(docs).start()
                sources: dict[str, Any] = {"web": server.url if server else search_url}
            else:
                sources = {"knowledge": cached_kb(docs, kb_root)}
            store = TrajectoryStore(record or tempfile.mkdtemp(prefix="sleuth-eval-"))
            results = research_many(rows, samples_per_task=samples, concurrency=concurrency,
                                    store=store, model=model, config=cfg, on_result=progress,
                                    selector=oracle_selector(rows) if mode == "oracle" else None,
                                    **sources)
            failed = [r for r in results if r.trajectory is None]
            trajectories = {mode: [r.trajectory for r in results if r.trajectory is not None]}
    finally:
        if server is not None:
            server.stop()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"tasks": str(tasks) if isinstance(tasks, str | Path) else "<list>",
                           "n_tasks": len(rows), "samples": samples, "backend": backend,
                           "model": model if isinstance(model, str) else type(model).__name__,
                           "config": cfg.model_dump(), "wall_s": wall, "runs": {}}
    for name, trajs in trajectories.items():
        scored = [(t, score_trajectory(t)) for t in trajs]
        by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
        for t, s in scored:
            by_type[str(by_id.get(t.task_id or "", {}).get("type", ""))].append(s)
        out["runs"][name] = {
            "overall": _mean([s for _, s in scored]),
            "by_type": {k: {**_mean(v), "n": len(v)} for k, v in sorted(by_type.items())},
            "trajectories_per_minute": 60 * len(trajs) / wall if wall else 0.0,
            "per_task": [{"task_id": t.task_id, "type": by_id.get(t.task_id or "", {}).get("type"),
                          "answer": t.answer, "gold": t.gold.answer if t.gold else None,
                          "trajectory_id": t.id, **s} for t, s in scored]}
    if mode != "retrieval":
        out["runs"][mode]["failed"] = [r.error for r in failed]
        out["record"] = str(record) if record else None
    return out


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """A PNG: EM and F1 by task type (one bar group per run), and searches per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["runs"])
    types = sorted({t for r in result["runs"].values() for t in r["by_type"]})
    width = 0.8 / max(1, 2 * len(names))
    for j, name in enumerate(names):
        bt = result["runs"][name]["by_type"]
        for m, metric in enumerate(("em", "f1")):
            xs = [i + (2 * j + m) * width for i in range(len(types))]
            ax1.bar(xs, [100 * bt.get(t, {}).get(metric, 0) for t in types], width,
                    label=f"{name} {metric.upper()}")
    ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(types))], types or [""])
    ax1.set_ylabel("percent")
    ax1.set_title("accuracy by question type")
    ax1.legend(fontsize=7)
    for name in names:
        ax2.hist([p["searches"] for p in result["runs"][name]["per_task"]],
                 bins=range(0, 12), alpha=0.6, label=name)
    ax2.set_xlabel("searches per task")
    ax2.set_ylabel("tasks")
    ax2.set_title("searches")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{Path(str(result['tasks'])).name}: {result['n_tasks']} tasks")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write the JSON result and its PNG figure next to it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out, plot(result, out.with_suffix(".png"))
