"""Does the planner know when to stop? Its greedy decisions on the teacher's planner calls.

For fresh generated tasks (seeds from 3,000,000: used by no training run and by no held-out
set), the rationale-chain teacher (`training.rationales`) plays each task through the research
graph with the policy's own prompts; every planner call with evidence in its prompt then has
a right decision: search on (a hop's page is not in the evidence) or stop (every hop's page
is). Each policy answers the same calls greedily. The table shows how often it searches on
where the teacher searches on, stops where the teacher stops, and replies in neither format.
A policy that stops everywhere, or searches on everywhere, scores 100% on one column and 0%
on the other; only one that reads the evidence scores high on both.

Usage: python benchmarks/planner_decisions.py [--tasks 40] NAME=POLICY ...
  POLICY: a model spec (local:smollm2) or a training stage folder under $SLEUTH_HOME
  (learning-top10/chains). Writes benchmarks/results/planner_decisions.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from langchain_core.messages import convert_to_messages
from protocol import resolve_policy, write
from rich.console import Console
from rich.table import Table

from agents.models import load_chat_model
from agents.parsing import parse_plan
from agents.planner import Planner
from graph.config import ResearchConfig
from tools.corpora import cached_kb, corpus_of
from training.curriculum import Curriculum
from training.rationales import demonstrations

FIRST_SEED = 3_000_000
CONFIG = ResearchConfig(max_rounds=3, max_attempts=2, max_new_tokens=96, temperature=0.0)
console = Console(width=150)


def fresh_tasks(n: int) -> list[dict[str, Any]]:
    """n generated tasks from every curriculum level, seeds from FIRST_SEED."""
    curriculum = Curriculum(first_seed=FIRST_SEED, seed=0)
    levels = list(curriculum.levels)
    return [curriculum.draw(levels[i % len(levels)]) for i in range(n)]


def decisions(spec: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The policy's greedy replies to the teacher's planner calls that have evidence."""
    chat = load_chat_model(spec, temperature=0.0, max_new_tokens=CONFIG.max_new_tokens)
    prompts = getattr(chat, "prompts", {})  # the prompt files its card names
    config = CONFIG.model_copy(update={"prompt_examples": getattr(chat, "prompt_examples", True)})
    demos = demonstrations(tasks, knowledge=cached_kb(corpus_of(tasks)), config=config,
                           prompts=prompts)
    calls = [s for t in demos for s in t.model_steps
             if s.role == "planner" and "Evidence: none yet." not in str(s.prompt_messages[-1]["content"])]
    messages = [convert_to_messages([(m.get("role", "human"), str(m["content"]))
                                     for m in s.prompt_messages]) for s in calls]
    planner = Planner(chat, prompt=prompts.get("planner"))  # the stop strings its prompt declares
    replies = chat.batch(messages, config={"max_concurrency": 8}, stop=planner.stop)
    counts = {"teacher_continues": 0, "teacher_stops": 0, "continued": 0, "stopped": 0,
              "unparsed": 0}
    for step, reply in zip(calls, replies, strict=True):
        teacher = parse_plan(step.text, 3)
        student = parse_plan(str(reply.content), 3)
        key = "teacher_stops" if teacher.done else "teacher_continues"
        counts[key] += 1
        if not student.ok:
            counts["unparsed"] += 1
        elif student.done == teacher.done:
            counts["stopped" if teacher.done else "continued"] += 1
    return {"planner_calls": len(calls), **counts,
            "continue_recall": round(100 * counts["continued"] / max(1, counts["teacher_continues"]), 1),
            "stop_recall": round(100 * counts["stopped"] / max(1, counts["teacher_stops"]), 1),
            "unparsed_rate": round(100 * counts["unparsed"] / max(1, len(calls)), 1)}


def main() -> None:
    """Every policy's decisions on the same calls; print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policies", nargs="+", metavar="NAME=POLICY")
    ap.add_argument("--tasks", type=int, default=40)
    args = ap.parse_args()
    tasks = fresh_tasks(args.tasks)
    out: dict[str, Any] = {"protocol": {"first_seed": FIRST_SEED, "tasks": args.tasks,
                                        "max_new_tokens": CONFIG.max_new_tokens},
                           "policies": {}}
    table = Table("policy", "planner calls", "searches on where the teacher does %",
                  "stops where the teacher does %", "unparsed %")
    for pair in args.policies:
        name, _, given = pair.partition("=")
        load, recorded, _ = resolve_policy(given)
        row = {"spec": recorded, **decisions(load, tasks)}
        out["policies"][name] = row
        table.add_row(name, str(row["planner_calls"]), f"{row['continue_recall']:.1f}",
                      f"{row['stop_recall']:.1f}", f"{row['unparsed_rate']:.1f}")
    console.print(table)
    path = write("planner_decisions", out)
    console.print(f"wrote {Path(path).name}")


if __name__ == "__main__":
    main()
