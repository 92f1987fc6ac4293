"""The evaluation protocol the quality benchmarks share, so their numbers agree.

Held-out sets: a generated world never used for training (seed 2, 200 tasks, 2-3 hops) and
the first 100 HotpotQA development questions of ../shared/data, each searched in a knowledge
base of its own tasks' documents. One research configuration (greedy, 3 rounds, 2 searches
per sub-question, 96 new tokens per call). Evaluations are cached by model, weights, prompt
files, config and tasks under $SLEUTH_HOME/runs/evals, so an interrupted benchmark resumes where it
stopped. Per-task rows are kept, and accuracy changes are reported with a paired bootstrap
95% interval over tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agents import load_chat_model  # noqa: E402
from agents.models import parse_spec  # noqa: E402
from graph import ResearchConfig  # noqa: E402
from tools.documents import read_tasks  # noqa: E402
from tools.paths import sleuth_home  # noqa: E402
from tools.worlds import generate_world  # noqa: E402
from training.evaluate import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
HELDOUT_WORLD = {"seed": 2, "n_tasks": 200, "hops": (2, 3)}
HOTPOT_TASKS = 100
# Sets no choice was made on, for confirming a finished recipe (benchmarks/confirm.py): a world
# of a seed no benchmark had evaluated, and the HotpotQA development questions after the first
# 100 (cml.py trains on questions 101-300, so a policy with a cml stage has seen these).
FRESH_WORLD = {"seed": 5, "n_tasks": 200, "hops": (2, 3)}
FRESH_HOTPOT = slice(100, 200)
EVAL = ResearchConfig(max_rounds=3, max_attempts=2, max_new_tokens=96, temperature=0.0, seed=0)
ROW_KEYS = ("task_id", "type", "answer", "gold", "em", "f1", "conflict_accuracy",
            "evidence_recall", "evidence_f1", "knowledge_f1", "citation_precision", "format_rate",
            "searches", "searches_after_miss", "search_misses", "model_calls", "tokens")


def suites(limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The held-out task sets by name: `world` and `hotpotqa` (the first `limit` of each)."""
    world = generate_world(HELDOUT_WORLD["seed"], HELDOUT_WORLD["n_tasks"],
                           hops=HELDOUT_WORLD["hops"]).tasks
    hotpot = read_tasks(DATA / "hotpotqa_dev.jsonl", HOTPOT_TASKS)
    return {"world": world[:limit], "hotpotqa": hotpot[:limit]}


