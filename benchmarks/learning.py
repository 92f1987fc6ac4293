"""Does training make the research agents better? Learning on one world, held-out evaluation.

1. Evaluate the untrained SmolLM2 (greedy) on a world never trained on (seed 2) and on 100
   HotpotQA development questions.
2. Train a LoRA adapter on another world (seed 1) for at most `--minutes` of wall time on this
   CPU, rollouts included, with either method (`--method grpo|rft|both`):
   - grpo: online trajectory-level GRPO (`training.grpo.train_grpo`);
   - rft: rejection-sampling fine-tuning — record sampled runs of the untrained policy for
     most of the budget, keep the exactly right ones, SFT their model calls
     (`training.sft.train_sft`).
3. Evaluate each trained policy the same way; write benchmarks/results/learning.json: one entry
   per method and a top-level `summary` for the best one on the held-out world. `--ship` copies
   that adapter into the package as `local:smollm2-sleuth` only when it beats the untrained
   policy there and is at most 20 MB.

Each evaluation is kept under $SLEUTH_HOME/runs/learning-evals (keyed by model, weights and
tasks); `--resume` continues an interrupted training within the same total time budget, and a
finished training is not run again.

Usage: python benchmarks/learning.py [--method both] [--minutes 60] [--eval-tasks 60]
       [--hotpot 100] [--resume] [--ship]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from agents.models import sleuth_home  # noqa: E402
from graph import ResearchConfig, TrajectoryStore, research_many  # noqa: E402
from tools.documents import read_tasks  # noqa: E402
from tools.worlds import generate_world  # noqa: E402
from training import rewards  # noqa: E402
from training.evaluate import cached_kb, corpus_of, evaluate  # noqa: E402
from training.grpo import grpo_config, train_grpo  # noqa: E402
from training.sft import train_sft  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
ADAPTER = ROOT / "agents" / "adapters" / "smollm2-sleuth"
METRICS = ("em", "f1", "evidence_recall", "format_rate", "searches", "searches_after_miss")
RESEARCH = ResearchConfig(max_rounds=2, max_attempts=2, max_new_tokens=64)
EVAL = RESEARCH.model_copy(update={"temperature": 0.0, "seed": 0})
LORA_R = 8
console = Console(width=150)


def overall(result: dict) -> dict:
    """The graph run's overall metrics."""
    return result["runs"]["graph"]["overall"]


def evaluate_all(model: str, suites: dict[str, list[dict]], weights: Path | None = None) -> dict:
    """Evaluate `model` on every suite, reusing an evaluation kept from an earlier run."""
    evals_dir = sleuth_home() / "runs" / "learning-evals"
    salt = weights.read_bytes() if weights is not None else b""
    out = {}
    for name, tasks in suites.items():
        key = hashlib.sha256(salt + json.dumps([model, EVAL.model_dump(mode="json"),
                                                [t["id"] for t in tasks]]).encode())
        cached = evals_dir / f"{name}-{key.hexdigest()[:16]}.json"
        if cached.exists():
            console.print(f"eval {model} on {name}: kept from {cached}")
            out[name] = json.loads(cached.read_text())
            continue
        console.print(f"[bold]eval {model} on {name} ({len(tasks)} tasks)[/bold]")
        out[name] = evaluate(tasks, model=model, concurrency=8, config=EVAL)
        evals_dir.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(out[name], default=str))
    return out


