"""The `make demo` job: a fictional task world, a LanceDB knowledge base, hybrid search.

Generates a small world (pages + multi-hop questions), ingests its pages, and searches the
first questions, showing each hit's score and whether it is one of the question's gold pages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tools.knowledge import KnowledgeBase  # noqa: E402
from tools.worlds import generate_world  # noqa: E402

HOME = Path(os.environ.get("SLEUTH_DEMO_DIR", ".sleuth-demo"))


def main(n_questions: int = 3) -> None:
    """Generate, ingest, search, print."""
    console = Console()
    world = generate_world(seed=0, n_tasks=20, hops=(2, 3))
    corpus, tasks = world.write(HOME / "world")
    console.print(f"[bold]world 0[/bold]: {len(world.docs)} fictional pages -> {corpus}, "
                  f"{len(world.tasks)} questions -> {tasks}")
    kb = KnowledgeBase(HOME / "kb")
    stats = kb.ingest_paths([corpus])
    console.print(f"[bold]knowledge base[/bold] {HOME / 'kb'}: {len(kb)} chunks "
                  f"({stats.embedded} embedded now, {stats.unchanged} already there) "
                  f"in {stats.seconds:.1f} s\n")
    for task in world.tasks[:n_questions]:
        gold = {d["doc_id"] for d in task["docs"] if d["gold"]}
        hits = kb.search(task["question"], k=5, mode="hybrid")
        table = Table(title=f"{task['question']}  (gold answer: {task['answer']})",
                      title_justify="left", show_lines=False)
        for col in ("#", "score", "gold", "page", "passage"):
            table.add_column(col)
        for i, p in enumerate(hits, 1):
            table.add_row(str(i), f"{p.score:.4f}", "yes" if p.doc_id in gold else "",
                          p.title, p.text[:90] + ("..." if len(p.text) > 90 else ""))
        found = len(gold & {p.doc_id for p in hits})
        console.print(table)
        console.print(f"  {found} of {len(gold)} gold pages in the top 5 "
                      f"({task['type']}, {task['meta']['hops']} hops)\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
