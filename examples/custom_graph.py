"""Compose your own research graph from sleuth's parts, record it, and nest it in yours.

Builds the research graph from the agents (`Planner`, `Searcher`, `Writer` on one chat model)
with a selector of our own: a typed function that keeps the best passage of each document,
three at most. The graph reads the function's parameter annotation (`SelectorInput`) and
builds that model from the state; the function returns a `SelectorUpdate`. The result is a
plain compiled LangGraph graph: we invoke it with a `TrajectoryRecorder` in
`config["callbacks"]` and a budget in `config["configurable"]`, print the recorded steps,
then use it as a node of our own `StateGraph` (its output schema has no list reducers, so it
is safe as a subgraph) followed by a node that grades the answer against the gold.

    python examples/custom_graph.py                    # local SmolLM2-135M, 3 tasks
    python examples/custom_graph.py --model hf:ckpt/sft --tasks 5 --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

import agents
import graph
from agents.schemas import SelectorInput, SelectorUpdate
from tools.corpora import cached_kb, corpus_of
from tools.text import normalize_answer
from tools.worlds import generate_world


def top3(inp: SelectorInput) -> SelectorUpdate:
    """Our selector: the best-scoring passage of each document, the top three of those."""
    best: dict[str, Any] = {}
    for p in sorted(inp.passages, key=lambda p: -p.score):
        best.setdefault(p.doc_id, p)
    return SelectorUpdate(evidence=list(best.values())[:3])


class Pipeline(TypedDict, total=False):
    """Our own graph's state: the research graph's output keys it wants, plus its own."""

    question: str
    gold: str
    answer: str
    evidence: list
    correct: bool


def grade(state: Pipeline) -> dict:
    """Our own node: does the answer contain the gold answer (SQuAD-normalised)?"""
    gold, answer = normalize_answer(state["gold"]), normalize_answer(state.get("answer", ""))
    return {"correct": bool(gold) and f" {gold} " in f" {answer} "}


def main(argv: list[str] | None = None) -> dict:
    """Build, invoke with a recorder, nest in a pipeline; return a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="local:smollm2", help="model spec (local:, hf:, openai:)")
    p.add_argument("--tasks", type=int, default=3, help="generated tasks to run")
    p.add_argument("--max-rounds", type=int, default=2, help="plan -> search -> select rounds")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)

    tasks = generate_world(seed=0, n_tasks=args.tasks, hops=(2,)).tasks
    kb = cached_kb(corpus_of(tasks))  # built once per corpus, under $SLEUTH_HOME/kb-cache
    model = agents.load_chat_model(args.model)
    greedy = {"temperature": 0.0}  # agents built here take their own sampling settings
    research = graph.build_research_graph(
        planner=agents.Planner(model, **greedy), searcher=agents.Searcher(model, [kb], **greedy),
        selector=top3, writer=agents.Writer(model, **greedy))

    # 1. A plain LangGraph invoke: callbacks record, `configurable` sets this run's budget.
    question = tasks[0]["question"]
    recorder = graph.TrajectoryRecorder()
    state = research.invoke({"question": question},
                            {"callbacks": [recorder],
                             "configurable": {"max_rounds": args.max_rounds, "max_searches": 4}})
    trajectory = recorder.trajectory(question=question, answer=state["answer"])
    print(f"Q: {question}\nA: {state['answer']!r} (gold: {tasks[0]['answer']!r})")
    print("evidence (top3):", [p.title for p in state["evidence"]])
    steps = []
    for s in trajectory.steps:
        if s.kind == "model":
            step = {"kind": "model", "role": s.role, "prompt_tokens": len(s.prompt_token_ids or []),
                    "completion_tokens": len(s.completion_token_ids or [])}
        else:
            step = {"kind": "tool", "tool": s.tool, "hits": len(s.output)}
        steps.append(step)
        print("  step", step)

    # 2. The research graph as one node of our own graph.
    g = StateGraph(Pipeline)
    g.add_node("research", research)
    g.add_node("grade", grade)
    g.add_edge(START, "research")
    g.add_edge("research", "grade")
    g.add_edge("grade", END)
    pipeline = g.compile()
    runs = pipeline.batch([{"question": t["question"], "gold": t["answer"]} for t in tasks],
                          {"configurable": {"max_rounds": args.max_rounds, "max_searches": 4}})
    for t, run in zip(tasks, runs, strict=True):
        print(f"  {t['id']}: {run['answer']!r} gold {t['answer']!r} -> correct={run['correct']}")

    summary = {"question": question, "answer": state["answer"], "stats": state["stats"],
               "evidence": [p.doc_id for p in state["evidence"]],
               "retrieved_docs": len({p.doc_id for p in state["retrieved"]}), "steps": steps,
               "pipeline": [{"task_id": t["id"], "gold": t["answer"], "answer": r["answer"],
                             "correct": r["correct"]} for t, r in zip(tasks, runs, strict=True)]}
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
