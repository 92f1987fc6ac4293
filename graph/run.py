"""Running research: `research`, `aresearch` and `research_many`.

Each run builds the research graph over the given knowledge base and/or web search, records
its trajectory with a `TrajectoryRecorder`, and (with `store=`) appends it to a
`TrajectoryStore`. `research_many` runs tasks concurrently; the samples of one task share a
`group_id` and differ by seed, as group-relative RL needs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from agents.schemas import Citation, QueryRecord
from graph.builder import ModelLike, build_research_graph, graph_roles, role_models
from graph.config import ResearchConfig
from graph.recording import TrajectoryRecorder
from graph.store import TrajectoryStore
from graph.trajectory import Gold, Trajectory
from tools.cache import CachedFetch, CachedRetriever, CachedSearch, ToolCache
from tools.knowledge import KnowledgeBase
from tools.paths import is_uri, sleuth_home
from tools.retrievers import WebRetriever
from tools.text import clean_text
from tools.types import Passage, SearchBackend
from tools.web import BraveSearch, SearxngSearch, TavilySearch

MAX_QUESTION_CHARS = 4000


class ResearchResult(BaseModel):
    """What one research run produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    answer: str = ""
    report: str = ""
    citations: list[Citation] = Field(default_factory=list)
    evidence: list[Passage] = Field(default_factory=list)
    passages: list[Passage] = Field(default_factory=list)
    queries: list[QueryRecord] = Field(default_factory=list)
    observations: list[str] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    stop_reason: str = ""
    task_id: str | None = None
    group_id: str | None = None
    trajectory: Trajectory | None = None
    trajectory_id: str | None = None
    error: str | None = None


