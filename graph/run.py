"""Running research: `research`, `aresearch` and `research_many`.

Each run builds the research graph over the given knowledge base and/or web search, records
its trajectory with a `TrajectoryRecorder`, and (with `store=`) appends it to a
`TrajectoryStore`. `research_many` runs tasks concurrently; the samples of one task share a
`group_id` and differ by seed, as group-relative RL needs.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from agents import load_chat_model
from agents.schemas import Citation, QueryRecord
from graph.builder import build_research_graph
from graph.config import ResearchConfig
from graph.recording import TrajectoryRecorder
from graph.store import TrajectoryStore
from graph.trajectory import Gold, Trajectory
from tools.knowledge import KnowledgeBase
from tools.retrievers import WebRetriever
from tools.text import clean_text
from tools.types import Passage, SearchBackend
from tools.web import SearxngSearch

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


def resolve_sources(knowledge: Any = None, web: Any = None) -> list[Any]:
    """Knowledge base (folder or object) and web search (SearXNG URL, backend or retriever)."""
    sources: list[Any] = []
    if knowledge is not None:
        if isinstance(knowledge, str | Path):
            if not Path(knowledge).exists():
                raise FileNotFoundError(f"no knowledge base at {knowledge}: create one with "
                                        f"`sleuth ingest PATH --kb {knowledge}`")
            if not Path(knowledge).is_dir():
                raise ValueError(f"knowledge base {knowledge} is a file: give a folder "
                                 f"(--kb DIR / knowledge=DIR)")
            knowledge = KnowledgeBase(knowledge)
        sources.append(knowledge)
    if web is not None:
        if isinstance(web, str):
            # WebRetriever trusts the endpoint's own host:port (the local corpus server serves
            # its pages there); every other origin goes through the SSRF guard
            web = WebRetriever(SearxngSearch(web))
        elif isinstance(web, SearchBackend):
            web = WebRetriever(web)
        sources.append(web)
    if not sources:
        raise ValueError("research needs knowledge= (a KnowledgeBase or its folder) and/or "
                         "web= (a SearXNG URL, a SearchBackend or a WebRetriever)")
    return sources


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


class _Run:
    """The parts of one run shared by the sync and async entry points."""

    def __init__(self, question: str, *, model: str | BaseChatModel | None, knowledge: Any,
                 web: Any, config: ResearchConfig | None, task_id: str | None,
                 group_id: str | None, gold: Gold | None, checkpointer: Any,
                 thread_id: str | None, graph: Any = None):
        self.question = check_question(question)
        self.cfg = config or ResearchConfig()
        sources = resolve_sources(knowledge, web) if graph is None else []  # before a model loads
        self.chat = load_chat_model(model if model is not None else self.cfg.model)
        self.graph = graph if graph is not None else build_research_graph(
            tools=sources, model=self.chat, config=self.cfg, checkpointer=checkpointer)
        self.recorder = TrajectoryRecorder()
        self.thread_id = thread_id or uuid.uuid4().hex
        self.config = {"callbacks": [self.recorder], "recursion_limit": 200,
                       "configurable": {"thread_id": self.thread_id}}
        self.resuming = False
        if checkpointer is not None and thread_id is not None:
            snapshot = self.graph.get_state(self.config)
            self.resuming = bool(snapshot.next)
        self.input = None if self.resuming else {"question": self.question, "task_id": task_id,
                                                  "seed": self.cfg.seed}
        self.meta = {"task_id": task_id, "group_id": group_id, "gold": gold}
        self.t0 = time.perf_counter()

    def finish(self, out: dict[str, Any], store: TrajectoryStore | None) -> ResearchResult:
        seconds = time.perf_counter() - self.t0
        traj = self.recorder.trajectory(
            question=self.question, answer=out.get("answer", ""), report=out.get("report", ""),
            citations=[c.model_dump() for c in out.get("citations") or []],
            evidence=[_evidence(p) for p in out.get("evidence") or []],
            metrics={**(out.get("stats") or {}), "seconds": seconds,
                     "stop_reason": out.get("stop_reason", "")},
            model=_model_name(self.chat), config=self.cfg.model_dump(), **self.meta)
        result = _result(out, self.question, traj)
        result.stats["seconds"] = seconds
        if store is not None:
            try:
                store.append(traj)
                result.trajectory_id = traj.id
            except OSError as e:  # e.g. a full disk: the trajectory stays in the result
                result.error = str(e)
        return result


def research(question: str, *, model: str | BaseChatModel | None = None, knowledge: Any = None,
             web: Any = None, config: ResearchConfig | None = None,
             store: TrajectoryStore | None = None, task_id: str | None = None,
             group_id: str | None = None, gold: Gold | None = None,
             checkpointer: Any = None, thread_id: str | None = None,
             approve: Callable[[dict[str, Any]], Any] | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None,
             graph: Any = None) -> ResearchResult:
    """Research a question over a knowledge base and/or the web; return answer and citations.

    With a `checkpointer` and a `thread_id` whose run was interrupted, the run resumes from
    its last checkpoint. `approve(payload)` answers plan-approval interrupts (set
    `ResearchConfig(approve_plan=True)`); `on_event` receives progress events. `graph=`
    reuses a compiled research graph (then `knowledge`/`web` are not needed).
    """
    run = _Run(question, model=model, knowledge=knowledge, web=web, config=config,
               task_id=task_id, group_id=group_id, gold=gold, checkpointer=checkpointer,
               thread_id=thread_id, graph=graph)
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


async def aresearch(question: str, *, model: str | BaseChatModel | None = None,
                    knowledge: Any = None, web: Any = None, config: ResearchConfig | None = None,
                    store: TrajectoryStore | None = None, task_id: str | None = None,
                    group_id: str | None = None, gold: Gold | None = None,
                    checkpointer: Any = None, thread_id: str | None = None) -> ResearchResult:
    """Async `research` (no plan approval; use the graph directly for that)."""
    run = _Run(question, model=model, knowledge=knowledge, web=web, config=config,
               task_id=task_id, group_id=group_id, gold=gold, checkpointer=checkpointer,
               thread_id=thread_id)
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
                  model: str | BaseChatModel | None = None, knowledge: Any = None,
                  web: Any = None, config: ResearchConfig | None = None,
                  on_result: Callable[[ResearchResult], None] | None = None,
                  **roles: Any) -> list[ResearchResult]:
    """Run many tasks (questions or task dicts), `samples_per_task` each, `concurrency` at once.

    Samples of one task share a `group_id`. A run that fails, or a task that is not one (no
    `question`), becomes a result with `error` set; the others go on. Results come back in
    task order. Keyword arguments `planner`, `searcher`, `selector`, `writer` replace roles as
    in `build_research_graph`.
    """
    cfg = config or ResearchConfig()
    sources = resolve_sources(knowledge, web)  # a bad source fails before a model loads
    chat = load_chat_model(model if model is not None else cfg.model)
    graph = build_research_graph(tools=sources, model=chat, config=cfg,
                                 **{k: v for k, v in roles.items() if v is not None})
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
            run = _Run(task["question"], model=chat, knowledge=None, web=None, config=run_cfg,
                       task_id=task["id"], group_id=group, gold=gold, checkpointer=None,
                       thread_id=None, graph=graph)
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


__all__: Sequence[str] = ["ResearchResult", "aresearch", "research", "research_many",
                          "check_question", "resolve_sources"]
