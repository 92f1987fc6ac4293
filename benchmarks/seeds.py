"""One GRPO recipe run with several seeds from the same warm start: each run's RL-stage gain,
and the recipe's mean gain over the runs.

A single run's RL-stage gain mixes the recipe's effect with the luck of one training run (the
curriculum's draws, the sampled rollouts), and a setting picked because one run did well is
optimistic. Repeating the stage with other `--seed` values of `benchmarks/learning.py` gives
fresh draws of the same recipe. This script reads those runs' results files (every run must
start from the same warm start, i.e. the same `chains` rows, on the same held-out tasks) and
writes, per run, the RL stage's gain on the held-out world with its paired-bootstrap interval,
HotpotQA after the stage, and how many answers the stage changed; pooled, the mean over the
runs of each task's EM against the warm start's, with a paired bootstrap over tasks (its
interval covers the choice of tasks, not the spread between runs: the per-run rows show that).
`--against OTHER.json` also compares each run's final policy, and the pooled one, with another
learning run's final policy on the same tasks (for example the shipped one, `learning.json`).

Usage: python benchmarks/seeds.py benchmarks/results/RUN.json [RUN2.json ...] --name NAME
       [--against benchmarks/results/OTHER.json]   (writes benchmarks/results/NAME.json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from protocol import ROOT, paired, pooled_rows, write
from report import interval, signed
from rich.console import Console
from rich.table import Table

console = Console()
SUITES = ("world", "hotpotqa")


def pooled(runs: list[dict[str, Any]], suite: str) -> list[dict[str, Any]]:
    """Per-task rows of the runs' final stage on `suite`, each task's EM averaged over the runs."""
    return pooled_rows([data["stages"]["grpo"][suite]["per_task"] for data in runs])


def changed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> int:
    """How many tasks' answers differ between two evaluations of the same tasks."""
    answers = {r["task_id"]: r.get("answer") for r in before}
    return sum(answers[r["task_id"]] != r.get("answer") for r in after)


def final_rows(data: dict[str, Any], suite: str) -> list[dict[str, Any]]:
    """Per-task rows of a learning run's last stage on `suite`."""
    return data["stages"][list(data["stages"])[-1]][suite]["per_task"]


def versus(other: list[dict[str, Any]], mine: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """`paired(other, mine)`, or a clear exit when the two were not evaluated on the same tasks."""
    try:
        return paired(other, mine)
    except ValueError:
        raise SystemExit(f"--against {path.name}: evaluated on other tasks than these runs") from None


def compare(paths: list[Path], against: Path | None = None) -> dict[str, Any]:
    """Every run's RL-stage gain and the pooled one, after checking the runs share a warm start;
    with `against`, every run's and the pooled final policy's EM against that run's final one."""
    missing = [str(p) for p in [*paths, *([against] if against else [])] if not p.is_file()]
    if missing:
        raise SystemExit(f"no such results file: {', '.join(missing)}")
    runs = [json.loads(p.read_text()) for p in paths]
    for path, data in zip(paths, runs, strict=True):
        if not {"chains", "grpo"} <= set(data.get("stages", {})):
            raise SystemExit(f"{path}: not a chains,grpo run of benchmarks/learning.py")
    warm = {s: runs[0]["stages"]["chains"][s]["per_task"] for s in SUITES}
    for path, data in zip(paths, runs, strict=True):
        if any(data["stages"]["chains"][s]["per_task"] != warm[s] for s in SUITES):
            raise SystemExit(f"{path}: another warm start (its chains rows differ from {paths[0].name}'s)")
    rows = []
    for path, data in zip(paths, runs, strict=True):
        grpo = data["stages"]["grpo"]
        rows.append({"file": path.name, "seed": data["protocol"].get("seed", 0),
                     "steps": grpo["record"]["steps"],
                     "world_em": grpo["world"]["summary"]["all"]["em"],
                     "hotpotqa_em": grpo["hotpotqa"]["summary"]["all"]["em"],
                     "rl_stage": paired(warm["world"], grpo["world"]["per_task"]),
                     "hotpotqa_vs_warm": paired(warm["hotpotqa"], grpo["hotpotqa"]["per_task"]),
                     **{f"{s}_answers_changed": changed(warm[s], grpo[s]["per_task"]) for s in SUITES}})
    mean = {s: paired(warm[s], pooled(runs, s)) for s in SUITES}
    start = runs[0]["stages"]["chains"]
    other = None
    if against:
        theirs = json.loads(against.read_text())
        other = {"file": against.name,
                 "pooled": {s: versus(final_rows(theirs, s), pooled(runs, s), against) for s in SUITES},
                 "runs": [{s: versus(final_rows(theirs, s), final_rows(d, s), against) for s in SUITES}
                          for d in runs]}
    return {"protocol": {"runs": [p.name for p in paths],
                         "warm_start_world_em": start["world"]["summary"]["all"]["em"],
                         "warm_start_hotpotqa_em": start["hotpotqa"]["summary"]["all"]["em"]},
            "runs": rows,
            "summary": {"runs": len(rows),
                        "rl_stage_em_gain_mean": mean["world"]["gain"],
                        "rl_stage_em_gain_mean_ci95": mean["world"]["ci95"],
                        "rl_stage_em_gain_min": min(r["rl_stage"]["gain"] for r in rows),
                        "rl_stage_em_gain_max": max(r["rl_stage"]["gain"] for r in rows),
                        "hotpotqa_em_mean": round(sum(r["hotpotqa_em"] for r in rows) / len(rows), 1),
                        "hotpotqa_gain_mean": mean["hotpotqa"]["gain"],
                        "hotpotqa_gain_mean_ci95": mean["hotpotqa"]["ci95"]},
            **({"against": other} if other else {})}


def main() -> None:
    """Compare the runs, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="learning.py results files of one recipe")
    ap.add_argument("--name", required=True, help="benchmarks/results/NAME.json")
    ap.add_argument("--against", type=Path, help="another learning.py results file, e.g. the shipped "
                    "run's benchmarks/results/learning.json: its final policy against these")
    args = ap.parse_args()
    data = compare([p.resolve() for p in args.results],
                   args.against.resolve() if args.against else None)
    table = Table("run", "seed", "steps", "world EM", "RL stage (points, 95% CI)", "HotpotQA EM",
                  "answers changed (world / HotpotQA)")
    for r in data["runs"]:
        c = r["rl_stage"]
        table.add_row(r["file"], str(r["seed"]), str(r["steps"]), f"{r['world_em']:.1f}",
                      f"{signed(c['gain'])} {interval(c['ci95'])}",
                      f"{r['hotpotqa_em']:.1f}",
                      f"{r['world_answers_changed']} / {r['hotpotqa_answers_changed']}")
    s = data["summary"]
    table.add_row("mean", "", "", "", f"{signed(s['rl_stage_em_gain_mean'])} "
                  f"{interval(s['rl_stage_em_gain_mean_ci95'])}",
                  f"{s['hotpotqa_em_mean']:.1f}")
    console.print(table)
    if "against" in data:
        o = data["against"]["pooled"]
        console.print(f"mean against {data['against']['file']}: " + ", ".join(
            f"{s} {signed(o[s]['gain'])} {interval(o[s]['ci95'])}" for s in SUITES))
    path = write(args.name, data)
    console.print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
