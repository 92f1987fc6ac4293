"""Does debate (MADAM-RAG) help over conflicting evidence? The single writer against the debate.

A conflict world (`generate_world(seed=4, 400 tasks, conflicts=True)`: ambiguous names, whose
questions have two valid answers, and misinformation pages asserting a wrong value), searched
in one knowledge base of its pages. The same policy and research configuration (the protocol's,
greedy) run every task twice: `writer="single"` and `writer="debate"` (one debater per retrieved
document, `debate_rounds` rounds, an aggregator). Scored as RAMDocs does on the first 100
conflict tasks (`conflict_accuracy`: every valid answer given and no wrong one) and by exact
match on the first 100 plain tasks of the same world; per-task rows, paired-bootstrap 95%
intervals, results by conflict kind, and model calls per task (the debate's cost).

Writes benchmarks/results/debate.json (`summary` first); evaluations are cached and resumed.

Usage: python benchmarks/debate.py [--model local:smollm2] [--limit N]
"""

from __future__ import annotations

import argparse

from protocol import EVAL, evaluate_cached, mean_points, paired, rows, summary, write
from rich.console import Console

from tools.worlds import generate_world

WORLD = {"seed": 4, "n_tasks": 400, "hops": (2, 3)}
PER_SET = 100
console = Console(width=150)


def task_sets(limit: int | None) -> dict[str, list[dict]]:
    """The first conflict tasks and the first plain tasks of the conflict world."""
    world = generate_world(WORLD["seed"], WORLD["n_tasks"], hops=WORLD["hops"], conflicts=True)
    kind = {t["id"]: ((t.get("meta") or {}).get("conflict") or {}).get("kind") for t in world.tasks}
    n = limit or PER_SET
    return {"conflict": [t for t in world.tasks if kind[t["id"]]][:n],
            "plain": [t for t in world.tasks if not kind[t["id"]]][:n]}


def _kinds(tasks: list[dict], per_task: list[dict]) -> dict[str, float]:
    kind = {t["id"]: t["meta"]["conflict"]["kind"] for t in tasks}
    out: dict[str, list[float]] = {}
    for r in per_task:
        out.setdefault(kind[r["task_id"]], []).append(float(r["conflict_accuracy"] or 0))
    return {k: round(100 * sum(v) / len(v), 1) for k, v in sorted(out.items())}


def main() -> None:
    """Both writers on both task sets; write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="local:smollm2")
    ap.add_argument("--limit", type=int, default=None, help="Tasks per set (default 100).")
    args = ap.parse_args()
    sets = task_sets(args.limit)
    runs: dict[str, dict[str, list[dict]]] = {}
    for writer in ("single", "debate"):
        config = EVAL.model_copy(update={"writer": writer})
        runs[writer] = {name: rows(evaluate_cached(args.model, f"conflict-world-{name}", tasks,
                                                   config=config, say=console.print), "graph")
                        for name, tasks in sets.items()}
    conflict = paired(runs["single"]["conflict"], runs["debate"]["conflict"],
                      metric="conflict_accuracy")
    plain = paired(runs["single"]["plain"], runs["debate"]["plain"], metric="em")
    summary_ = {
        "model": args.model, "debate_rounds": EVAL.debate_rounds,
        "conflict_accuracy_single": mean_points(runs["single"]["conflict"], "conflict_accuracy"),
        "conflict_accuracy_debate": mean_points(runs["debate"]["conflict"], "conflict_accuracy"),
        "conflict_gain_ci95": conflict["ci95"],
        "plain_em_single": mean_points(runs["single"]["plain"], "em"),
        "plain_em_debate": mean_points(runs["debate"]["plain"], "em"),
        "plain_em_change_ci95": plain["ci95"],
        "model_calls_single": summary(runs["single"]["conflict"])["all"]["model_calls"],
        "model_calls_debate": summary(runs["debate"]["conflict"])["all"]["model_calls"],
        "conflict_goal_met": conflict["gain"] >= 10, "plain_goal_met": plain["gain"] >= -2}
    data = {"summary": summary_,
            "comparisons": {"conflict_accuracy": conflict, "plain_em": plain},
            "by_kind": {w: _kinds(sets["conflict"], runs[w]["conflict"]) for w in runs},
            "protocol": {"eval": EVAL.model_dump(mode="json"), "world": WORLD,
                         "tasks_per_set": len(sets["conflict"])},
            "runs": runs}
    path = write("debate", data)
    console.print(summary_)
    console.print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
