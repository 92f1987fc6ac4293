"""Does training make the research agents better? The staged recipe, held-out evaluation.

1. Before: the untrained SmolLM2 on the held-out sets of `benchmarks/protocol.py` (a world
   of 200 tasks never trained on; 100 HotpotQA development questions), greedy — the same
   cached evaluation as the baselines — and the retrieval-only title baseline.
2. Train with `training.pipeline` (a LoRA adapter, wall-clock budget per stage on this CPU;
   training worlds use seeds from 1,000,000 on): `chains` — SFT on rationale-chain
   demonstrations rendered through the agents' own prompts (no worked examples), with
   `--chain-tasks` real questions' decompositions too (e.g. MuSiQue's); `grpo` —
   trajectory-level GRPO over a curriculum of fresh generated tasks, continuing the adapter.
3. After every stage: the same evaluation. Per-task rows are kept, so every comparison is
   paired: the EM gain with a paired-bootstrap 95% interval, tasks gained and lost, results
   by question type. The final policy is also run WITH the worked examples on the first 100
   held-out world tasks, to measure whether it still needs them.
4. `--ship` copies the final adapter into the package as `local:smollm2-sleuth` only if it
   meets the world goal (EM +20 points over the untrained policy, the interval's low end at
   least +10).

Writes benchmarks/results/learning.json (`summary` first) and learning_curves.png; resumes
an interrupted run (finished stages and evaluations are kept under $SLEUTH_HOME/runs).

Usage: python benchmarks/learning.py [--stages chains,grpo] [--minutes chains=25,grpo=35]
       [--limit N] [--ship] [--run-dir DIR] [--prompt writer=writer_reasoned] [--balance-roles]
       [--lora-r R] [--lora-layers N] [--grpo-layers N] [--engine ct2-int8] [--rollouts-per-step 16]
       [--before-from benchmarks/results/learning.json] [--chain-tasks ../shared/data/musique_dev.jsonl ...]
       [--reward grounded]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from protocol import DATA, EVAL, ROOT, evaluate_cached, paired, rows, suites, summary, write
from rich.console import Console

from agents.engines import LOCAL_ENGINES
from agents.models import read_policy_card
from tools.documents import read_tasks
from tools.paths import sleuth_home
from training.grpo import plot_curves
from training.pipeline import PipelineConfig, grpo_settings, role_prompts, run_pipeline
from training.rewards import MIXES

BASE = "local:smollm2"
ADAPTER = ROOT / "agents" / "adapters" / "smollm2-sleuth"
RUN_DIR = "runs/learning"
console = Console(width=150)


def evaluate_policy(model: str, tasks: dict[str, list[dict]], weights: Path | None = None,
                    ) -> dict[str, dict]:
    """A policy's graph runs on every suite: summary and per-task rows."""
    out = {}
    for suite, suite_tasks in tasks.items():
        result = evaluate_cached(model, suite, suite_tasks, weights=weights, say=console.print)
        out[suite] = {"summary": summary(rows(result, "graph")), "per_task": rows(result, "graph")}
    return out


def needs_examples(model: str, tasks: list[dict], weights: Path, default: list[dict]) -> dict:
    """The trained policy with and without the worked examples on the same tasks; `default`
    holds its rows on these tasks as trained (its policy card says: without examples)."""
    ids = {t["id"] for t in tasks}
    runs = {False: [r for r in default if r["task_id"] in ids]}
    if read_policy_card(weights).get("prompt_examples", True):
        raise ValueError(f"{weights} was trained with the worked examples; nothing to compare")
    config = EVAL.model_copy(update={"prompt_examples": True})
    result = evaluate_cached(model, "world", tasks, weights=weights, config=config,
                             say=console.print)
    runs[True] = rows(result, "graph")
    tokens = {k: sum(r["tokens"] for r in v) / sum(r["model_calls"] for r in v) for k, v in runs.items()}
    return {"n": len(tasks), "em_without": summary(runs[False])["all"]["em"],
            "em_with": summary(runs[True])["all"]["em"],
            "with_minus_without": paired(runs[False], runs[True]),
            "tokens_per_call_without": round(tokens[False], 1),
            "tokens_per_call_with": round(tokens[True], 1)}


