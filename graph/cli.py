"""The `sleuth` command line (typer).

Heavy libraries (LanceDB, torch, trafilatura) are imported inside the commands, so
`sleuth --help` starts fast. `--json` output is one JSON document on stdout; progress and
messages go to stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from graph.console import (
    ErrorsAsLines,
    RoleModel,
    err,
    fail,
    folder,
    knowledge_base,
    out,
    print_json,
    role_models,
    writable_file,
    writable_folder,
    writable_knowledge_base,
)

if TYPE_CHECKING:
    from graph.run import ResearchResult
    from tools.corpora import Sources

app = typer.Typer(name="sleuth", help="Deep research by cooperating agents whose search "
                  "behaviour is learned.", no_args_is_help=True, add_completion=False,
                  cls=ErrorsAsLines)  # known errors end a command with one line


@app.command()
def ingest(paths: Annotated[list[Path], typer.Argument(help="Files or folders (.jsonl, .txt, "
                                                               ".md, .html, .pdf).")],
           kb: Annotated[str, typer.Option("--kb", help="Knowledge-base folder or LanceDB URI "
                                           "(s3://, gs://, az://, db://, file://).",
                                           callback=writable_knowledge_base)],
           json_out: Annotated[bool, typer.Option("--json", help="Print stats as JSON.")] = False,
           ) -> None:
    """Chunk, embed and store documents in a LanceDB knowledge base."""
    from tools.knowledge import KnowledgeBase

    stats = KnowledgeBase(kb).ingest_paths(paths, progress=not json_out)
    data = vars(stats)
    if json_out:
        print_json({"kb": str(kb), **data})
    else:
        err.print(f"ingested {stats.documents} documents into {kb}: {stats.chunks} chunks "
                  f"({stats.embedded} embedded, {stats.unchanged} unchanged, "
                  f"{stats.removed} removed) in {stats.seconds:.1f} s", soft_wrap=True)


@app.command()
def search(query: Annotated[str, typer.Argument(help="What to look for.")],
           kb: Annotated[str, typer.Option("--kb", help="Knowledge-base folder or LanceDB URI.",
                                           callback=knowledge_base)],
           k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
           mode: Annotated[str, typer.Option(help="hybrid, vector or fts.")] = "hybrid",
           where: Annotated[str | None, typer.Option(
               help="SQL filter, e.g. \"source = 'hotpotqa'\".")] = None,
           json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
           ) -> None:
    """Search a knowledge base."""
    from tools.knowledge import KnowledgeBase

    if isinstance(kb, Path) and not kb.exists():
        fail(f"no knowledge base at {kb}: create one with `sleuth ingest PATH --kb {kb}`")
    hits = KnowledgeBase(kb).search(query, k=k, mode=mode, where=where)  # type: ignore[arg-type]
    if json_out:
        print_json({"query": query, "mode": mode, "passages": [p.model_dump() for p in hits]})
        return
    table = Table("#", "score", "title", "doc_id", "text", show_lines=False)
    for i, p in enumerate(hits, 1):
        table.add_row(str(i), f"{p.score:.3f}", p.title, p.doc_id,
                      p.text[:160] + ("..." if len(p.text) > 160 else ""))
    out.print(table)


@app.command()
def fetch(url: Annotated[str, typer.Argument(help="An http(s) URL.")],
          allow_host: Annotated[list[str] | None, typer.Option(
              "--allow-host", help="host:port the SSRF guard lets through; a bare host means "
              "its default port (repeatable; also SLEUTH_ALLOW_HOSTS).")] = None,
          max_bytes: Annotated[int, typer.Option(help="Byte cap.")] = 2_000_000,
          json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
          ) -> None:
    """Fetch a page and print its main text."""
    from tools.web import fetch_page

    page = fetch_page(url, allow_hosts=allow_host or (), max_bytes=max_bytes)
    if json_out:
        print_json(page.model_dump())
        return
    err.print(f"[bold]{page.title or page.url}[/bold]  ({page.content_type}, {page.n_bytes} bytes"
              f"{', truncated' if page.truncated else ''})", highlight=False)
    out.print(page.text, highlight=False, markup=False)


@app.command("serve-corpus")
def serve_corpus(path: Annotated[Path, typer.Argument(help="Corpus or task JSONL (or a folder).")],
                 port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8765,
                 host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
                 kb: Annotated[str | None, typer.Option(
                     "--kb", help="Rank with this knowledge base (folder or LanceDB URI) "
                     "instead of BM25.", callback=knowledge_base)] = None,
                 ) -> None:
    """Serve a corpus as HTML pages with a SearXNG-compatible /search endpoint."""
    from tools.corpus_server import CorpusServer
    from tools.knowledge import KnowledgeBase

    server = CorpusServer(path, host=host, port=port, knowledge=KnowledgeBase(kb) if kb else None)
    err.print(f"serving {len(server.docs)} documents at {server.url}  "
              f"(search: {server.url}/search?q=...&format=json; Ctrl-C stops)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")


@app.command()
def serve(model: Annotated[str, typer.Option(
              help="Model spec to serve (local:..., hf:DIR).")] = "local:smollm2",
          port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8000,
          host: Annotated[str, typer.Option(help="Address to bind (loopback unless you "
                                            "open it).")] = "127.0.0.1",
          name: Annotated[str | None, typer.Option(help="Model name clients ask for "
                                                   "(default: the model's own).")] = None,
          api_key: Annotated[str | None, typer.Option(
              "--api-key", envvar="SLEUTH_API_KEY", help="Require this bearer key.")] = None,
          ) -> None:
    """Serve a policy as an OpenAI-compatible API (/v1/chat/completions, logprobs, usage)."""
    from agents.serve import PolicyServer

    with err.status(f"loading {model} ..."):
        server = PolicyServer(model, host=host, port=port, name=name, api_key=api_key)
    err.print(f"serving {server.name} at {server.url}  (OpenAI-compatible: "
              f"ChatOpenAI(model={server.name!r}, base_url={server.url!r}); Ctrl-C stops)",
              soft_wrap=True, highlight=False, markup=False)
    server.serve_forever()
    err.print("stopped")


@app.command()
def world(seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          tasks: Annotated[int, typer.Option(help="Number of questions.")] = 50,
          out_dir: Annotated[Path, typer.Option("--out", help="Output folder.",
                                                callback=writable_folder)] = Path("world"),
          hops: Annotated[str, typer.Option(help="Chain lengths to ask, e.g. 2,3,4.")] = "2,3",
          distractors: Annotated[int, typer.Option(help="Distractor pages per task.")] = 6,
          paraphrase: Annotated[float, typer.Option(help="Share of varied wordings.")] = 0.3,
          conflicts: Annotated[bool, typer.Option(
              "--conflicts", help="Give bridge tasks conflicting evidence: ambiguous names "
              "(several valid answers) and misinformation pages (tasks gain answers and "
              "wrong_answers).")] = False,
          conflict_share: Annotated[float, typer.Option(
              help="With --conflicts: share of bridge tasks given a conflict.")] = 0.5,
          json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
          ) -> None:
    """Generate a fictional task world: corpus.jsonl and tasks.jsonl."""
    from tools.worlds import generate_world

    try:
        hop_set = tuple(int(h) for h in hops.split(",") if h.strip())
        w = generate_world(seed, tasks, hops=hop_set, distractors=distractors,
                           paraphrase=paraphrase, conflicts=conflict_share if conflicts else False)
    except (RuntimeError, ValueError) as e:  # a world that cannot be drawn with these settings
        fail(str(e))
    corpus, task_file = w.write(out_dir)
    n_conflicts = sum("conflict" in t["meta"] for t in w.tasks)
    if json_out:
        print_json({"corpus": str(corpus), "tasks": str(task_file), "docs": len(w.docs),
                     "n_tasks": len(w.tasks), "seed": seed,
                     **({"conflict_tasks": n_conflicts} if conflicts else {})})
    else:
        err.print(f"world {seed}: {len(w.docs)} pages -> {corpus}, {len(w.tasks)} tasks -> "
                  f"{task_file}" + (f" ({n_conflicts} with conflicts)" if conflicts else ""),
                  soft_wrap=True)


# --------------------------------------------------------------------------- research


def _describe(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "plan":
        plan = event.get("plan") or []
        if not plan:
            return f"[bold]plan[/bold] round {event.get('round')}: enough evidence, writing"
        items = escape("  ".join(f"{i}. {q}" for i, q in enumerate(plan, 1)))
        return f"[bold]plan[/bold] round {event.get('round')}: {items}"
    if kind == "search":
        status = ("[red]error[/red] " + escape(str(event.get("error")))) if event.get("error") else (
            "[yellow]miss[/yellow]" if event.get("miss") else "[green]hit[/green]")
        return f"[bold]search[/bold] {escape(repr(event.get('query')))}: {event.get('new')} new, {status}"
    if kind == "select":
        return f"[bold]select[/bold] kept {event.get('kept')} of {event.get('of')} passages"
    return None


def _print_result(result: Any) -> None:
    out.print(f"\n[bold]Answer:[/bold] {escape(result.answer or '(none)')}", highlight=False)
    if result.report and result.report != result.answer:
        out.print(result.report, highlight=False, markup=False)
    if result.citations:
        out.print("[bold]Citations[/bold]")
        for c in result.citations:
            out.print(f"  [{c.n}] {c.title} ({c.url or c.doc_id})", highlight=False, markup=False)
    s = result.stats
    out.print(f"[dim]{s.get('model_calls', 0)} model calls, {s.get('searches', 0)} searches "
              f"({s.get('misses', 0)} missed), {s.get('tokens', 0)} tokens, "
              f"{s.get('seconds', 0):.1f} s, stop: {result.stop_reason}[/dim]")
    if result.trajectory_id:
        out.print(f"[dim]trajectory {result.trajectory_id}[/dim]")


def _result_json(result: Any) -> dict[str, Any]:
    return {"question": result.question, "answer": result.answer, "report": result.report,
            "citations": [c.model_dump() for c in result.citations],
            "stats": result.stats, "stop_reason": result.stop_reason,
            "observations": result.observations, "trajectory_id": result.trajectory_id}


def _writer_kind(writer: str) -> Any:
    if writer not in ("single", "debate"):
        fail(f"--writer is single or debate, not {writer!r}")
    return writer


CACHE_MODES = ("record", "replay")


def _checkpointer(thread_id: str | None, db: Path | None, approve: bool) -> Any:
    """SQLite checkpoints for a run with a thread id (it resumes from them); in memory for a
    plan approval alone; else none."""
    from graph.run import sqlite_checkpointer

    if thread_id is None and db is not None:
        fail("--checkpoint-db keeps the checkpoints of a --thread-id ID: give one")
    if thread_id is not None:
        return sqlite_checkpointer(db)
    if approve:
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    return None


def _tool_cache(folder_: Path | None, mode: str | None) -> Any:
    """`--cache DIR --cache-mode record|replay` as a `ToolCache` (DIR/tools.sqlite), or None."""
    if folder_ is None:
        if mode is not None:
            fail("--cache-mode needs --cache DIR")
        return None
    if (mode or "record") not in CACHE_MODES:
        fail(f"--cache-mode is record or replay, not {mode!r}")
    from tools.cache import ToolCache

    return ToolCache(folder_ / "tools.sqlite", mode=mode or "record")  # type: ignore[arg-type]


def _plan_answer(line: str) -> Any:
    """A typed answer to a plan: Enter keeps it (True), `n` stops (False), else the new
    sub-questions, separated by `;`."""
    line = line.strip()
    if line.lower() in ("n", "no"):
        return False
    asked = [q.strip() for q in line.split(";") if q.strip()]
    return asked or True


def _approver(status: Any, thread_id: str | None) -> Any:
    """`research(approve=...)` for the terminal: shows each plan, reads the answer on stdin."""
    import click

    def approve(payload: dict[str, Any]) -> Any:
        status.stop()
        err.print(f"[bold]plan[/bold] round {payload.get('round')} for approval:", highlight=False)
        for i, q in enumerate(payload.get("plan") or [], 1):
            err.print(f"  {i}. {escape(q)}", highlight=False, soft_wrap=True)
        try:
            line = typer.prompt("Enter accepts, n stops, or type sub-questions separated by ';'",
                                default="", show_default=False, err=True)
        except click.exceptions.Abort:
            again = f"; resume with --thread-id {thread_id}" if thread_id else ""
            fail(f"stopped at the plan approval{again}")
        status.start()
        return _plan_answer(line)
    return approve


@app.command()
def ask(question: Annotated[str, typer.Argument(help="The question to research.")],
        kb: Annotated[str | None, typer.Option(
            "--kb", help="Knowledge-base folder or LanceDB URI (s3://, gs://, az://, db://, "
            "file://).", callback=knowledge_base)] = None,
        web: Annotated[str | None, typer.Option(
            help="Web search: a SearXNG-compatible URL (or searxng:URL), brave: "
            "(BRAVE_API_KEY) or tavily: (TAVILY_API_KEY).")] = None,
        model: Annotated[str, typer.Option(
            help="Model spec (every role not given its own).")] = "local:smollm2",
        model_planner: RoleModel = None,
        model_searcher: RoleModel = None,
        model_selector: RoleModel = None,
        model_writer: RoleModel = None,
        record: Annotated[Path | None, typer.Option(help="Store the trajectory in this folder.",
                                                    callback=writable_folder)] = None,
        max_rounds: Annotated[int, typer.Option(help="Research rounds.")] = 3,
        temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
        seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
        writer: Annotated[str, typer.Option(help="Writer stage: single or debate (one agent "
                                            "per document, then an aggregator).")] = "single",
        json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
        report: Annotated[bool, typer.Option(
            "--report", help="Then write a long-form Markdown report (a summary and a section "
            "per sub-question, numbered citations, sources) to --out.")] = False,
        out_file: Annotated[Path | None, typer.Option(
            "--out", help="With --report: the Markdown file to write.",
            callback=writable_file)] = None,
        thread_id: Annotated[str | None, typer.Option(
            help="Keep checkpoints under this id; run again with it to resume a crashed or "
            "stopped run.")] = None,
        checkpoint_db: Annotated[Path | None, typer.Option(
            help="With --thread-id: the SQLite checkpoint file (default "
            "$SLEUTH_HOME/checkpoints.sqlite).", callback=writable_file)] = None,
        approve: Annotated[bool, typer.Option(
            "--approve", help="Show each plan for approval: Enter accepts, n stops, or type "
            "new sub-questions.")] = False,
        cache: Annotated[Path | None, typer.Option(
            help="Record or replay the run's searches and page fetches in this folder.",
            callback=writable_folder)] = None,
        cache_mode: Annotated[str | None, typer.Option(
            help="With --cache: record (default) or replay (nothing is sent).")] = None,
        judge_passages: Annotated[bool | None, typer.Option(
            "--judge-passages/--no-judge-passages", help="Let the model judge each passage "
            "in the selector (default: the policy's card decides).", show_default=False)] = None,
        ) -> None:
    """Research a question with the planner, searcher, selector and writer agents."""
    from graph.config import ResearchConfig
    from graph.run import research
    from graph.store import TrajectoryStore

    if kb is None and web is None:
        fail("give a source: --kb DIR (see `sleuth ingest`) and/or --web URL|brave:|tavily:")
    if report != (out_file is not None):
        fail("--report writes its Markdown to --out FILE.md: give both or neither")
    cfg = ResearchConfig(model=model, max_rounds=max_rounds, temperature=temperature, seed=seed,
                         writer=_writer_kind(writer), judge_passages=judge_passages,
                         approve_plan=approve, models=role_models(
                             model_planner, model_searcher, model_selector, model_writer))
    checkpointer = _checkpointer(thread_id, checkpoint_db, approve)
    tool_cache = _tool_cache(cache, cache_mode)
    store = TrajectoryStore(record) if record else None
    with err.status("loading model and tools ...") as status:
        def show(event: dict[str, Any]) -> None:
            line = _describe(event)
            if line:
                err.print(line, highlight=False, soft_wrap=True)
                status.update("thinking ...")
        result = research(question, knowledge=kb, web=web, config=cfg,
                          store=None if report else store, on_event=None if json_out else show,
                          checkpointer=checkpointer, thread_id=thread_id, cache=tool_cache,
                          approve=_approver(status, thread_id) if approve else None)
    written = _write_report(result, model, cfg, out_file, store) if out_file else {}
    if json_out:
        print_json({**_result_json(result), **written})
    else:
        _print_result(result)


def _write_report(result: ResearchResult, model: str, cfg: Any, path: Path,
                  store: Any) -> dict[str, Any]:
    """Write `ask --report`'s Markdown file; store the trajectory with the reporter's calls."""
    from graph.report import write_report

    with err.status("writing the report ..."):
        rep = write_report(result, model, temperature=cfg.temperature, seed=cfg.seed)
    path.write_text(rep.markdown, encoding="utf-8")
    if store is not None and rep.trajectory is not None:
        store.append(rep.trajectory)
        result.trajectory_id = rep.trajectory.id
    dropped = f", {rep.dropped_citations} citation(s) to passages not retrieved dropped"
    err.print(f"wrote the report to {path}: {len(rep.sections)} sections, {len(rep.sources)} "
              f"sources{dropped if rep.dropped_citations else ''}", soft_wrap=True, highlight=False)
    return {"report_file": str(path), "report_sections": len(rep.sections),
            "report_sources": len(rep.sources), "report_dropped_citations": rep.dropped_citations}


def _read_task_file(tasks: Path, limit: int | None) -> list[dict[str, Any]]:
    from tools.documents import read_tasks

    rows = read_tasks(tasks, limit)
    if not rows:
        fail(f"{tasks} holds no tasks")
    return rows


def _record_runs(rows: list[dict[str, Any]], sources: Sources, out_dir: Path, *, samples: int,
                 concurrency: int, config: Any, quiet: bool) -> list[ResearchResult]:
    from rich.progress import Progress

    from graph.run import research_many
    from graph.store import TrajectoryStore

    store = TrajectoryStore(out_dir)
    with Progress(console=err, disable=quiet) as progress:
        bar = progress.add_task("research", total=len(rows) * samples)
        return research_many(rows, samples_per_task=samples, concurrency=concurrency,
                             store=store, config=config,
                             on_result=lambda r: progress.advance(bar), **sources.as_kwargs())


def _report_record(results: list[ResearchResult], n_tasks: int, samples: int, out_dir: Path,
                   json_out: bool) -> None:
    failed = [r for r in results if r.error]
    summary = {"trajectories": len(results) - len(failed), "failed": len(failed),
               "tasks": n_tasks, "samples": samples, "store": str(out_dir),
               "errors": [r.error for r in failed][:5]}
    if json_out:
        print_json(summary)
    else:
        err.print(f"recorded {summary['trajectories']} trajectories of {n_tasks} tasks into "
                  f"{out_dir}" + (f" ({len(failed)} failed: {escape(str(failed[0].error))})"
                                  if failed else ""),
                  soft_wrap=True)


@app.command("record")
def record_cmd(tasks: Annotated[Path, typer.Argument(help="Task JSONL (the ../shared/data format).")],
               out_dir: Annotated[Path, typer.Option("--out", help="Trajectory store folder.",
                                                     callback=writable_folder)],
               kb: Annotated[str | None, typer.Option(
                   "--kb", help="Knowledge base folder or LanceDB URI (built from the tasks' "
                   "docs if absent).", callback=knowledge_base)] = None,
               corpus_server: Annotated[bool, typer.Option(
                   "--corpus-server", help="Serve the tasks' docs as a local web and search it.")] = False,
               samples: Annotated[int, typer.Option(help="Samples per task (one group).")] = 1,
               concurrency: Annotated[int, typer.Option(help="Runs at once.")] = 4,
               limit: Annotated[int | None, typer.Option(help="First N tasks only.")] = None,
               model: Annotated[str, typer.Option(help="Model spec (every role not given its "
                                                  "own).")] = "local:smollm2",
               model_planner: RoleModel = None,
               model_searcher: RoleModel = None,
               model_selector: RoleModel = None,
               model_writer: RoleModel = None,
               temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
               seed: Annotated[int | None, typer.Option(help="Base seed.")] = None,
               writer: Annotated[str, typer.Option(help="Writer stage: single or debate.")] = "single",
               json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
               ) -> None:
    """Run many tasks and store their trajectories (samples of a task share a group id)."""
    from graph.config import ResearchConfig
    from tools.corpora import corpus_of, open_corpus

    if (kb is None) == (not corpus_server):
        fail("choose one source: --kb DIR or --corpus-server")
    rows = _read_task_file(tasks, limit)
    if isinstance(kb, Path) and not kb.exists() and (docs := corpus_of(rows)):
        err.print(f"building knowledge base {kb} from {len(docs)} task documents")
    cfg = ResearchConfig(model=model, temperature=temperature, seed=seed,
                         writer=_writer_kind(writer), models=role_models(
                             model_planner, model_searcher, model_selector, model_writer))
    with open_corpus(rows, backend="web" if corpus_server else "kb", kb=kb) as sources:
        results = _record_runs(rows, sources, out_dir, samples=samples,
                               concurrency=concurrency, config=cfg, quiet=json_out)
    _report_record(results, len(rows), samples, out_dir, json_out)


@app.command()
def view(store: Annotated[Path, typer.Argument(help="Trajectory store folder.", callback=folder)],
         port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 8770,
         out_file: Annotated[Path | None, typer.Option(
             "--out", help="Write one self-contained HTML file and exit instead of serving.",
             callback=writable_file)] = None,
         limit: Annotated[int, typer.Option(help="Show the latest N trajectories.")] = 500,
         tokenizer: Annotated[str | None, typer.Option(
             help="Model spec or folder whose tokenizer decodes the recorded token ids "
             "(default: each run's own model).")] = None,
         ) -> None:
    """Browse a trajectory store in a web page: filters, timelines, rewards, groups side by side."""
    from graph.store import TrajectoryStore
    from graph.viewer import Viewer, url_of

    if not (store / "trajectories.jsonl").exists():
        fail(f"no trajectory store at {store} (record one with `sleuth record`)")
    viewer = Viewer(TrajectoryStore(store), limit=limit, tokenizer=tokenizer)
    if out_file is not None:
        viewer.write(out_file)
        err.print(f"wrote {out_file}", soft_wrap=True)
        return
    server = viewer.server(port)
    err.print(f"viewing {store} at {url_of(server)}  (Ctrl-C stops)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.server_close()


def _mount_training() -> None:
    """`eval` and `train` live in training/cli.py (which imports nothing heavy at load)."""
    try:
        from training.cli import register
    except ImportError:  # a trimmed install without the training package
        return
    register(app)


_mount_training()


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
