"""`sleuth eval` (and, later, `sleuth train`): joined to the `sleuth` app by `register`.

This module imports only typer and rich at import time, so mounting it costs nothing;
the evaluation code (and torch) loads when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # logs get the whole table


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['tasks']} ({result['n_tasks']} tasks)")
    for col in ("run", "type", "n", "EM", "F1", "evidence", "cite prec", "format", "searches",
                "after miss", "calls", "tokens", "s/task"):
        table.add_column(col, justify="right" if col not in ("run", "type") else "left")
    for name, run in result["runs"].items():
        rows = [*run["by_type"].items(), ("all", {**run["overall"], "n": len(run["per_task"])})]
        for typ, m in rows:
            table.add_row(name, typ, str(m.get("n", "")), f"{100 * m['em']:.1f}",
                          f"{100 * m['f1']:.1f}", f"{m['evidence_recall']:.2f}",
                          f"{m['citation_precision']:.2f}", f"{m['format_rate']:.2f}",
                          f"{m['searches']:.1f}", f"{m['searches_after_miss']:.1f}",
                          f"{m['model_calls']:.1f}", f"{m['tokens']:.0f}", f"{m['seconds']:.1f}")
    return table


def eval_command(
    tasks: Annotated[Path, typer.Argument(help="Task JSONL (../shared/data format or `sleuth world`).")],
    out_path: Annotated[Path, typer.Option("--out", help="Result JSON (a PNG is written beside).")],
    model: Annotated[str, typer.Option(help="Model spec.")] = "local:smollm2",
    limit: Annotated[int | None, typer.Option(help="First N tasks.")] = None,
    concurrency: Annotated[int, typer.Option(help="Runs at once.")] = 4,
    samples: Annotated[int, typer.Option(help="Runs per task.")] = 1,
    backend: Annotated[str, typer.Option(help="kb (LanceDB) or web (corpus server / --search-url).")] = "kb",
    search_url: Annotated[str | None, typer.Option(help="SearXNG URL for tasks without docs.")] = None,
    mode: Annotated[str, typer.Option(help="graph, retrieval (no model), oracle (gold evidence).")] = "graph",
    record: Annotated[Path | None, typer.Option(help="Keep the trajectories in this store.")] = None,
    max_rounds: Annotated[int, typer.Option(help="Research rounds.")] = 3,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Base seed.")] = 0,
) -> None:
    """Run the research graph on a task file and score it (EM, F1, evidence, searches...)."""
    from rich.progress import Progress

    from graph.config import ResearchConfig
    from training.evaluate import evaluate, write

    if backend not in ("kb", "web") or mode not in ("graph", "retrieval", "oracle"):
        err.print("[red]error:[/red] --backend is kb or web; --mode is graph, retrieval or oracle")
        raise typer.Exit(1)
    try:
        cfg = ResearchConfig(model=model, max_rounds=max_rounds, temperature=temperature, seed=seed)
        with Progress(console=err) as progress:
            bar = progress.add_task(f"eval {mode}", total=None)
            result = evaluate(tasks, model=model, limit=limit, concurrency=concurrency,
                              samples=samples, backend=backend, search_url=search_url,  # type: ignore[arg-type]
                              record=record, mode=mode, config=cfg,  # type: ignore[arg-type]
                              progress=lambda r: progress.advance(bar))
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    json_path, png = write(result, out_path)
    out.print(_table(result))
    err.print(f"wrote {json_path} and {png}", soft_wrap=True)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add the training commands to the `sleuth` app."""
    app.command("eval")(eval_command)


__all__ = ["eval_command", "register"]
