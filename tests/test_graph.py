"""The research graph with a scripted model: routing, budgets, fan-out, resume, recording."""

from __future__ import annotations

import operator
import sqlite3
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from scripted import ScriptedChatModel, default_reply

from agents import Planner, as_tool
from agents.schemas import (
    Counters,
    PlannerInput,
    PlannerUpdate,
    SearchUpdate,
    SelectorInput,
    SelectorUpdate,
    WriterInput,
    WriterUpdate,
)
from graph import (
    ResearchConfig,
    ResearchState,
    TrajectoryRecorder,
    aresearch,
    build_research_graph,
    research,
    research_many,
)
from graph.builder import input_model
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase


@pytest.fixture
def kb(tmp_path, small_world):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb


def fanout_script(n: int):
    """Planner asks n sub-questions in round 1, then is done; the rest as default."""
    def script(role, messages):
        if role == "planner" and "Evidence: none yet." in str(messages[-1].content):
            items = "\n".join(f"{i + 1}. sub-question {i} about founded" for i in range(n))
            return f"<subquestions>\n{items}\n</subquestions>"
        return default_reply(role, messages)
    return script


def test_fan_out_then_write(kb, small_world):
    model = ScriptedChatModel(script=fanout_script(3))
    events = []
    r = research(small_world.tasks[0]["question"], model=model, knowledge=kb,
                 config=ResearchConfig(search_mode="fts", max_attempts=1), on_event=events.append)
    assert model.calls == {"planner": 2, "searcher": 3, "writer": 1}
    assert sorted(q.sub_question for q in r.queries) == [f"sub-question {i} about founded" for i in range(3)]
    assert [e["event"] for e in events][:1] == ["plan"] and events[-1]["event"] == "answer"
    assert sum(e["event"] == "search" for e in events) == 3
    assert r.stats["searches"] == 3 and r.stats["model_calls"] == 6 and r.stop_reason == "planner_done"
    assert r.answer and r.citations and r.citations[0].chunk_id in {p.chunk_id for p in r.passages}
    assert len({p.chunk_id for p in r.passages}) == len(r.passages)  # merged without duplicates


@pytest.mark.parametrize("budget,check", [
    ({"max_searches": 1}, lambda r: r.stats["searches"] == 1),
    ({"max_rounds": 1}, lambda r: r.stats["rounds"] == 1 and r.stop_reason == "max_rounds"),
    ({"max_model_calls": 2}, lambda r: r.stats["model_calls"] <= 2 + 3 + 1),
])
def test_budgets_end_every_run(kb, budget, check):
    never_done = ScriptedChatModel(script=lambda role, m: (
        "<subquestions>\n1. who founded\n2. where born\n3. when\n</subquestions>"
        if role == "planner" else default_reply(role, m)))
    r = research("Who founded what?", model=never_done, knowledge=kb,
                 config=ResearchConfig(**{"search_mode": "fts", "max_rounds": 5, **budget}))
    assert check(r), r.stats
    assert never_done.calls["writer"] == 1


def test_roles_are_replaceable_by_callables(kb):
    def top3(state):
        return {"evidence": sorted(state["passages"], key=lambda p: -p.score)[:3]}

    def fixed_writer(state):
        return {"answer": f"{len(state.get('evidence', []))} passages", "citations": []}

    graph = build_research_graph(tools=[kb], model=ScriptedChatModel(), selector=top3,
                                 writer=fixed_writer, config=ResearchConfig(search_mode="fts"))
    out = graph.invoke({"question": "Where was the founder born?"})
    assert out["answer"] == "3 passages" and len(out["evidence"]) == 3
    # budgets can also come from RunnableConfig["configurable"], the LangGraph way
    out = graph.invoke({"question": "Where was the founder born?"},
                       {"configurable": {"max_searches": 0}})
    assert out["stats"]["searches"] == 0 and out["stop_reason"] == "max_searches"


