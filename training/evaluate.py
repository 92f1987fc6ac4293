"""Evaluation: run research over a task file and score every run.

`evaluate(tasks)` opens the tasks' corpus through `tools.corpora` (a knowledge base cached by
content hash, an explicit `kb=` folder, or the corpus server with `backend="web"`), runs the
research graph on every task (`samples` per task), and scores EM, F1, knowledge F1, evidence
F1, retrieval accuracy (= evidence recall), citation precision, format rate, searches,
searches after a miss, model calls, tokens and seconds per task, overall and by task type.
Two reference modes measure where answers are lost: `mode="retrieval"` (no model: the top
passage's title, or its best sentence, is the answer) and `mode="oracle"` (the graph with a
selector that hands the writer the gold passages only). Trajectories are kept only where
`record=` names a store.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from graph.config import ResearchConfig
from graph.run import ResearchResult, research_many
from graph.store import TrajectoryStore
from graph.trajectory import Gold, ToolStep, Trajectory
from tools.chunking import split_sentences
from tools.corpora import Sources, corpus_of, open_corpus
from tools.documents import read_tasks
from tools.knowledge import KnowledgeBase, Passage
from tools.text import overlap
from training import rewards

Mode = Literal["graph", "retrieval", "oracle"]
METRICS = ("em", "f1", "conflict_accuracy", "knowledge_f1", "evidence_f1", "retrieval_accuracy",
           "evidence_recall", "citation_precision", "format_rate", "searches",
           "searches_after_miss", "search_misses", "model_calls", "tokens", "seconds")
RETRIEVAL_RUNS = ("retrieval-title", "retrieval-sentence")
HELDOUT_WORLD_SEED = 2  # the generated world evaluations hold out (benchmarks/protocol.py's too)
Progress = Callable[[ResearchResult], None]


def score_trajectory(t: Trajectory, gold: Gold | None = None) -> dict[str, float]:
    """The evaluation metrics of one run (`retrieval_accuracy` is `evidence_recall`, the
    reward's name for it, reported under both names; `conflict_accuracy` is RAMDocs' rule:
    every valid answer given and no wrong one — on a task with one answer, that answer)."""
    m = t.metrics
    recall = rewards.retrieval_accuracy(t, gold)
    return {"em": rewards.exact_match(t, gold), "f1": rewards.f1(t, gold),
            "conflict_accuracy": rewards.conflict_accuracy(t, gold),
            "knowledge_f1": rewards.knowledge_f1(t, gold),
            "evidence_f1": rewards.evidence_f1(t, gold),
            "retrieval_accuracy": recall, "evidence_recall": recall,
            "citation_precision": rewards.citation_precision(t, gold),
            "format_rate": rewards.format_rate(t, gold),
            "searches": float(len(rewards.searches(t))),
            "searches_after_miss": float(rewards.searches_after_miss(t, gold)),
            "search_misses": float(sum(rewards.search_misses(t, gold))),
            "model_calls": float(len(t.model_steps)), "tokens": float(m.get("tokens", 0)),
            "seconds": float(m.get("seconds", 0.0))}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in METRICS} if rows else {}


def mean_scores(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Every evaluation metric averaged over the runs (empty without runs)."""
    return _mean([score_trajectory(t) for t in trajectories])


def oracle_selector(tasks: Sequence[Mapping[str, Any]]) -> Callable[[dict[str, Any]], dict]:
    """A selector that returns the gold passages of the question's task, whatever was found."""
    gold = {" ".join(t["question"].split()): [
        Passage(chunk_id=f"{d['doc_id']}#gold", doc_id=d["doc_id"], title=d.get("title", ""),
                text=d["text"], score=1.0) for d in t.get("docs") or [] if d.get("gold")]
        for t in tasks}

    def select(state: dict[str, Any]) -> dict[str, Any]:
        return {"evidence": gold.get(" ".join(state["question"].split()), [])}
    return select


def retrieval_answers(kb: KnowledgeBase, task: Mapping[str, Any]) -> dict[str, Trajectory]:
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
    evidence = [{k: v for k, v in h.items() if k != "text"} for h in step.output[:1]]  # answered from
    return {name: Trajectory(task_id=task["id"], question=task["question"], answer=answer,
                             steps=[step], evidence=evidence, gold=Gold.from_task(task),
                             metrics={"seconds": seconds})
            for name, answer in zip(RETRIEVAL_RUNS, (top.title if top else "", sentence),
                                    strict=True)}


# --------------------------------------------------------------------------- set-up


def load_tasks(tasks: str | Path | Sequence[Mapping[str, Any]],
               limit: int | None = None) -> list[dict[str, Any]]:
    """The tasks to evaluate, as copies with an `id` each (`q<i>` where they have none)."""
    rows = read_tasks(tasks, limit) if isinstance(tasks, str | Path) else list(tasks)[:limit]
    if not rows:
        raise ValueError("no tasks to evaluate")
    return [{**t, "id": str(t.get("id") or f"q{i}")} for i, t in enumerate(rows)]


