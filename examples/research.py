"""Research from Python: one question, then many tasks recorded and scored in a store.

Generates a small fictional task world (no model can know its facts), builds a LanceDB
knowledge base of the tasks' pages, researches the first question with `graph.research`
(answer, citations, stats), then runs every task with `graph.research_many` into a
`TrajectoryStore` that scores each run with `training.rewards.default()` as it records it,
and queries the store for the runs with reward >= 0.5.

    python examples/research.py                       # local SmolLM2-135M, 4 tasks
    python examples/research.py --model hf:ckpt/grpo --tasks 8 --out runs-example
    python examples/research.py --json                # also print a JSON summary line
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import graph
from tools.corpora import cached_kb, corpus_of
from tools.worlds import generate_world
from training import rewards


def main(argv: list[str] | None = None) -> dict:
    """Research one question, then record and score a few tasks; return a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="local:smollm2", help="model spec (local:, hf:, openai:)")
    p.add_argument("--tasks", type=int, default=4, help="generated tasks to research")
    p.add_argument("--out", default="research-example", help="folder for the trajectory store")
    p.add_argument("--max-rounds", type=int, default=2, help="plan -> search -> select rounds")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)
    out = Path(args.out)

    # 1. A task world and a knowledge base of its tasks' pages (gold pages and distractors).
    tasks = generate_world(seed=0, n_tasks=args.tasks, hops=(2,)).tasks
    kb = cached_kb(corpus_of(tasks))  # built once per corpus, under $SLEUTH_HOME/kb-cache
    config = graph.ResearchConfig(max_rounds=args.max_rounds, temperature=0.0, seed=1)

    # 2. One question.
    question = tasks[0]["question"]
    result = graph.research(question, knowledge=kb, model=args.model, config=config)
    print(f"Q: {question}\nA: {result.answer!r} (gold: {tasks[0]['answer']!r})")
    for c in result.citations:
        print(f"  [{c.n}] {c.title} ({c.doc_id})")
    print("stats:", {k: result.stats[k] for k in ("model_calls", "searches", "misses", "tokens")},
          f"{result.stats['seconds']:.1f} s")

    # 3. Many tasks, recorded; the store scores each run as it writes it.
    store = graph.TrajectoryStore(out / "runs", reward=rewards.default())
    results = graph.research_many(tasks, store=store, knowledge=kb, model=args.model,
                                  config=config, concurrency=4)
    for r in results:
        print(f"  {r.task_id}: {r.answer!r}" + (f" (error: {r.error})" if r.error else ""))
    good = store.query("reward >= 0.5")
    print(f"{len(store)} trajectories in {store.file}; {len(good)} with reward >= 0.5:")
    for t in good:
        print(f"  {t.task_id} reward {t.metrics['reward']:.2f}: {t.answer!r}")

    summary = {"question": question, "answer": result.answer,
               "citations": [c.doc_id for c in result.citations], "stats": result.stats,
               "store": str(store.file), "recorded": [r.trajectory_id for r in results],
               "reward_at_least_0.5": [t.id for t in good]}
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