def check_question(question: Any) -> str:
    """The question stripped (lone surrogates replaced), or a clear ValueError for an empty or
    huge one."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    question = clean_text(" ".join(question.split()))
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; at most "
                         f"{MAX_QUESTION_CHARS} are accepted")
    return question


WEB_SPECS = ("a SearXNG URL (http://... or searxng:URL), brave: (BRAVE_API_KEY) or tavily: "
             "(TAVILY_API_KEY); brave:URL / tavily:URL use another endpoint")
_KEYED = {"brave": (BraveSearch, "BRAVE_API_KEY"), "tavily": (TavilySearch, "TAVILY_API_KEY")}


def web_backend(spec: str) -> SearchBackend:
    """The search backend a web spec names: a bare http(s) URL or `searxng:URL` (SearXNG, or
    the local corpus server), `brave:` or `tavily:` (key from the environment; a URL after
    the colon replaces the API's endpoint)."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("http", "https") and rest.startswith("//"):
        return SearxngSearch(spec.strip())
    if kind == "searxng" and rest.strip():
        return SearxngSearch(rest.strip())
    if kind in _KEYED and (sep or not rest):
        cls, env = _KEYED[kind]
        if not os.environ.get(env):
            raise ValueError(f"web search {kind}: needs an API key: set {env} in the environment "
                             f"(--web {kind}: / web='{kind}:')")
        return cls(**({"base_url": rest.strip()} if rest.strip() else {}))
    raise ValueError(f"unknown web search {spec!r}: give {WEB_SPECS}")


def _open_kb(location: str | Path) -> KnowledgeBase:
    """A knowledge base by folder or LanceDB URI (s3://, gs://, az://, db://, file://): a URI
    goes to LanceDB as it is; a folder must exist."""
    if is_uri(str(location)):
        return KnowledgeBase(str(location))
    if not Path(location).exists():
        raise FileNotFoundError(f"no knowledge base at {location}: create one with "
                                f"`sleuth ingest PATH --kb {location}`")
    if not Path(location).is_dir():
        raise ValueError(f"knowledge base {location} is a file: give a folder "
                         f"(--kb DIR / knowledge=DIR)")
    return KnowledgeBase(location)


def _cached_web(web: WebRetriever, cache: ToolCache) -> WebRetriever:
    """The same web retriever with its searches and page fetches going through `cache`."""
    return WebRetriever(CachedSearch(web.backend, cache), pages=web.pages,
                        chunks_per_page=web.chunks_per_page, allow_hosts=web.allow_hosts,
                        fetch=CachedFetch(cache, web.fetch), chunk_words=web.chunk_words,
                        fetch_options=web.fetch_options)


def resolve_sources(knowledge: Any = None, web: Any = None, *,
                    cache: ToolCache | None = None) -> list[Any]:
    """Knowledge base (folder, LanceDB URI or object) and web search (a spec for `web_backend`,
    a backend or a retriever); with `cache`, their searches and fetches record or replay."""
    sources: list[Any] = []
    if knowledge is not None:
        if isinstance(knowledge, str | Path):
            knowledge = _open_kb(knowledge)
        if cache is not None:
            name = f"kb:{knowledge.path}" if isinstance(knowledge, KnowledgeBase) else None
            knowledge = CachedRetriever(knowledge, cache, namespace=name)
        sources.append(knowledge)
    if web is not None:
        if isinstance(web, str):
            # WebRetriever trusts the endpoint's own host:port (the local corpus server serves
            # its pages there); every other origin goes through the SSRF guard
            web = WebRetriever(web_backend(web))
        elif isinstance(web, SearchBackend):
            web = WebRetriever(web)
        if cache is not None and isinstance(web, WebRetriever):
            web = _cached_web(web, cache)
        sources.append(web)
    if not sources:
        raise ValueError("research needs knowledge= (a KnowledgeBase, its folder or a LanceDB "
                         "URI) and/or web= (a search URL or spec, a SearchBackend or a "
                         "WebRetriever)")
    return sources


def default_checkpoint_db() -> Path:
    """Where `sleuth ask --thread-id` keeps its checkpoints: $SLEUTH_HOME/checkpoints.sqlite."""
    return sleuth_home() / "checkpoints.sqlite"


def _state_types() -> list[type]:
    """The pydantic types a research state holds (agents.schemas, tools.types)."""
    import agents.schemas
    import tools.types

    return [c for m in (agents.schemas, tools.types) for c in vars(m).values()
            if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == m.__name__]


def sqlite_checkpointer(path: str | Path | None = None) -> Any:
    """A LangGraph SQLite checkpointer in `path` (default `default_checkpoint_db()`), its
    folder made if absent: a run given a thread id resumes from it after a crash.

    Its serializer reads back the research state's own types by name (LangGraph warns about
    types not allow-listed and will refuse them in a future version).
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = Path(path) if path is not None else default_checkpoint_db()
    db.parent.mkdir(parents=True, exist_ok=True)
    serde = JsonPlusSerializer(allowed_msgpack_modules=_state_types())
    return SqliteSaver(sqlite3.connect(db, check_same_thread=False), serde=serde)


def _result(out: dict[str, Any], question: str, trajectory: Trajectory) -> ResearchResult:
    return ResearchResult(
        question=question, answer=out.get("answer", ""), report=out.get("report", ""),
        citations=out.get("citations") or [], evidence=out.get("evidence") or [],
        passages=out.get("retrieved") or [], queries=out.get("queries_made") or [],
        observations=out.get("observations") or [], stats=out.get("stats") or {},
        stop_reason=out.get("stop_reason", ""), task_id=trajectory.task_id,
        group_id=trajectory.group_id, trajectory=trajectory)


def _evidence(passage: Passage | Mapping[str, Any]) -> dict[str, Any]:
    """What a trajectory keeps of a passage the writer answered from (no text: the writer's
    prompt holds that)."""
    data = passage.model_dump() if isinstance(passage, BaseModel) else dict(passage)
    return {k: data[k] for k in ("chunk_id", "doc_id", "title", "url") if k in data}


def _model_name(model: BaseChatModel) -> str:
    return str(getattr(model, "model_name", None) or getattr(model, "model", None)
               or type(model).__name__)


def _run_model(chats: Mapping[str, BaseChatModel]) -> str:
    """A run's model: its one model's name, or its distinct models' names joined by '+'."""
    return "+".join(dict.fromkeys(_model_name(c) for c in chats.values()))


def _named_models(cfg: ResearchConfig, models: Mapping[str, ModelLike] | None) -> dict[str, str]:
    """The per-role models a run was given, as specs (a model object: its name)."""
    given = {r: m if isinstance(m, str) else _model_name(m) for r, m in (models or {}).items()}
    return {**cfg.models, **given}


class _Run:
    """The parts of one run shared by the sync and async entry points."""

    def __init__(self, question: str, *, model: ModelLike | None, knowledge: Any,
                 web: Any, config: ResearchConfig | None, task_id: str | None,
                 group_id: str | None, gold: Gold | None, checkpointer: Any,
                 thread_id: str | None, graph: Any = None,
                 models: Mapping[str, ModelLike] | None = None, cache: ToolCache | None = None,
                 chats: Mapping[str, BaseChatModel] | None = None):
        self.question = check_question(question)
        self.cfg = config or ResearchConfig()
        # sources first: a bad source fails before a model loads
        sources = resolve_sources(knowledge, web, cache=cache) if graph is None else []
        self.chats = dict(chats) if chats is not None else role_models(
            graph_roles(self.cfg, models=models), model=model, models=models, config=self.cfg)
        self.named = _named_models(self.cfg, models)
        self.graph = graph if graph is not None else build_research_graph(
            tools=sources, models=self.chats, config=self.cfg, checkpointer=checkpointer)
        self.recorder = TrajectoryRecorder()
        self.thread_id = thread_id or uuid.uuid4().hex
        self.config = {"callbacks": [self.recorder], "recursion_limit": 200,
                       "configurable": {"thread_id": self.thread_id}}
        self.resuming = False
        if checkpointer is not None and thread_id is not None:
            self.resuming = self._resumable(self.graph.get_state(self.config))
        self.input = None if self.resuming else {"question": self.question, "task_id": task_id,
                                                  "seed": self.cfg.seed}
        self.meta = {"task_id": task_id, "group_id": group_id, "gold": gold}
        self.t0 = time.perf_counter()

    def _resumable(self, snapshot: Any) -> bool:
        """Whether the thread holds an unfinished run of this question (then it resumes); a
        thread that finished, or that researches another question, is an error."""
        if not snapshot.values:
            return False
        if not snapshot.next:
            raise ValueError(f"thread {self.thread_id} finished already: give a new thread id "
                             f"(--thread-id ID / thread_id=ID)")
        asked = snapshot.values.get("question")
        if asked != self.question:
            raise ValueError(f"thread {self.thread_id} researches {asked!r}, not "
                             f"{self.question!r}: resume it with its own question")
        return True

    def finish(self, out: dict[str, Any], store: TrajectoryStore | None) -> ResearchResult:
        seconds = time.perf_counter() - self.t0
        traj = self.recorder.trajectory(
            question=self.question, answer=out.get("answer", ""), report=out.get("report", ""),
            citations=[c.model_dump() for c in out.get("citations") or []],
            evidence=[_evidence(p) for p in out.get("evidence") or []],
            metrics={**(out.get("stats") or {}), "seconds": seconds,
                     "stop_reason": out.get("stop_reason", "")},
            model=_run_model(self.chats),
            config={**self.cfg.model_dump(), "models": self.named}, **self.meta)
        result = _result(out, self.question, traj)
        result.stats["seconds"] = seconds
        if store is not None:
            try:
                store.append(traj)
                result.trajectory_id = traj.id
            except OSError as e:  # e.g. a full disk: the trajectory stays in the result
                result.error = str(e)
        return result


def research(question: str, *, model: ModelLike | None = None, knowledge: Any = None,
             web: Any = None, config: ResearchConfig | None = None,
             store: TrajectoryStore | None = None, task_id: str | None = None,
             group_id: str | None = None, gold: Gold | None = None,
             checkpointer: Any = None, thread_id: str | None = None,
             approve: Callable[[dict[str, Any]], Any] | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None,
             graph: Any = None, models: Mapping[str, ModelLike] | None = None,
             cache: ToolCache | None = None) -> ResearchResult:
    """Research a question over a knowledge base and/or the web; return answer and citations.

    `models` gives roles their own model (specs or chat models; `model` serves the others).
    With a `checkpointer` and a `thread_id` whose run was interrupted, the run resumes from
    its last checkpoint. `approve(payload)` answers plan-approval interrupts (set
    `ResearchConfig(approve_plan=True)`); `on_event` receives progress events. `graph=`
    reuses a compiled research graph (then `knowledge`/`web` are not needed). `cache` records
    or replays the sources' searches and page fetches (`tools.cache.ToolCache`).
    """
    run = _Run(question, model=model, knowledge=knowledge, web=web, config=config,
               task_id=task_id, group_id=group_id, gold=gold, checkpointer=checkpointer,
               thread_id=thread_id, graph=graph, models=models, cache=cache)
    payload: Any = run.input
    while True:
        out: dict[str, Any] = {}
        interrupted = None
        for mode, chunk in run.graph.stream(payload, run.config,
                                            stream_mode=["custom", "values", "updates"]):
            if mode == "custom" and on_event is not None:
                on_event(chunk)
            elif mode == "values":
                out = chunk
            elif mode == "updates" and "__interrupt__" in chunk:
                interrupted = chunk["__interrupt__"][0].value
        if interrupted is None:
            break
        if approve is None:
            raise RuntimeError("the run paused for plan approval: pass approve= to research()")
        payload = Command(resume=approve(interrupted))
    return run.finish(out, store)


async def aresearch(question: str, *, model: ModelLike | None = None,
                    knowledge: Any = None, web: Any = None, config: ResearchConfig | None = None,
                    store: TrajectoryStore | None = None, task_id: str | None = None,
                    group_id: str | None = None, gold: Gold | None = None,
                    checkpointer: Any = None, thread_id: str | None = None,
                    models: Mapping[str, ModelLike] | None = None,
                    cache: ToolCache | None = None) -> ResearchResult:
    """Async `research` (no plan approval; use the graph directly for that)."""
    run = _Run(question, model=model, knowledge=knowledge, web=web, config=config,
               task_id=task_id, group_id=group_id, gold=gold, checkpointer=checkpointer,
               thread_id=thread_id, models=models, cache=cache)
    out = await run.graph.ainvoke(run.input, run.config)
    return run.finish(out, store)


def _task(t: Any, i: int) -> tuple[dict[str, Any], str | None]:
    """Task `i` as a dict with an id, and what is wrong with it (None when nothing is)."""
    if isinstance(t, str):
        return {"id": f"q{i}", "question": t}, None
    if not isinstance(t, Mapping):
        return {"id": f"q{i}"}, f"task {i} is a {type(t).__name__}, not a question or a task dict"
    task = {**t, "id": str(t.get("id") or f"q{i}")}
    if "question" not in task:
        return task, f"task {i} ({task['id']}) has no 'question' field"
    return task, None


def sample_seed(base: int | None, task_id: str, sample: int) -> int:
    """The seed of one sample of one task: distinct per sample, reproducible per base seed."""
    key = f"{base if base is not None else uuid.uuid4().hex}:{task_id}:{sample}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=6).digest(), "little")


def research_many(tasks: Iterable[str | dict[str, Any]], *, samples_per_task: int = 1,
                  concurrency: int = 4, store: TrajectoryStore | None = None,
                  model: ModelLike | None = None, knowledge: Any = None,
                  web: Any = None, config: ResearchConfig | None = None,
                  on_result: Callable[[ResearchResult], None] | None = None,
                  models: Mapping[str, ModelLike] | None = None, cache: ToolCache | None = None,
                  **roles: Any) -> list[ResearchResult]:
    """Run many tasks (questions or task dicts), `samples_per_task` each, `concurrency` at once.

    Samples of one task share a `group_id`. A run that fails, or a task that is not one (no
    `question`), becomes a result with `error` set; the others go on. Results come back in
    task order. Keyword arguments `planner`, `searcher`, `selector`, `writer` replace roles as
    in `build_research_graph`; `models` and `cache` are `research`'s.
    """
    cfg = config or ResearchConfig()
    sources = resolve_sources(knowledge, web, cache=cache)  # fails before a model loads
    roles = {k: v for k, v in roles.items() if v is not None}
    chats = role_models(graph_roles(cfg, replaced=roles, models=models), model=model,
                        models=models, config=cfg)
    graph = build_research_graph(tools=sources, models=chats, config=cfg, **roles)
    jobs: list[tuple[dict[str, Any], str | None, int, str]] = []
    for i, raw in enumerate(tasks):
        task, problem = _task(raw, i)
        group = f"{task['id']}:{uuid.uuid4().hex[:8]}"
        jobs.extend((task, problem, s, group) for s in range(samples_per_task))

    def one(job: tuple[dict[str, Any], str | None, int, str]) -> ResearchResult:
        task, problem, s, group = job
        run_cfg = cfg.model_copy(update={"seed": sample_seed(cfg.seed, task["id"], s)})
        try:
            if problem is not None:
                raise ValueError(problem)
            gold = Gold.from_task(task)
            run = _Run(task["question"], model=None, knowledge=None, web=None, config=run_cfg,
                       task_id=task["id"], group_id=group, gold=gold, checkpointer=None,
                       thread_id=None, graph=graph, models=models, chats=chats)
            result = run.finish(graph.invoke(run.input, run.config), store)
        except Exception as e:  # noqa: BLE001 - one run's failure (even a bug in a custom role)
            # must not cost the batch the other runs' results; its type and message are kept
            result = ResearchResult(question=str(task.get("question") or ""), task_id=task["id"],
                                    group_id=group, error=f"{type(e).__name__}: {e}")
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, jobs))


__all__: Sequence[str] = ["ResearchResult", "aresearch", "check_question",
                          "default_checkpoint_db", "research", "research_many",
                          "resolve_sources", "sqlite_checkpointer", "web_backend"]
