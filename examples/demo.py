"""The `make demo` job: a fictional task world, a LanceDB knowledge base, and the untrained
and the trained policy side by side on the same questions.

Generates a small world (pages + multi-hop questions whose facts no model can know), ingests
its pages, then runs `sleuth ask` on three of its questions twice — with the untrained
SmolLM2 (`local:smollm2`) and with the search policy this package ships
(`local:smollm2-sleuth`) — showing the agents' steps, the answers and their citations, and
ends with a table of both answers against the gold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from graph.store import TrajectoryStore  # noqa: E402
from tools.knowledge import KnowledgeBase  # noqa: E402
from tools.text import normalize_answer  # noqa: E402
from tools.worlds import generate_world  # noqa: E402

HOME = Path(os.environ.get("SLEUTH_DEMO_DIR", ".sleuth-demo"))
SLEUTH = str(Path(sys.executable).parent / "sleuth")
MODELS = {"untrained": "local:smollm2", "trained": "local:smollm2-sleuth"}


def matches(answer: str, gold: str) -> bool:
    """Normalised exact match, or the gold answer inside the predicted one."""
    a, g = normalize_answer(answer), normalize_answer(gold)
    return bool(g) and (a == g or f" {g} " in f" {a} ")


def ask(console: Console, question: str, label: str, model: str) -> str | None:
    """One `sleuth ask` run, its steps shown live; the recorded answer (None if it failed)."""
    store = TrajectoryStore(HOME / "runs" / label)
    before = len(store)
    console.print(f"[bold]{label}[/bold] ({model})")
    proc = subprocess.run([SLEUTH, "ask", question, "--kb", str(HOME / "kb"), "--model", model,
                           "--record", str(store.path)], check=False)
    if proc.returncode != 0 or len(store) == before:
        console.print(f"[red]sleuth ask failed with {model}[/red]")
        return None
    return list(store)[-1].answer


def main(n_questions: int = 3) -> None:
    """Generate, ingest, ask both policies, compare."""
    console = Console()
    world = generate_world(seed=0, n_tasks=20, hops=(2, 3))
    corpus, tasks = world.write(HOME / "world")
    console.print(f"[bold]world 0[/bold]: {len(world.docs)} fictional pages -> {corpus}, "
                  f"{len(world.tasks)} questions -> {tasks}")
    kb = KnowledgeBase(HOME / "kb")
    stats = kb.ingest_paths([corpus])
    console.print(f"[bold]knowledge base[/bold] {HOME / 'kb'}: {len(kb)} chunks "
                  f"({stats.embedded} embedded now) in {stats.seconds:.1f} s")
    table = Table("question", "gold", *MODELS, title="the same questions, both policies")
    right = dict.fromkeys(MODELS, 0)
    for task in world.tasks[:n_questions]:
        console.rule(f"[bold]{task['question']}[/bold] ({task['meta']['hops']} hops)")
        cells = []
        for label, model in MODELS.items():
            answer = ask(console, task["question"], label, model)
            ok = answer is not None and matches(answer, task["answer"])
            right[label] += ok
            cells.append(f"{'[green]✓' if ok else '[red]✗'}[/] {answer or '(failed)'}")
        table.add_row(task["question"], task["answer"], *cells)
    console.rule()
    console.print(table)
    console.print(", ".join(f"{label}: {n} of {n_questions} right" for label, n in right.items())
                  + f". Trajectories recorded in {HOME / 'runs'}; benchmarks/results/learning.json "
                  "holds the held-out figures.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