def test_typed_roles_get_their_input_model_and_may_return_one(kb):
    """A role annotated with a pydantic model receives it built from the state; a role may
    return a pydantic model whose fields are state keys, as the agents' `*Update`s are."""
    seen = []

    def selector(inp: SelectorInput) -> SelectorUpdate:
        seen.append(inp)
        return SelectorUpdate(evidence=inp.passages[:1], counters=Counters(model_calls=5))

    graph = build_research_graph(tools=[kb], model=ScriptedChatModel(), selector=selector,
                                 config=ResearchConfig(search_mode="fts", max_rounds=1))
    out = graph.invoke({"question": "Where was the founder born?"})
    assert seen and isinstance(seen[0], SelectorInput) and seen[0].passages
    assert len(out["evidence"]) == 1 and out["stats"]["model_calls"] == 3 + 5  # plan, search, write + 5


def test_agent_contracts_name_state_keys():
    """Every field a role reads or writes is a key of the research state (or of the branch
    request the graph builds for the searcher)."""
    keys = set(ResearchState.__annotations__)
    for model in (PlannerInput, SelectorInput, WriterInput, PlannerUpdate, SearchUpdate,
                  SelectorUpdate, WriterUpdate):
        assert set(model.model_fields) <= keys, (model.__name__, set(model.model_fields) - keys)
    assert input_model(Planner(ScriptedChatModel())) is PlannerInput
    assert input_model(lambda state: {}) is None


def test_plan_approval_interrupt(kb):
    model = ScriptedChatModel(script=fanout_script(2))
    graph = build_research_graph(tools=[kb], model=model, checkpointer=InMemorySaver(),
                                 config=ResearchConfig(search_mode="fts", approve_plan=True))
    cfg = {"configurable": {"thread_id": "t1"}}
    first = graph.invoke({"question": "Q about founded?"}, cfg)
    assert first["__interrupt__"][0].value["plan"] == ["sub-question 0 about founded",
                                                       "sub-question 1 about founded"]
    out = graph.invoke(Command(resume=["edited founded question"]), cfg)
    assert "__interrupt__" not in out  # round 2's planner is done: nothing to approve
    assert {q.sub_question for q in out["queries_made"]} == {"edited founded question"}
    seen = []
    r = research("Q about founded?", model=ScriptedChatModel(script=fanout_script(2)),
                 knowledge=kb, config=ResearchConfig(search_mode="fts", approve_plan=True),
                 checkpointer=InMemorySaver(), approve=lambda p: seen.append(p) or False)
    assert len(seen) == 1 and r.stats.get("searches", 0) == 0 and r.stop_reason == "plan_rejected"


class Crash(Exception):
    pass


def test_interrupted_run_resumes_from_sqlite_checkpoint(kb, tmp_path):
    model = ScriptedChatModel()
    saver = SqliteSaver(sqlite3.connect(tmp_path / "ck.sqlite", check_same_thread=False))
    cfg = {"configurable": {"thread_id": "run-1"}}
    calls = []

    def crashing_selector(state):
        calls.append(1)
        raise Crash("killed")

    broken = build_research_graph(tools=[kb], model=model, selector=crashing_selector,
                                  checkpointer=saver, config=ResearchConfig(search_mode="fts"))
    with pytest.raises(Crash):
        broken.invoke({"question": "Where was the founder born?"}, cfg)
    assert model.calls == {"planner": 1, "searcher": 1}
    snapshot = broken.get_state(cfg)
    assert snapshot.next == ("select",) and snapshot.values["passages"]
    fixed = build_research_graph(tools=[kb], model=model, checkpointer=saver,
                                 config=ResearchConfig(search_mode="fts"))
    out = fixed.invoke(None, cfg)  # resume: planning and searching are not redone
    assert out["answer"] and model.calls["searcher"] == 1 and model.calls["planner"] == 2


