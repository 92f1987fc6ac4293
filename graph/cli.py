"""The `sleuth` command line (typer).

Heavy libraries (LanceDB, torch, trafilatura) are imported inside the commands, so
`sleuth --help` starts fast. `--json` output is one JSON document on stdout; progress and
messages go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(name="sleuth", help="Deep research by cooperating agents whose search "
                  "behaviour is learned.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@app.command()
def ingest(paths: Annotated[list[Path], typer.Argument(help="Files or folders (.jsonl, .txt, "
                                                               ".md, .html).")],
           kb: Annotated[Path, typer.Option("--kb", help="Knowledge-base folder.")],
           json_out: Annotated[bool, typer.Option("--json", help="Print stats as JSON.")] = False,
           ) -> None:
    """Chunk, embed and store documents in a LanceDB knowledge base."""
    from tools.knowledge import KnowledgeBase

    try:
        stats = KnowledgeBase(kb).ingest_paths(paths, progress=not json_out)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    data = vars(stats)
    if json_out:
        _print_json({"kb": str(kb), **data})
    else:
        err.print(f"ingested {stats.documents} documents into {kb}: {stats.chunks} chunks "
                  f"({stats.embedded} embedded, {stats.unchanged} unchanged, "
                  f"{stats.removed} removed) in {stats.seconds:.1f} s", soft_wrap=True)


@app.command()
def search(query: Annotated[str, typer.Argument(help="What to look for.")],
           kb: Annotated[Path, typer.Option("--kb", help="Knowledge-base folder.")],
           k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
           mode: Annotated[str, typer.Option(help="hybrid, vector or fts.")] = "hybrid",
           where: Annotated[str | None, typer.Option(help="SQL filter, e.g. \"source = 'hotpotqa'\".")] = None,
           json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
           ) -> None:
    """Search a knowledge base."""
    from tools.errors import ToolError
    from tools.knowledge import KnowledgeBase

    if not kb.exists():
        _fail(f"no knowledge base at {kb}: create one with `sleuth ingest PATH --kb {kb}`")
    try:
        hits = KnowledgeBase(kb).search(query, k=k, mode=mode, where=where)  # type: ignore[arg-type]
    except (ToolError, ValueError) as e:
        _fail(str(e))
    if json_out:
        _print_json({"query": query, "mode": mode, "passages": [p.model_dump() for p in hits]})
        return
    table = Table("#", "score", "title", "doc_id", "text", show_lines=False)
    for i, p in enumerate(hits, 1):
        table.add_row(str(i), f"{p.score:.3f}", p.title, p.doc_id,
                      p.text[:160] + ("..." if len(p.text) > 160 else ""))
    out.print(table)


@app.command()
def fetch(url: Annotated[str, typer.Argument(help="An http(s) URL.")],
          allow_host: Annotated[list[str] | None, typer.Option(
              "--allow-host", help="Host the SSRF guard lets through (repeatable; also "
              "SLEUTH_ALLOW_HOSTS).")] = None,
          max_bytes: Annotated[int, typer.Option(help="Byte cap.")] = 2_000_000,
          json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
          ) -> None:
    """Fetch a page and print its main text."""
    from tools.errors import ToolError
    from tools.web import fetch_page

    try:
        page = fetch_page(url, allow_hosts=allow_host or (), max_bytes=max_bytes)
    except ToolError as e:
        _fail(e.message)
    if json_out:
        _print_json(page.model_dump())
        return
    err.print(f"[bold]{page.title or page.url}[/bold]  ({page.content_type}, {page.n_bytes} bytes"
              f"{', truncated' if page.truncated else ''})", highlight=False)
    out.print(page.text, highlight=False, markup=False)


@app.command("serve-corpus")
def serve_corpus(path: Annotated[Path, typer.Argument(help="Corpus or task JSONL (or a folder).")],
                 port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8765,
                 host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
                 kb: Annotated[Path | None, typer.Option(
                     "--kb", help="Rank with this knowledge base instead of BM25.")] = None,
                 ) -> None:
    """Serve a corpus as HTML pages with a SearXNG-compatible /search endpoint."""
    from tools.corpus_server import CorpusServer
    from tools.knowledge import KnowledgeBase

    try:
        server = CorpusServer(path, host=host, port=port,
                              knowledge=KnowledgeBase(kb) if kb else None)
    except (FileNotFoundError, ValueError, OSError) as e:
        _fail(str(e))
    err.print(f"serving {len(server.docs)} documents at {server.url}  "
              f"(search: {server.url}/search?q=...&format=json; Ctrl-C stops)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")


@app.command()
def world(seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          tasks: Annotated[int, typer.Option(help="Number of questions.")] = 50,
          out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("world"),
          hops: Annotated[str, typer.Option(help="Chain lengths to ask, e.g. 2,3,4.")] = "2,3",
          distractors: Annotated[int, typer.Option(help="Distractor pages per task.")] = 6,
          paraphrase: Annotated[float, typer.Option(help="Share of varied wordings.")] = 0.3,
          json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
          ) -> None:
    """Generate a fictional task world: corpus.jsonl and tasks.jsonl."""
    from tools.worlds import generate_world

    try:
        hop_set = tuple(int(h) for h in hops.split(",") if h.strip())
        w = generate_world(seed, tasks, hops=hop_set, distractors=distractors,
                           paraphrase=paraphrase)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
    corpus, task_file = w.write(out_dir)
    if json_out:
        _print_json({"corpus": str(corpus), "tasks": str(task_file), "docs": len(w.docs),
                     "n_tasks": len(w.tasks), "seed": seed})
    else:
        err.print(f"world {seed}: {len(w.docs)} pages -> {corpus}, {len(w.tasks)} tasks -> "
                  f"{task_file}", soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
