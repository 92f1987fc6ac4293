"""Does training make the research agents better? GRPO on generated worlds, held-out evaluation.

1. Evaluate the untrained SmolLM2 (greedy) on a world never trained on (seed 2) and on 100
   HotpotQA development questions.
2. Train a LoRA adapter with trajectory-level GRPO on another world (seed 1) for at most
   `--minutes` of wall time on this CPU (rollouts included).
3. Evaluate the trained policy the same way; write benchmarks/results/learning.json (top-level
   `summary`), copy the training curves, and ship the adapter into the package as
   `local:smollm2-sleuth` when it is at most 20 MB (`--ship`).

Each evaluation is kept under $SLEUTH_HOME/runs/learning-evals (keyed by model, weights and
tasks), and `--resume` continues an interrupted training from its last checkpoint within the
same total time budget, so a killed run loses at most one checkpoint interval.

Usage: python benchmarks/learning.py [--minutes 60] [--eval-tasks 60] [--hotpot 100] [--resume]
       [--ship]
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
from graph import ResearchConfig  # noqa: E402
from tools.documents import read_tasks  # noqa: E402
from tools.worlds import generate_world  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from training.grpo import grpo_config, train_grpo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
ADAPTER = ROOT / "agents" / "adapters" / "smollm2-sleuth"
console = Console(width=150)


def overall(result: dict) -> dict:
    """The graph run's overall metrics."""
    return result["runs"]["graph"]["overall"]


def main() -> None:
    """Evaluate, train, evaluate, write."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--eval-tasks", type=int, default=60)
    ap.add_argument("--hotpot", type=int, default=100)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-tasks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    run_dir = sleuth_home() / "runs" / "learning"
    evals_dir = sleuth_home() / "runs" / "learning-evals"
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    train_tasks = generate_world(seed=1, n_tasks=300, hops=(2, 3)).tasks
    heldout = generate_world(seed=2, n_tasks=args.eval_tasks, hops=(2, 3)).tasks
    hotpot = read_tasks(DATA / "hotpotqa_dev.jsonl", args.hotpot)
    research = ResearchConfig(max_rounds=2, max_attempts=2, max_new_tokens=64)
    eval_cfg = research.model_copy(update={"temperature": 0.0, "seed": 0})

    def evaluate_all(model: str) -> dict:
        out = {}
        weights = run_dir / "adapter" / "adapter_model.safetensors"
        salt = weights.read_bytes() if model.startswith("hf:") else b""
        for name, tasks in (("world", heldout), ("hotpotqa", hotpot)):
            key = hashlib.sha256(salt + json.dumps([model, eval_cfg.model_dump(mode="json"),
                                                    [t["id"] for t in tasks]]).encode())
            cached = evals_dir / f"{name}-{key.hexdigest()[:16]}.json"
            if cached.exists():
                console.print(f"eval {model} on {name}: kept from {cached}")
                out[name] = json.loads(cached.read_text())
                continue
            console.print(f"[bold]eval {model} on {name} ({len(tasks)} tasks)[/bold]")
            out[name] = evaluate(tasks, model=model, concurrency=8, config=eval_cfg)
            evals_dir.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(out[name], default=str))
        return out

    console.print(f"[bold]GRPO for at most {args.minutes} minutes[/bold]")
    t0 = time.perf_counter()
    train_grpo(train_tasks, model="local:smollm2", output_dir=run_dir, lora=True, lora_r=8,
               group_size=args.group_size, batch_tasks=args.batch_tasks, research=research,
               time_budget_s=60 * args.minutes, resume=args.resume,
               args=grpo_config(run_dir, max_steps=10_000, save_steps=5, learning_rate=args.lr,
                                temperature=0.7, seed=0),
               on_step=lambda r: console.print(
                   f"step {r['step']}: reward {r['reward/reward']:.3f} em {r['em']:.2f} "
                   f"format {r['format_rate']:.2f} after-miss {r['searches_after_miss']:.2f} "
                   f"({r['step_s']:.0f} s)"))
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_minutes = sum(r["step_s"] for r in history) / 60  # across resumed runs
    console.print(f"trained {len(history)} steps in {train_minutes:.1f} min "
                  f"({(time.perf_counter() - t0) / 60:.1f} min in this run)")
    # The untrained policy last: a killed run has then already kept the trained one's figures.
    after = evaluate_all(f"hf:{run_dir}")
    before = evaluate_all("local:smollm2")

    adapter_mb = sum(f.stat().st_size for f in (run_dir / "adapter").glob("*")) / 1e6
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "curves.png", RESULTS / "learning_curves.png")
    checkpoint = f"hf:{run_dir}"
    if args.ship and adapter_mb <= 20:
        if ADAPTER.exists():
            shutil.rmtree(ADAPTER)
        shutil.copytree(run_dir / "adapter", ADAPTER)
        checkpoint = "local:smollm2-sleuth"
    metrics = ("em", "f1", "evidence_recall", "format_rate", "searches", "searches_after_miss")
    result = {
        "summary": {"world_em_before": round(100 * overall(before["world"])["em"], 1),
                    "world_em_after": round(100 * overall(after["world"])["em"], 1),
                    "hotpotqa_em_before": round(100 * overall(before["hotpotqa"])["em"], 1),
                    "hotpotqa_em_after": round(100 * overall(after["hotpotqa"])["em"], 1),
                    "train_minutes": round(train_minutes, 1), "checkpoint": checkpoint},
        "before": {k: {m: overall(v)[m] for m in metrics} for k, v in before.items()},
        "after": {k: {m: overall(v)[m] for m in metrics} for k, v in after.items()},
        "steps": len(history), "adapter_mb": adapter_mb, "history": history,
        "config": {"research": research.model_dump(), "eval": eval_cfg.model_dump(),
                   "lr": args.lr, "group_size": args.group_size, "batch_tasks": args.batch_tasks,
                   "lora_r": 8, "train_world_seed": 1, "heldout_world_seed": 2},
    }
    (RESULTS / "learning.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(result["summary"])
    for name in ("world", "hotpotqa"):
        b, a = result["before"][name], result["after"][name]
        console.print(f"{name}: " + ", ".join(f"{m} {b[m]:.3f} -> {a[m]:.3f}" for m in metrics))


if __name__ == "__main__":
    main()