def run_grpo(tasks: list[dict], run_dir: Path, args: argparse.Namespace) -> dict:
    """GRPO within the time budget; returns what the result records about the training."""
    console.print(f"[bold]GRPO for at most {args.minutes} minutes[/bold]")
    train_grpo(tasks, model="local:smollm2", output_dir=run_dir, lora=True, lora_r=LORA_R,
               group_size=args.group_size, batch_tasks=args.batch_tasks, research=RESEARCH,
               time_budget_s=60 * args.minutes, resume=args.resume,
               args=grpo_config(run_dir, max_steps=10_000, save_steps=5, learning_rate=args.lr,
                                temperature=0.7, seed=0),
               on_step=lambda r: console.print(
                   f"step {r['step']}: reward {r['reward/reward']:.3f} em {r['em']:.2f} "
                   f"searches {r['searches']:.2f} format {r['format_rate']:.2f} "
                   f"after-miss {r['searches_after_miss']:.2f} ({r['step_s']:.0f} s)"))
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.copy(run_dir / "curves.png", RESULTS / "learning_curves.png")
    return {"train_minutes": sum(r["step_s"] for r in history) / 60,  # across resumed runs
            "steps": len(history), "history": history,
            "config": {"lr": args.lr, "group_size": args.group_size,
                       "batch_tasks": args.batch_tasks, "temperature": 0.7}}


def run_rft(tasks: list[dict], run_dir: Path, args: argparse.Namespace) -> dict:
    """Record sampled runs for most of the budget, then SFT the exactly right ones."""
    sft_reserve_s = 60 * args.sft_minutes
    budget_s = 60 * args.minutes - sft_reserve_s
    state_file = run_dir / "record_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"spent_s": 0.0}
    store = TrajectoryStore(run_dir / "trajectories")
    done = {t.task_id for t in store}
    right = sum(rewards.exact_match(t) for t in store)  # runs kept from an interrupted run
    todo = [t for t in tasks if t["id"] not in done]
    knowledge = cached_kb(corpus_of(tasks))
    sample_cfg = RESEARCH.model_copy(update={"temperature": args.sample_temperature})
    console.print(f"[bold]RFT: sampling for at most {budget_s / 60:.0f} min[/bold]")
    chunk = 2 * args.group_size  # tasks per round; group_size runs each keep 8+ rows decoding
    while todo:
        t0 = time.perf_counter()
        batch, todo = todo[:chunk], todo[chunk:]
        if state["spent_s"] + state.get("last_s", 0.0) > budget_s:
            break
        results = research_many(batch, samples_per_task=args.group_size, concurrency=8,
                                store=store, model="local:smollm2", knowledge=knowledge,
                                config=sample_cfg.model_copy(update={"seed": len(done)}))
        done.update(t["id"] for t in batch)
        state["last_s"] = time.perf_counter() - t0
        state["spent_s"] += state["last_s"]
        state_file.write_text(json.dumps(state))
        right += sum(rewards.exact_match(r.trajectory) for r in results if r.trajectory)
        console.print(f"recorded {len(store)} runs of {len(done)} tasks, {right:.0f} exactly "
                      f"right ({state['spent_s'] / 60:.1f} min)")
    console.print("[bold]RFT: SFT on the exactly right runs[/bold]")
    t0 = time.perf_counter()
    stats = train_sft(store, output_dir=run_dir, model="local:smollm2", reward=rewards.exact_match,
                      min_reward=1.0, lora=True, lora_r=LORA_R, epochs=args.sft_epochs,
                      learning_rate=args.lr, batch_size=4, gradient_checkpointing=False,
                      time_budget_s=max(60.0, 60 * args.minutes - state["spent_s"]))
    sft_s = time.perf_counter() - t0
    trajectories = list(store)
    return {"train_minutes": (state["spent_s"] + sft_s) / 60, "record_minutes": state["spent_s"] / 60,
            "sft_minutes": sft_s / 60, "recorded_runs": len(trajectories),
            "recorded_tasks": len({t.task_id for t in trajectories}),
            "kept_runs": int(sum(rewards.exact_match(t) for t in trajectories)),
            "sft": {k: v for k, v in stats.items() if isinstance(v, int | float | str)},
            "config": {"lr": args.lr, "group_size": args.group_size,
                       "temperature": args.sample_temperature, "epochs": args.sft_epochs,
                       "min_exact_match": 1.0}}