def fresh_suites(limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The confirmation sets by name, shaped as `suites`: `world` (FRESH_WORLD) and `hotpotqa`
    (FRESH_HOTPOT), the first `limit` of each."""
    world = generate_world(FRESH_WORLD["seed"], FRESH_WORLD["n_tasks"],
                           hops=FRESH_WORLD["hops"]).tasks
    hotpot = read_tasks(DATA / "hotpotqa_dev.jsonl")[FRESH_HOTPOT]
    return {"world": world[:limit], "hotpotqa": hotpot[:limit]}


def resolve_policy(spec: str) -> tuple[str, str, Path | None]:
    """(model spec to load, spec to record, weights to key the evaluation cache on) of a model
    spec (local:smollm2) or a training stage folder under $SLEUTH_HOME (learning-x/grpo)."""
    if ":" in spec:
        adapter = parse_spec(spec).adapter
        return spec, spec, adapter
    folder = sleuth_home() / spec
    if not (folder / "config.json").exists():
        raise SystemExit(f"{spec}: neither a model spec nor a stage folder under $SLEUTH_HOME")
    weights = folder / "adapter" if (folder / "adapter").is_dir() else folder
    return f"hf:{folder}", f"hf:$SLEUTH_HOME/{spec}", weights


def digest(path: Path | None) -> str:
    """A short content hash of a model folder's weights (empty for a packaged model)."""
    if path is None:
        return ""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def prompts_digest() -> str:
    """A short hash of the agents' prompt files: a changed prompt is a new evaluation."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "agents" / "prompts").glob("*.jinja")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def evaluate_cached(model: str, suite: str, tasks: Sequence[Mapping[str, Any]], *,
                    mode: str = "graph", weights: Path | None = None,
                    config: ResearchConfig = EVAL, say: Callable[[str], None] = print,
                    engine: str = "transformers") -> dict[str, Any]:
    """`training.evaluate.evaluate` on a suite, kept on disk by its inputs and reused."""
    # the config as set, not every field: a field added later (at its default) keeps the key
    parts = [model, digest(weights), mode, config.model_dump(mode="json", exclude_defaults=True),
             [t["id"] for t in tasks], prompts_digest()]
    key = json.dumps(parts if engine == "transformers" else [*parts, engine])
    name = f"{suite}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    cached = sleuth_home() / "runs" / "evals" / name
    if cached.exists():
        say(f"{suite} / {model} / {mode}: kept from an earlier run")
        return json.loads(cached.read_text())
    say(f"{suite} / {model} / {mode} / {engine}: {len(tasks)} tasks")
    chat = model if engine == "transformers" else load_chat_model(model, engine=engine)
    result = evaluate(list(tasks), model=chat, mode=mode, concurrency=8, config=config)  # type: ignore[arg-type]
    result["model"], result["engine"] = model, engine
    result["tasks"] = suite
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result, default=str))
    return result


def rows(result: Mapping[str, Any], run: str) -> list[dict[str, Any]]:
    """A run's per-task rows, trimmed to what the results files keep."""
    return [{k: r.get(k) for k in ROW_KEYS} for r in result["runs"][run]["per_task"]]


def summary(rows_: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means (EM and F1 in percent) overall and by question type, with counts."""
    def mean(rs: Sequence[Mapping[str, Any]], k: str) -> float:
        return sum(float(r[k] or 0) for r in rs) / len(rs) if rs else 0.0

    def block(rs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return {"n": len(rs), "em": round(100 * mean(rs, "em"), 1), "f1": round(100 * mean(rs, "f1"), 1),
                "right": int(sum(float(r["em"] or 0) for r in rs)),
                **{k: round(mean(rs, k), 3) for k in (
                    "evidence_recall", "evidence_f1", "format_rate", "searches",
                    "searches_after_miss", "model_calls", "tokens")}}
    types = sorted({str(r["type"]) for r in rows_})
    return {"all": block(rows_), **{t: block([r for r in rows_ if str(r["type"]) == t]) for t in types}}


def mean_points(rows_: Sequence[Mapping[str, Any]], metric: str) -> float:
    """A metric's mean over per-task rows, in points (percent), one decimal."""
    return round(100 * sum(float(r[metric] or 0) for r in rows_) / len(rows_), 1)


def mean_rows(by_task: Mapping[str, Sequence[float]], metric: str = "em") -> list[dict[str, Any]]:
    """Per-task rows for `paired` from several scores of each task (rollouts, runs): their mean."""
    return [{"task_id": k, metric: sum(v) / len(v)} for k, v in by_task.items()]


def pooled_rows(evaluations: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per-task rows for `paired` from several evaluations of the same tasks (runs, seeds):
    each task's EM averaged over them."""
    by_task: dict[str, list[float]] = {}
    for rows_ in evaluations:
        for r in rows_:
            by_task.setdefault(str(r["task_id"]), []).append(float(r["em"] or 0))
    return mean_rows(by_task)


def paired(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], *,
           metric: str = "em", resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """The mean gain (points) of `after` over `before` on the same tasks, its paired bootstrap
    95% interval, and how many tasks were gained and lost."""
    a = {r["task_id"]: float(r[metric] or 0) for r in before}
    b = {r["task_id"]: float(r[metric] or 0) for r in after}
    ids = sorted(a.keys() & b.keys())
    if len(ids) != len(a) or len(ids) != len(b):
        raise ValueError("paired comparisons need the same tasks on both sides")
    diffs = [b[i] - a[i] for i in ids]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
    return {"gain": round(100 * sum(diffs) / len(diffs), 1),
            "ci95": [round(100 * means[int(0.025 * resamples)], 1),
                     round(100 * means[int(0.975 * resamples) - 1], 1)],
            "gained": sum(d > 0 for d in diffs), "lost": sum(d < 0 for d in diffs), "n": len(ids)}


def alternate(ways: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each way, run in turn `repeats` times (so drift in the machine hits all)."""
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(round(time.perf_counter() - t0, 2))
            print(name, times[name][-1], flush=True)
    return times


def write(name: str, data: Mapping[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