def test_recorder_on_a_custom_graph_and_on_research_as_subgraph(kb):
    model = ScriptedChatModel()
    planner = Planner(model)
    tool = as_tool(kb, mode="fts")

    class S(TypedDict, total=False):
        question: str
        plan: list[str]
        notes: Annotated[list[str], operator.add]

    def plan(state):
        return {"plan": planner(state).plan}

    def look(state):
        return {"notes": [p.title for p in tool.invoke({"query": state["plan"][0], "k": 2})]}

    g = StateGraph(S)
    g.add_node("plan", plan)
    g.add_node("look", look)
    g.add_edge(START, "plan")
    g.add_edge("plan", "look")
    g.add_edge("look", END)
    rec = TrajectoryRecorder()
    g.compile().invoke({"question": "Where was the founder of Orla Press born?"},
                       {"callbacks": [rec]})
    t = rec.trajectory(question="q")
    assert [(s.kind, s.node) for s in t.steps] == [("model", "plan"), ("tool", "look")]
    assert t.model_steps[0].role == "planner" and t.model_steps[0].parse_ok is True
    assert t.model_steps[0].prompt_messages[0]["role"] == "system"
    assert len(t.tool_steps[0].output) == 2 and t.tool_steps[0].output[0]["doc_id"]

    # the research graph as a node of a parent graph whose lists have add reducers
    research_graph = build_research_graph(tools=[kb], model=model,
                                          config=ResearchConfig(search_mode="fts"))

    class Parent(TypedDict, total=False):
        question: str
        answer: str
        observations: Annotated[list[str], operator.add]
        retrieved: Annotated[list, operator.add]

    p = StateGraph(Parent)
    p.add_node("research", research_graph)
    p.add_edge(START, "research")
    p.add_edge("research", END)
    rec = TrajectoryRecorder()
    out = p.compile().invoke({"question": "Where was the founder born?"}, {"callbacks": [rec]})
    n = len(out["retrieved"])
    assert n == len({x.chunk_id for x in out["retrieved"]})  # not doubled by the parent
    roles = [s.role for s in rec.trajectory().model_steps]
    assert roles == ["planner", "searcher", "planner", "writer"]


def test_research_many_groups_samples_and_isolates_failures(kb, small_world, tmp_path):
    from graph import TrajectoryStore

    store = TrajectoryStore(tmp_path / "runs")
    tasks = small_world.tasks[:2] + [{"id": "bad", "question": "   "}]
    results = research_many(tasks, samples_per_task=2, concurrency=3, store=store,
                            model=ScriptedChatModel(), knowledge=kb,
                            config=ResearchConfig(search_mode="fts", seed=5))
    assert len(results) == 6
    assert [r.error is not None for r in results] == [False] * 4 + [True] * 2
    ok = [r for r in results if not r.error]
    assert ok[0].group_id == ok[1].group_id != ok[2].group_id == ok[3].group_id
    assert len(store) == 4 and set(store.groups()) == {ok[0].group_id, ok[2].group_id}
    stored = store.get(ok[0].trajectory_id)
    assert stored.task_id == small_world.tasks[0]["id"] and stored.gold.answer
    assert stored.config["seed"] != store.get(ok[1].trajectory_id).config["seed"]


def test_bad_inputs_are_clear_errors(kb):
    with pytest.raises(ValueError, match="empty"):
        research("", model=ScriptedChatModel(), knowledge=kb)
    with pytest.raises(ValueError, match="characters"):
        research("why? " * 2000, model=ScriptedChatModel(), knowledge=kb)
    with pytest.raises(ValueError, match="knowledge="):
        research("Q?", model=ScriptedChatModel())
    with pytest.raises(FileNotFoundError, match="sleuth ingest"):
        research("Q?", model=ScriptedChatModel(), knowledge="/no/such/kb")


