"""How often does a GRPO group's correctness vary? Sampling settings measured on training seeds.

GRPO learns only from groups whose rollouts disagree: a group all right or all wrong has no
correctness signal, and with dynamic sampling it is dropped. Before spending a 30-minute GRPO
stage on a sampling setting, this script measures that fraction directly: a policy (e.g. the
chains stage's warm start) runs `--group` rollouts of each of `--tasks` fresh generated tasks
at each `--temperatures` value, through the same research loop, engine and curriculum levels
as the pipeline's GRPO stage, and counts the informative groups. The tasks come from worlds
of seeds 1,700,000 on (training seeds: no held-out set is touched), the same tasks for every
temperature, so the comparison is paired.

With several `--policy` values (e.g. a warm start and the GRPO stage that continued it) each
later policy's rollout EM is compared with the first's on the same tasks (paired bootstrap):
what the GRPO stage changed in the sampled behaviour it was trained on, apart from the greedy
held-out evaluation of `benchmarks/learning.py`.

Usage: python benchmarks/group_spread.py --policy hf:~/.cache/sleuth/learning-rplanner-all/chains
       [--policy hf:DIR ...] [--temperatures 0.7,1.0] [--group 4] [--tasks 24]
       [--engine ct2-int8] [--name group_spread]
       (writes benchmarks/results/NAME.json)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from protocol import mean_rows, paired, write  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents import load_chat_model  # noqa: E402
from agents.engines import LOCAL_ENGINES  # noqa: E402
from graph import ResearchConfig, research_many  # noqa: E402
from tools.corpora import corpus_of  # noqa: E402
from tools.knowledge import KnowledgeBase  # noqa: E402
from tools.paths import sleuth_home  # noqa: E402
from training import rewards  # noqa: E402
from training.curriculum import Curriculum  # noqa: E402
from training.pipeline import PipelineConfig  # noqa: E402

FIRST_SEED = 1_700_000  # training seeds, past those the pipeline's stages draw in a 60-minute run
console = Console()


def spread(model: BaseChatModel, research: ResearchConfig, temperature: float, tasks: list[dict],
           kb: KnowledgeBase, group: int) -> dict:
    """`group` rollouts of every task at `temperature`: per-task outcomes and the tallies."""
    t0 = time.perf_counter()
    results = research_many(tasks, samples_per_task=group, concurrency=4 * group, model=model,
                            knowledge=kb, config=research.model_copy(update={"temperature": temperature}))
    seconds = time.perf_counter() - t0
    outcomes: dict[str, list[float]] = {str(t["id"]): [] for t in tasks}
    for r in results:
        outcomes[str(r.task_id)].append(rewards.exact_match(r.trajectory) if r.trajectory else 0.0)
    groups = list(outcomes.values())
    return {"temperature": temperature, "groups": len(groups),
            "informative": sum(len(set(g)) > 1 for g in groups),
            "all_right": sum(set(g) == {1.0} for g in groups),
            "all_wrong": sum(set(g) == {0.0} for g in groups),
            "em": round(sum(map(sum, groups)) / sum(map(len, groups)), 4),
            "seconds": round(seconds, 1), "per_task": outcomes}


def main() -> None:
    """Measure every policy at every temperature on the same tasks; print the table and write
    the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, action="append",
                    help="A local spec, e.g. hf:DIR of a chains stage (repeatable: each later "
                    "policy's rollout EM is compared with the first's, task by task).")
    ap.add_argument("--temperatures", default="0.7,1.0")
    ap.add_argument("--group", type=int, default=4, help="Rollouts per task (num_generations).")
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--engine", choices=LOCAL_ENGINES, default="ct2-int8")
    ap.add_argument("--name", default="group_spread", help="Results file: benchmarks/results/NAME.json.")
    args = ap.parse_args()
    if args.group < 2:
        raise SystemExit("--group must be at least 2: one rollout cannot disagree with itself")
    # the pipeline's GRPO curriculum (kinds balanced), its levels drawn evenly: nothing booked
    tasks = Curriculum(first_seed=FIRST_SEED, seed=0, balance_kinds=True).sample(args.tasks)
    kb = KnowledgeBase(tempfile.mkdtemp(prefix="group-spread-kb-"))
    kb.ingest(corpus_of(tasks), progress=False)
    # the GRPO stage's rollout settings (`training.pipeline._grpo`), only the temperature varied
    research = PipelineConfig(output_dir=tempfile.mkdtemp()).research.model_copy(
        update={"seed": 0, "prompt_examples": None})
    temperatures = [float(t) for t in args.temperatures.split(",")]
    measured = []
    for spec in args.policy:
        model = load_chat_model(spec, engine=args.engine)
        measured.append({"policy": spec.replace(str(sleuth_home()), "$SLEUTH_HOME"),  # no machine paths
                         "temperatures": [spread(model, research, t, tasks, kb, args.group)
                                          for t in temperatures]})
    table = Table(title=f"groups of {args.group} on {len(tasks)} training tasks")
    for col in ("policy", "temperature", "informative groups", "all right", "all wrong",
                "rollout EM", "seconds"):
        table.add_column(col)
    for m in measured:
        for r in m["temperatures"]:
            table.add_row(m["policy"], str(r["temperature"]), f"{r['informative']} / {r['groups']}",
                          str(r["all_right"]), str(r["all_wrong"]), f"{r['em']:.2f}", str(r["seconds"]))
    console.print(table)
    data = {"engine": args.engine, "group": args.group, "first_seed": FIRST_SEED,
            "tasks": [t["id"] for t in tasks]}
    if len(measured) == 1:
        data.update(measured[0])
    else:
        data.update(policies=measured, comparisons=_against_first(measured))
        for c in data["comparisons"]:
            console.print(f"{c['policy']} vs {measured[0]['policy']} at T {c['temperature']}: "
                          f"rollout EM {c['gain']:+.1f} points {c['ci95']}")
    path = write(args.name, data)
    console.print(f"wrote {path.name}")


def _against_first(measured: list[dict]) -> list[dict]:
    """Each later policy's rollout EM against the first policy's at each temperature: the
    paired bootstrap over tasks, a task's score the mean of its group."""
    return [{"policy": m["policy"], "temperature": r["temperature"],
             **paired(mean_rows(base["per_task"]), mean_rows(r["per_task"]))}
            for m in measured[1:]
            for base, r in zip(measured[0]["temperatures"], m["temperatures"], strict=True)]


if __name__ == "__main__":
    main()
