"""The `make demo` job: a fictional task world, a LanceDB knowledge base, three research runs.

Generates a small world (pages + multi-hop questions whose facts no model can know), ingests
its pages, then runs `sleuth ask` with the local SmolLM2 on three of its questions, showing
the agents' steps, the answer and citations, and whether the answer matches the gold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from graph.store import TrajectoryStore  # noqa: E402
from tools.knowledge import KnowledgeBase  # noqa: E402
from tools.text import normalize_answer  # noqa: E402
from tools.worlds import generate_world  # noqa: E402

HOME = Path(os.environ.get("SLEUTH_DEMO_DIR", ".sleuth-demo"))
SLEUTH = str(Path(sys.executable).parent / "sleuth")


def matches(answer: str, gold: str) -> bool:
    """Normalised exact match, or the gold answer inside the predicted one."""
    a, g = normalize_answer(answer), normalize_answer(gold)
    return bool(g) and (a == g or f" {g} " in f" {a} ")


def main(n_questions: int = 3) -> None:
    """Generate, ingest, ask, compare."""
    console = Console()
    world = generate_world(seed=0, n_tasks=20, hops=(2, 3))
    corpus, tasks = world.write(HOME / "world")
    console.print(f"[bold]world 0[/bold]: {len(world.docs)} fictional pages -> {corpus}, "
                  f"{len(world.tasks)} questions -> {tasks}")
    kb = KnowledgeBase(HOME / "kb")
    stats = kb.ingest_paths([corpus])
    console.print(f"[bold]knowledge base[/bold] {HOME / 'kb'}: {len(kb)} chunks "
                  f"({stats.embedded} embedded now) in {stats.seconds:.1f} s")
    store = TrajectoryStore(HOME / "runs")
    right = 0
    for task in world.tasks[:n_questions]:
        console.rule(f"[bold]{task['question']}[/bold] ({task['meta']['hops']} hops)")
        before = len(store)
        proc = subprocess.run([SLEUTH, "ask", task["question"], "--kb", str(HOME / "kb"),
                               "--record", str(HOME / "runs")], check=False)
        if proc.returncode != 0 or len(store) == before:
            console.print("[red]sleuth ask failed[/red]")
            continue
        answer = list(store)[-1].answer
        ok = matches(answer, task["answer"])
        right += ok
        console.print(f"gold answer: [bold]{task['answer']}[/bold] -> "
                      + ("[green]match[/green]" if ok else "[red]no match[/red]"))
    console.rule()
    console.print(f"{right} of {n_questions} answers match the gold (untrained SmolLM2-135M is a "
                  "weak researcher; its recorded trajectories are what training learns from).\n"
                  f"Trajectories recorded in {HOME / 'runs'}.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