def test_aresearch_and_research_resume_on_thread_id(kb, tmp_path):
    import asyncio

    r = asyncio.run(aresearch("Where was the founder born?", model=ScriptedChatModel(),
                              knowledge=kb, config=ResearchConfig(search_mode="fts")))
    assert r.answer and r.trajectory.model_steps

    class FlakyRetriever:
        def __init__(self):
            self.broken = True

        def search(self, query, k=5):
            if self.broken:
                raise Crash("process killed mid-search")
            return kb.search(query, k=k, mode="fts")

    flaky = FlakyRetriever()
    saver = SqliteSaver(sqlite3.connect(tmp_path / "ck.sqlite", check_same_thread=False))
    model = ScriptedChatModel()
    with pytest.raises(Crash):
        research("Where was the founder born?", model=model, knowledge=flaky,
                 checkpointer=saver, thread_id="job-7")
    flaky.broken = False
    r = research("Where was the founder born?", model=model, knowledge=flaky,
                 checkpointer=saver, thread_id="job-7")
    assert r.answer and model.calls["planner"] == 2  # round 1's plan came from the checkpoint


def test_the_selector_judges_passages_in_parallel_and_every_call_is_recorded(kb, small_world):
    """With judge_passages, the selector's yes/no calls go out together (a pool that carries
    the run's callbacks): each is a recorded `selector` step of the trajectory."""
    model = ScriptedChatModel()
    r = research(small_world.tasks[0]["question"], model=model, knowledge=kb,
                 config=ResearchConfig(search_mode="fts", max_attempts=1, judge_passages=True,
                                       evidence_k=3))
    judged = model.calls["selector"]
    assert judged >= 2 and r.answer
    steps = [s for s in r.trajectory.model_steps if s.role == "selector"]
    assert len(steps) == judged and all(s.text == "yes" for s in steps)
    assert all("You judge evidence" in s.prompt_messages[0]["content"] for s in steps)


def test_a_policy_trained_to_judge_passages_judges_them_by_default(kb, small_world):
    """judge_passages=None (the default) follows the loaded policy's card (training.cml sets
    `judges_passages`); an explicit False still turns the judgments off."""
    class Judging(ScriptedChatModel):
        judges_passages: bool = True

    question = small_world.tasks[0]["question"]
    cfg = ResearchConfig(search_mode="fts", max_attempts=1)
    trained, plain = Judging(), ScriptedChatModel()
    research(question, model=trained, knowledge=kb, config=cfg)
    research(question, model=plain, knowledge=kb, config=cfg)
    assert trained.calls.get("selector", 0) >= 1 and "selector" not in plain.calls
    off = Judging()
    research(question, model=off, knowledge=kb, config=cfg.model_copy(update={"judge_passages": False}))
    assert "selector" not in off.calls


def test_a_policy_runs_with_the_prompt_files_its_card_names(kb, small_world):
    """`prompts` on the model (from a policy card) picks a role's prompt file; a prompt's `stop`
    block sets where that role's local replies end; API models get no stop strings (servers
    cut the matched one out of the text, and the parsers read the closing tags)."""
    from agents import Writer

    seen: list[tuple[str, list[str] | None]] = []

    class Reasoned(ScriptedChatModel):
        prompts: dict = {"writer": "writer_reasoned"}

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append((str(messages[0].content), stop))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    research(small_world.tasks[0]["question"], model=Reasoned(), knowledge=kb,
             config=ResearchConfig(search_mode="fts", max_attempts=1))
    writer_systems = [system for system, _ in seen if system.startswith("You answer questions")]
    assert writer_systems and all("links the facts" in s for s in writer_systems)
    assert all(stop is None for _, stop in seen)
    assert Writer(Reasoned(), prompt="writer_reasoned").stop == ["</answer>"]
    seen.clear()  # every other model: the default writer, answer first, no declared stop
    research(small_world.tasks[0]["question"], model=ScriptedChatModel(script=lambda r, m: (
        seen.append(str(m[0].content)) or default_reply(r, m))), knowledge=kb,
        config=ResearchConfig(search_mode="fts", max_attempts=1))
    assert any(s.startswith("You answer questions") and "First write the short answer" in s
               for s in seen)
    assert Writer(ScriptedChatModel()).stop is None
