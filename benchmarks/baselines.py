"""Baselines: where answers are lost — at search, at selection, or at writing.

On the held-out sets of `benchmarks/protocol.py` (a generated world, seed 2, 200 tasks; the
first 100 HotpotQA development questions), with the untrained local SmolLM2, greedy:
  (a) graph     — the full research graph;
  (b) retrieval — no model: the top passage's title, or its best-matching sentence;
  (c) oracle    — the graph with a selector that hands the writer the gold passages only.
The untrained graph run is the "before" of `benchmarks/learning.py` (same protocol, same
cached evaluation). Writes benchmarks/results/baselines.json (per-task rows and a summary)
and prints a table.

Usage: python benchmarks/baselines.py [--limit N] [--modes retrieval,graph,oracle]
"""

from __future__ import annotations

import argparse

from protocol import EVAL, evaluate_cached, rows, suites, summary, write
from rich.console import Console
from rich.table import Table

MODEL = "local:smollm2"
RUNS = {"retrieval": ("retrieval-title", "retrieval-sentence"), "graph": ("graph",),
        "oracle": ("oracle",)}
console = Console(width=150)


def run_suite(name: str, tasks: list[dict], modes: list[str]) -> dict[str, dict]:
    """The baseline runs of these modes on one suite: per-task rows and their summary."""
    out = {}
    for mode in modes:
        names = RUNS[mode]
        result = evaluate_cached(MODEL, name, tasks, mode=mode, say=console.print)
        for run in names:
            out[run] = {"summary": summary(rows(result, run)), "per_task": rows(result, run)}
    return out


def main() -> None:
    """Run the baselines on both held-out suites."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="First N tasks of each suite.")
    ap.add_argument("--modes", default="retrieval,graph,oracle",
                    help="Which runs (evaluations already made are reused from the cache).")
    args = ap.parse_args()
    modes = [m for m in RUNS if m in args.modes.split(",")]
    data: dict = {"model": MODEL, "config": EVAL.model_dump(mode="json"), "suites": {}}
    for name, tasks in suites(args.limit).items():
        data["suites"][name] = run_suite(name, tasks, modes)
        write("baselines", data)  # each finished suite lands at once
    data["summary"] = {f"{suite}_{run}_{k}": r["summary"]["all"][k]
                       for suite, runs in data["suites"].items() for run, r in runs.items()
                       for k in ("em", "f1")}
    path = write("baselines", data)
    table = Table(title="untrained SmolLM2-135M, greedy: EM / F1 (%)")
    for col in ("suite", "run", "n", "EM", "F1", "evidence recall", "searches", "after miss",
                "format"):
        table.add_column(col)
    for suite, runs in data["suites"].items():
        for run, r in runs.items():
            s = r["summary"]["all"]
            table.add_row(suite, run, str(s["n"]), f"{s['em']:.1f}", f"{s['f1']:.1f}",
                          f"{s['evidence_recall']:.2f}", f"{s['searches']:.1f}",
                          f"{s['searches_after_miss']:.1f}", f"{s['format_rate']:.2f}")
    console.print(table)
    console.print(f"wrote {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
