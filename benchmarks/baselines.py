"""Baselines: where answers are lost — at search, at selection, or at writing.

On 100 tasks of ../shared/data/hotpotqa_dev.jsonl and 100 of a generated world (seed 100,
2-3 hops), with the local SmolLM2, greedy decoding:
  (a) graph     — the full research graph;
  (b) retrieval — no model: the top passage's title, or its best-matching sentence;
  (c) oracle    — the graph with a selector that hands the writer the gold passages only.
Writes benchmarks/results/baselines.json (+ one PNG per dataset) and prints a table.

Usage: python benchmarks/baselines.py [--limit 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from graph import ResearchConfig  # noqa: E402
from tools.documents import read_tasks  # noqa: E402
from tools.worlds import generate_world  # noqa: E402
from training.evaluate import evaluate, plot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
console = Console(width=150)


def main() -> None:
    """Run the three modes on both datasets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    world_dir = Path(tempfile.mkdtemp(prefix="baseline-world-"))
    _, world_tasks = generate_world(seed=100, n_tasks=args.limit, hops=(2, 3)).write(world_dir)
    datasets = {"world": read_tasks(world_tasks),
                "hotpotqa": read_tasks(DATA / "hotpotqa_dev.jsonl", args.limit)}
    cfg = ResearchConfig(temperature=0.0, seed=0)
    out: dict = {"limit": args.limit, "config": cfg.model_dump(), "datasets": {}}
    for name, tasks in datasets.items():
        merged: dict = {"runs": {}}
        for mode in ("retrieval", "graph", "oracle"):
            console.print(f"[bold]{name}: {mode}[/bold]")
            res = evaluate(tasks, mode=mode, concurrency=args.concurrency, config=cfg)  # type: ignore[arg-type]
            for run_name, run in res["runs"].items():
                run["wall_s"] = res["wall_s"]
                merged["runs"][run_name] = run
            merged.update({k: res[k] for k in ("n_tasks", "model")})
        merged["tasks"] = name
        out["datasets"][name] = merged
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(merged, RESULTS / f"baselines_{name}.png")
        (RESULTS / "baselines.json").write_text(json.dumps(out, indent=2) + "\n")

    table = Table(title=f"EM / F1 (%) on {args.limit} tasks, SmolLM2-135M, greedy")
    for col in ("dataset", "run", "EM", "F1", "evidence recall", "searches", "after miss",
                "format", "traj/min"):
        table.add_column(col)
    summary = {}
    for name, res in out["datasets"].items():
        for run_name, run in res["runs"].items():
            o = run["overall"]
            table.add_row(name, run_name, f"{100 * o['em']:.1f}", f"{100 * o['f1']:.1f}",
                          f"{o['evidence_recall']:.2f}", f"{o['searches']:.1f}",
                          f"{o['searches_after_miss']:.1f}", f"{o['format_rate']:.2f}",
                          f"{run['trajectories_per_minute']:.1f}")
            summary[f"{name}_{run_name}_em"] = round(100 * o["em"], 1)
            summary[f"{name}_{run_name}_f1"] = round(100 * o["f1"], 1)
    out["summary"] = summary
    (RESULTS / "baselines.json").write_text(json.dumps(out, indent=2) + "\n")
    console.print(table)
    console.print(f"wrote {RESULTS / 'baselines.json'}")


if __name__ == "__main__":
    main()