def main() -> None:
    """Before, train stage by stage, after each stage; write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="chains,grpo")
    ap.add_argument("--minutes", default="chains=25,grpo=35")
    ap.add_argument("--limit", type=int, default=None, help="First N tasks of each suite.")
    ap.add_argument("--run-dir", default=RUN_DIR, help="Training folder under $SLEUTH_HOME.")
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--prompt", action="append", default=[], metavar="ROLE=PROMPT",
                    help="e.g. writer=writer_reasoned or planner=planner_reasoned (repeatable; "
                    "training.pipeline's `prompts`).")
    ap.add_argument("--balance-roles", action="store_true", help="Chains: every role equally often.")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank.")
    ap.add_argument("--engine", default="transformers", choices=LOCAL_ENGINES,
                    help="What samples the GRPO stage's rollouts.")
    ap.add_argument("--lora-layers", type=int, default=None,
                    help="LoRA on the top N decoder layers only (faster updates).")
    ap.add_argument("--grpo-layers", type=int, default=None,
                    help="GRPO trains the adapter of the top N decoder layers only (faster steps).")
    ap.add_argument("--rollouts-per-step", type=int, default=None,
                    help="GRPO: rollouts sampled per step (tasks x 4 generations; default 8).")
    ap.add_argument("--chain-tasks", type=Path, action="append", default=[], metavar="TASKS_JSONL",
                    help="Real tasks with a decomposition or evidence triples, demonstrated in the "
                    "chains stage beside the generated ones, e.g. ../shared/data/musique_dev.jsonl "
                    "(repeatable; never a held-out set).")
    ap.add_argument("--reward", default="default", choices=list(MIXES),
                    help="The GRPO stage's reward mix (training.rewards.mix).")
    ap.add_argument("--grpo", action="append", default=[], metavar="KEY=VALUE",
                    help="A GRPO stage setting by its GRPOConfig name, e.g. learning_rate=2e-5 "
                    "or beta=0.04 (repeatable; training.pipeline.grpo_settings).")
    ap.add_argument("--seed", type=int, default=0,
                    help="The training stages' seed (their curriculum draws, GRPO's sampling); "
                    "another value repeats a stage to measure its spread.")
    ap.add_argument("--name", default="learning",
                    help="Results file name: benchmarks/results/NAME.json and NAME_curves.png "
                    "(another name keeps the shipped run's learning.json).")
    ap.add_argument("--before-from", type=Path, default=None, metavar="RESULTS_JSON",
                    help="Take the untrained policy's rows and the title baseline from an earlier "
                    "results file of this benchmark (same protocol and tasks, checked) instead "
                    "of evaluating them again.")
    args = ap.parse_args()
    if any(f.resolve() == (DATA / "hotpotqa_dev.jsonl").resolve() for f in args.chain_tasks):
        raise SystemExit("--chain-tasks: HotpotQA development questions are held out here")
    if args.ship and args.name != "learning":
        raise SystemExit("--ship writes the shipped run's learning.json: leave --name out")
    try:
        grpo = grpo_settings(args.grpo)  # a wrong name fails now, not after the evaluations
    except ValueError as e:
        raise SystemExit(str(e)) from None
    tasks = suites(args.limit)
    if args.before_from:
        before, title = earlier_before(args.before_from, tasks)
    else:
        before = evaluate_policy(BASE, tasks)
        title = rows(evaluate_cached(BASE, "hotpotqa", tasks["hotpotqa"], mode="retrieval",
                                     say=console.print), "retrieval-title")
    cfg = PipelineConfig(output_dir=str(sleuth_home() / args.run_dir),
                         stages=tuple(args.stages.split(",")),
                         minutes={k: float(v) for k, v in
                                  (kv.split("=") for kv in args.minutes.split(","))},
                         prompts=role_prompts(args.prompt), balance_roles=args.balance_roles,
                         lora_r=args.lora_r, lora_layers=args.lora_layers,
                         chain_extra_tasks=[t for f in args.chain_tasks for t in read_tasks(f)],
                         reward=args.reward, grpo_layers=args.grpo_layers, seed=args.seed)
    cfg.grpo.update(rollout_engine=args.engine, **grpo)
    if args.rollouts_per_step:
        cfg.grpo["per_device_train_batch_size"] = args.rollouts_per_step
    records = run_pipeline(cfg, log=console.print)
    stages = {}
    for stage, record in records.items():
        folder = Path(cfg.output_dir) / stage
        stages[stage] = {"record": _portable(record),
                         **evaluate_policy(f"hf:{folder}", tasks, weights=folder / "adapter")}
    final = list(records)[-1]
    final_dir = Path(cfg.output_dir) / final
    data = _results(before, title, stages, records, cfg)
    if args.chain_tasks:
        data["protocol"]["chain_tasks"] = [f.name for f in args.chain_tasks]
    if args.before_from:
        data["protocol"]["before_from"] = str(args.before_from.resolve().relative_to(ROOT))
    data["prompt_examples"] = needs_examples(f"hf:{final_dir}", tasks["world"][:100],
                                             final_dir / "adapter",
                                             stages[final]["world"]["per_task"])
    if "grpo" in records and (final_dir / "metrics.jsonl").exists():
        data["stages"]["grpo"]["curve"] = _curves(final_dir, args.name)
    shipped = args.ship and data["summary"]["world_goal_met"]
    if shipped:
        _ship(final_dir)
    data["summary"]["checkpoint"] = ("local:smollm2-sleuth" if shipped
                                     else f"hf:$SLEUTH_HOME/{args.run_dir}/{final} (not shipped)")
    path = write(args.name, data)
    console.print(data["summary"])
    console.print(f"wrote {path.relative_to(ROOT)}")


def earlier_before(path: Path, tasks: dict[str, list[dict]]) -> tuple[dict, list[dict]]:
    """The untrained policy's evaluation and the title baseline's rows from an earlier results
    file of this benchmark, after checking it used this protocol on these tasks."""
    data = json.loads(path.read_text())
    if data.get("protocol", {}).get("eval") != EVAL.model_dump(mode="json"):
        raise SystemExit(f"{path}: evaluated under another research configuration; not reusable")
    before, title = data["before"], data["hotpotqa_retrieval_title"]["per_task"]
    for suite, rows_ in (*((s, before[s]["per_task"]) for s in tasks), ("hotpotqa", title)):
        if [r["task_id"] for r in rows_] != [t["id"] for t in tasks[suite]]:
            raise SystemExit(f"{path}: its {suite} rows are not this run's tasks; not reusable")
    console.print(f"untrained policy and title baseline: taken from {path.name}")
    return before, title


def _results(before: dict, title_rows: list[dict], stages: dict, records: dict,
             cfg: PipelineConfig) -> dict:
    """The results file: summary, comparisons, and every evaluation with its per-task rows."""
    names = list(stages)
    after, warm = stages[names[-1]], stages[names[-2]] if len(names) > 1 else None
    world = paired(before["world"]["per_task"], after["world"]["per_task"])
    hotpot = paired(before["hotpotqa"]["per_task"], after["hotpotqa"]["per_task"])
    rl = paired(warm["world"]["per_task"], after["world"]["per_task"]) if warm else None
    title = summary(title_rows)["all"]["em"]
    minutes = sum(float(r["minutes"]) for r in records.values())
    em = {k: v["world"]["summary"]["all"]["em"] for k, v in (("before", before), ("after", after))}
    summary_ = {
        "world_em_before": em["before"], "world_em_after": em["after"],
        "world_em_gain_ci95": world["ci95"],
        "hotpotqa_em_before": before["hotpotqa"]["summary"]["all"]["em"],
        "hotpotqa_em_after": after["hotpotqa"]["summary"]["all"]["em"],
        "hotpotqa_retrieval_baseline_em": title,
        "rl_stage_em_gain": rl["gain"] if rl else None,
        "rl_stage_em_gain_ci95": rl["ci95"] if rl else None,
        "train_minutes": round(minutes, 1), "stages": names, "checkpoint": None,
        "world_goal_met": world["gain"] >= 20 and world["ci95"][0] >= 10}
    return {"summary": summary_,
            "comparisons": {"world_after_vs_before": world, "hotpotqa_after_vs_before": hotpot,
                            "rl_stage_vs_warm_start": rl},
            "protocol": {"eval": EVAL.model_dump(mode="json"), "lora_r": cfg.lora_r,
                         "minutes": cfg.minutes, "first_training_seed": cfg.first_seed,
                         "prompts": cfg.prompts, "balance_roles": cfg.balance_roles,
                         "lora_layers": cfg.lora_layers, "grpo_layers": cfg.grpo_layers,
                         "reward": cfg.reward, "seed": cfg.seed,
                         "balance_kinds": cfg.balance_kinds,
                         "grpo": {k: v for k, v in cfg.grpo.items() if k != "save_steps"}},
            "before": before, "hotpotqa_retrieval_title": {
                "summary": summary(title_rows), "per_task": title_rows},
            "stages": stages}


def _portable(record: dict) -> dict:
    """A stage record without machine paths."""
    return {k: v for k, v in record.items() if k != "checkpoint"}


CURVE_KEYS = ("step", "em", "reward/reward", "searches", "searches_after_miss",
              "reward/search_cost", "reward/persistence", "groups_informative", "step_s")


def _curves(folder: Path, name: str) -> list[dict]:
    """Plot the GRPO stage's per-step metrics; the main ones per step, for the JSON."""
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    if history:
        plot_curves(history, ROOT / "benchmarks" / "results" / f"{name}_curves.png")
    return [{k: row[k] for k in CURVE_KEYS if k in row} for row in history]


def _ship(folder: Path) -> None:
    """Replace the packaged adapter with this one (weights, config, policy card); the config
    names its base by model name, not by this machine's path."""
    for f in ("adapter_model.safetensors", "sleuth.json"):
        shutil.copy2(folder / "adapter" / f, ADAPTER / f)
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (ADAPTER / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    console.print(f"shipped {folder / 'adapter'} as local:smollm2-sleuth")


if __name__ == "__main__":
    main()