# --------------------------------------------------------------------------- runs


def run_retrieval(rows: Sequence[Mapping[str, Any]], kb_root: Path | None = None, *,
                  kb: str | Path | None = None) -> dict[str, list[Trajectory]]:
    """The retrieval-only baselines over the knowledge base `kb` (as `open_corpus` opens it),
    or the cached knowledge base of the tasks' docs."""
    runs: dict[str, list[Trajectory]] = {name: [] for name in RETRIEVAL_RUNS}
    with open_corpus(rows, kb=kb, root=kb_root) as sources:
        for task in rows:
            for name, traj in retrieval_answers(sources.knowledge, task).items():
                runs[name].append(traj)
    return runs


def run_graph(rows: Sequence[Mapping[str, Any]], sources: Sources, *, mode: Mode = "graph",
              model: str | Any = "local:smollm2", config: ResearchConfig | None = None,
              samples: int = 1, concurrency: int = 4, record: str | Path | None = None,
              progress: Progress | None = None) -> list[ResearchResult]:
    """Research every task (`samples` each) over `sources`.

    With `mode="oracle"` the selector hands the writer the gold passages only; with `record`
    the trajectories are appended to that store.
    """
    store = TrajectoryStore(record) if record else None
    selector = oracle_selector(rows) if mode == "oracle" else None
    return research_many(rows, samples_per_task=samples, concurrency=concurrency, store=store,
                         model=model, config=config, on_result=progress, selector=selector,
                         **sources.as_kwargs())


# --------------------------------------------------------------------------- aggregation


def aggregate(trajectories: Sequence[Trajectory], tasks: Mapping[str, Mapping[str, Any]],
              wall: float) -> dict[str, Any]:
    """Scores of one run: overall, by task type, per task, and trajectories per minute."""
    scored = [(t, score_trajectory(t)) for t in trajectories]
    by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
    for t, s in scored:
        by_type[str(tasks.get(t.task_id or "", {}).get("type", ""))].append(s)
    return {
        "overall": _mean([s for _, s in scored]),
        "by_type": {k: {**_mean(v), "n": len(v)} for k, v in sorted(by_type.items())},
        "trajectories_per_minute": 60 * len(trajectories) / wall if wall else 0.0,
        "per_task": [{"task_id": t.task_id, "type": tasks.get(t.task_id or "", {}).get("type"),
                      "answer": t.answer, "gold": t.gold.answer if t.gold else None,
                      "trajectory_id": t.id, **s} for t, s in scored]}


def evaluate(tasks: str | Path | Sequence[Mapping[str, Any]], *, model: str | Any = "local:smollm2",
             limit: int | None = None, concurrency: int = 4, samples: int = 1,
             backend: Literal["kb", "web"] = "kb", search_url: str | None = None,
             record: str | Path | None = None, mode: Mode = "graph",
             config: ResearchConfig | None = None, kb_root: Path | None = None,
             kb: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run and score; returns the JSON-ready result (overall, by type, per task).

    The corpus comes from `tools.corpora.open_corpus` (`backend`, `kb`, `search_url`,
    `kb_root`); trajectories are kept only in the store `record` names. The caller's task
    dicts are not modified.
    """
    rows = load_tasks(tasks, limit)
    if mode != "graph" and not corpus_of(rows):
        raise ValueError(f"mode={mode!r} needs the tasks' gold documents")
    cfg = config or ResearchConfig()
    t0 = time.perf_counter()
    failed: list[str | None] = []
    if mode == "retrieval":
        runs = run_retrieval(rows, kb_root, kb=kb)
    else:
        with open_corpus(rows, backend=backend, kb=kb, search_url=search_url,
                         root=kb_root) as sources:
            results = run_graph(rows, sources, mode=mode, model=model, config=cfg,
                                samples=samples, concurrency=concurrency, record=record,
                                progress=progress)
        runs = {mode: [r.trajectory for r in results if r.trajectory is not None]}
        failed = [r.error for r in results if r.trajectory is None]
    wall = time.perf_counter() - t0
    by_id = {t["id"]: t for t in rows}
    result: dict[str, Any] = {
        "tasks": str(tasks) if isinstance(tasks, str | Path) else "<list>",
        "n_tasks": len(rows), "samples": samples, "backend": backend,
        "model": model if isinstance(model, str) else type(model).__name__,
        "config": cfg.model_dump(), "wall_s": wall,
        "runs": {name: aggregate(trajs, by_id, wall) for name, trajs in runs.items()}}
    if mode != "retrieval":
        result["runs"][mode]["failed"] = failed
        result["record"] = str(record) if record else None
    return result


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
