"""Does CML teach the selector to tell relevant knowledge from irrelevant? Held-out evidence F1.

1. A warm start: the chains stage (SFT on rationale chains) of `training.pipeline`, trained
   here or taken from a finished pipeline run (`--warm-start DIR`, e.g. the learning
   benchmark's `chains` folder; it is copied, never changed).
2. CML on top of it (`training.cml`, the pipeline's `cml` stage): generated training worlds
   (seeds from 1,200,000) plus HotpotQA development questions 101-300 — never the 100 the
   evaluation holds out — each with hard distractors from its own dataset's knowledge base.
3. The protocol's held-out sets (`benchmarks/protocol.py`: world seed 2, 200 tasks; the first
   100 HotpotQA development questions), greedy: the warm start with the lexical selector
   against the CML policy, whose card makes the selector ask the model about each passage;
   with `--ablation` also the CML policy with the lexical selector (what the writer's blended
   training alone gives). Per-task rows; paired-bootstrap intervals for evidence F1 and EM.

Writes benchmarks/results/cml.json (`summary` first); resumes (stages and evaluations are
kept under $SLEUTH_HOME/runs).

Usage: python benchmarks/cml.py [--minutes chains=25,cml=15] [--warm-start DIR] [--ablation]
       [--limit N]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from protocol import DATA, EVAL, evaluate_cached, mean_points, paired, rows, suites, summary, write
from rich.console import Console

from tools.documents import read_tasks
from tools.paths import sleuth_home
from training.pipeline import PipelineConfig, run_pipeline

RUN_DIR = "runs/cml"
HOTPOT_TRAIN = slice(100, 300)  # the development questions the evaluation does not hold out
console = Console(width=150)


def evaluate(model: str, tasks: dict[str, list[dict]], weights: Path, *,
             judge: bool | None = None) -> dict[str, dict]:
    """A policy on every suite (its selector as its card says, or as `judge` forces)."""
    config = EVAL if judge is None else EVAL.model_copy(update={"judge_passages": judge})
    out = {}
    for suite, suite_tasks in tasks.items():
        result = evaluate_cached(model, suite, suite_tasks, weights=weights, config=config,
                                 say=console.print)
        out[suite] = {"summary": summary(rows(result, "graph")), "per_task": rows(result, "graph")}
    return out


def main() -> None:
    """Warm start, CML, both evaluated on the held-out sets; write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="chains=25,cml=15")
    ap.add_argument("--warm-start", type=Path, default=None,
                    help="A finished chains stage folder to start from (copied).")
    ap.add_argument("--ablation", action="store_true", help="Also CML with the lexical selector.")
    ap.add_argument("--limit", type=int, default=None, help="First N tasks of each suite.")
    args = ap.parse_args()
    out = sleuth_home() / RUN_DIR
    if args.warm_start is not None and not (out / "chains").exists():
        if not (args.warm_start / "stage.json").exists():
            raise SystemExit(f"{args.warm_start} is not a finished pipeline stage (no stage.json)")
        shutil.copytree(args.warm_start, out / "chains", ignore=shutil.ignore_patterns("trainer"))
    hotpot_train = read_tasks(DATA / "hotpotqa_dev.jsonl")[HOTPOT_TRAIN]
    cfg = PipelineConfig(output_dir=str(out), stages=("chains", "cml"),
                         minutes={k: float(v) for k, v in
                                  (kv.split("=") for kv in args.minutes.split(","))},
                         cml_extra_tasks=hotpot_train)
    records = run_pipeline(cfg, log=console.print)
    tasks = suites(args.limit)
    runs = {"lexical": evaluate(f"hf:{out / 'chains'}", tasks, out / "chains" / "adapter"),
            "cml": evaluate(f"hf:{out / 'cml'}", tasks, out / "cml" / "adapter")}
    if args.ablation:
        runs["cml_lexical"] = evaluate(f"hf:{out / 'cml'}", tasks, out / "cml" / "adapter",
                                       judge=False)
    comparisons = {f"{suite}_{metric}": paired(runs["lexical"][suite]["per_task"],
                                               runs["cml"][suite]["per_task"], metric=metric)
                   for suite in tasks for metric in ("evidence_f1", "em")}
    summary_ = {"cml_minutes": records["cml"]["minutes"], "cml_groups": records["cml"]["groups"],
                "cml_steps": records["cml"]["steps"]}
    for suite in tasks:
        for metric in ("evidence_f1", "em"):
            summary_[f"{suite}_{metric}_lexical"] = mean_points(runs["lexical"][suite]["per_task"], metric)
            summary_[f"{suite}_{metric}_cml"] = mean_points(runs["cml"][suite]["per_task"], metric)
            summary_[f"{suite}_{metric}_gain_ci95"] = comparisons[f"{suite}_{metric}"]["ci95"]
    summary_["evidence_goal_met"] = all(comparisons[f"{s}_evidence_f1"]["gain"] >= 15 for s in tasks)
    summary_["em_goal_met"] = all(comparisons[f"{s}_em"]["gain"] >= 3 for s in tasks)
    data = {"summary": summary_, "comparisons": comparisons,
            "protocol": {"eval": EVAL.model_dump(mode="json"), "minutes": cfg.minutes,
                         "hotpotqa_training_questions": [HOTPOT_TRAIN.start + 1, HOTPOT_TRAIN.stop],
                         "warm_start": "given" if args.warm_start else "trained here"},
            "stages": {k: {kk: vv for kk, vv in v.items() if kk != "checkpoint"}
                       for k, v in records.items()},
            "runs": runs}
    path = write("cml", data)
    console.print(summary_)
    console.print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
