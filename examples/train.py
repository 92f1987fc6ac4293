"""Train the research agents on their own recorded runs: rejection-sampling SFT, then GRPO.

Generates a few fictional tasks and a knowledge base of their pages, records sampled research
runs (several per task, one group each) into a `TrajectoryStore` that scores them, then
  (a) SFT on the runs whose answer F1 reaches --min-reward (`training.sft.train_sft`), and
  (b) online GRPO (`training.grpo.ResearchGRPOTrainer`, LoRA rank 8) starting from the SFT
      model when (a) found runs to learn from, else from --model (groups whose runs are all
      right or all wrong are dropped from the update unless --no-dynamic-sampling),
prints GRPO's metrics rows, and loads the trained folder back as a chat model with
`agents.load_chat_model("hf:" + folder)` (any sleuth command takes `--model hf:DIR`).

    python examples/train.py                           # local SmolLM2-135M: slow on a CPU
    python examples/train.py --model hf:my-model/ --tasks 2 --steps 1 --out train-example
    python examples/train.py --min-reward 0 --json     # SFT on every run; JSON summary line
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import agents
import graph
from tools.corpora import cached_kb, corpus_of
from tools.worlds import generate_world
from training import rewards
from training.grpo import ResearchGRPOTrainer, grpo_config
from training.policy import lora_config
from training.sft import train_sft


def main(argv: list[str] | None = None) -> dict:
    """Record, SFT, GRPO, load back; return a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="local:smollm2", help="a local spec or hf:<folder>")
    p.add_argument("--tasks", type=int, default=4, help="generated tasks to train on")
    p.add_argument("--samples", type=int, default=4, help="recorded runs per task")
    p.add_argument("--steps", type=int, default=5, help="optimiser steps of SFT and of GRPO")
    p.add_argument("--min-reward", type=float, default=0.5, help="SFT keeps runs with F1 >= this")
    p.add_argument("--no-dynamic-sampling", action="store_true", help=(
        "GRPO trains every group, also those all right or all wrong (by default they are "
        "dropped: their rewards differ by shaping terms only)"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="train-example", help="folder for runs and models")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)
    out = Path(args.out)

    tasks = generate_world(seed=args.seed, n_tasks=args.tasks, hops=(2,)).tasks
    kb = cached_kb(corpus_of(tasks))  # built once per corpus, under $SLEUTH_HOME/kb-cache
    rollouts = graph.ResearchConfig(max_rounds=2, temperature=0.7, seed=args.seed)

    # 1. Record sampled runs: the samples of one task share a group_id; each is scored.
    store = graph.TrajectoryStore(out / "runs", reward=rewards.default())
    graph.research_many(tasks, samples_per_task=args.samples, store=store, knowledge=kb,
                        model=args.model, config=rollouts, concurrency=args.samples)
    print(f"recorded {len(store)} runs in {store.file}")

    # 2a. Rejection-sampling SFT: train the completions of the runs that got it right.
    sft_dir, sft = out / "sft", None
    try:
        sft = train_sft(store, model=args.model, reward=rewards.f1, min_reward=args.min_reward,
                        output_dir=sft_dir, max_steps=args.steps, peft_config=lora_config(8))
        print("SFT:", sft)
    except ValueError as e:  # no run reached min_reward: nothing to imitate yet
        print(f"SFT skipped: {e}")

    # 2b. GRPO: rollouts of the current policy, group-relative advantages, clipped updates.
    grpo_dir = out / "grpo"
    start = f"hf:{sft_dir}" if sft else args.model
    trainer = ResearchGRPOTrainer(
        start, rewards.default(),
        grpo_config(grpo_dir, max_steps=args.steps, lora=True,
                    dynamic_sampling=not args.no_dynamic_sampling),
        train_dataset=tasks, peft_config=lora_config(8), sources={"knowledge": kb},
        research=rollouts)
    trainer.train()
    rows = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # every reward component, EM, F1, searches, loss, KL, timings
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
               if k in ("step", "reward/reward", "em", "f1", "searches", "trained_samples", "loss")})

    # 3. The output folder is a plain HF model folder (the LoRA adapter merged; kept in adapter/).
    trained = agents.load_chat_model(f"hf:{grpo_dir}")
    reply = trained.invoke(tasks[0]["question"], max_new_tokens=16)
    print(f"loaded hf:{grpo_dir}; it says: {reply.content!r}")

    summary = {"recorded": len(store), "store": str(store.file), "sft": sft,
               "grpo_start": start, "grpo_dir": str(grpo_dir), "grpo_metrics": rows,
               "loaded": type(trained).__name__, "reply_tokens":
               len(reply.response_metadata.get("completion_token_ids") or [])}
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