def main() -> None:
    """Evaluate, train, evaluate, write."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=("grpo", "rft", "both"), default="both")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--eval-tasks", type=int, default=60)
    ap.add_argument("--hotpot", type=int, default=100)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-tasks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--sft-minutes", type=float, default=8, help="rft: budget kept for the SFT")
    ap.add_argument("--sft-epochs", type=float, default=2)
    ap.add_argument("--sample-temperature", type=float, default=0.3,
                    help="rft: sampling temperature (at 0.7 SmolLM2 got 1 of 64 runs right)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    train_tasks = generate_world(seed=1, n_tasks=300, hops=(2, 3)).tasks
    suites = {"world": generate_world(seed=2, n_tasks=args.eval_tasks, hops=(2, 3)).tasks,
              "hotpotqa": read_tasks(DATA / "hotpotqa_dev.jsonl", args.hotpot)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS / "learning.json"
    earlier = json.loads(out_file.read_text()) if out_file.exists() else {}
    result: dict = {"methods": earlier.get("methods", {})}  # methods run by other invocations
    methods = ("grpo", "rft") if args.method == "both" else (args.method,)
    for method in methods:
        run_dir = sleuth_home() / "runs" / ("learning" if method == "grpo" else "learning-rft")
        marker = run_dir / "trained.json"
        if run_dir.exists() and not args.resume:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if marker.exists():  # a finished training: resuming it would only reload a checkpoint
            training = json.loads(marker.read_text())
            console.print(f"{method}: trained before, {training['train_minutes']:.1f} min")
        else:
            training = (run_grpo if method == "grpo" else run_rft)(train_tasks, run_dir, args)
            marker.write_text(json.dumps(training))
        # The untrained policy last: a killed run has then already kept the trained one's figures.
        after = evaluate_all(f"hf:{run_dir}", suites, run_dir / "adapter" / "adapter_model.safetensors")
        before = evaluate_all("local:smollm2", suites)
        result["methods"][method] = {
            "world_em_before": round(100 * overall(before["world"])["em"], 1),
            "world_em_after": round(100 * overall(after["world"])["em"], 1),
            "hotpotqa_em_before": round(100 * overall(before["hotpotqa"])["em"], 1),
            "hotpotqa_em_after": round(100 * overall(after["hotpotqa"])["em"], 1),
            "train_minutes": round(training["train_minutes"], 1), "checkpoint": f"hf:{run_dir}",
            "adapter_mb": sum(f.stat().st_size for f in (run_dir / "adapter").glob("*")) / 1e6,
            "before": {k: {m: overall(v)[m] for m in METRICS} for k, v in before.items()},
            "after": {k: {m: overall(v)[m] for m in METRICS} for k, v in after.items()},
            "training": training,
        }
    best_name, best = max(result["methods"].items(), key=lambda kv: kv[1]["world_em_after"])
    summary = {k: best[k] for k in ("world_em_before", "world_em_after", "hotpotqa_em_before",
                                    "hotpotqa_em_after", "train_minutes", "checkpoint")}
    summary["method"] = best_name
    helps = best["world_em_after"] > best["world_em_before"]
    if args.ship and helps and best["adapter_mb"] <= 20:
        if ADAPTER.exists():
            shutil.rmtree(ADAPTER)
        shutil.copytree(Path(best["checkpoint"][3:]) / "adapter", ADAPTER)
        summary["checkpoint"] = "local:smollm2-sleuth"
    elif args.ship:
        console.print("[yellow]not shipped: the best adapter does not beat the untrained policy "
                      "on the held-out world[/yellow]" if not helps else "not shipped: over 20 MB")
    result["summary"] = summary
    result["config"] = {"research": RESEARCH.model_dump(mode="json"),
                        "eval": EVAL.model_dump(mode="json"), "lora_r": LORA_R,
                        "train_world_seed": 1, "heldout_world_seed": 2,
                        "heldout_world_tasks": args.eval_tasks, "hotpotqa_tasks": args.hotpot}
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    console.print(summary)
    for method, r in result["methods"].items():
        for name in ("world", "hotpotqa"):
            b, a = r["before"][name], r["after"][name]
            console.print(f"{method} {name}: "
                          + ", ".join(f"{m} {b[m]:.3f} -> {a[m]:.3f}" for m in METRICS))


if __name__ == "__main__":
    main()
