"""`build_research_graph`: plan -> fan-out search -> select -> (plan again | write).

    START -> plan -> [approve] -> search x N (Send, one per sub-question) -> select
    select -> plan (next round) | write ;  plan -> write when it is done or a budget is spent
    write -> END

The writer stage is the single `Writer`, or with `ResearchConfig(writer="debate")` the
MADAM-RAG debate (`agents.debate.DebateWriter`: a graph of its own, run inside `write`).

Each role runs on its own chat model when one is named for it (`models={"writer": ...}` or
`ResearchConfig.models`, specs or objects; `role_models` loads each distinct spec once), else
on `model`.

Any role may be replaced by any callable `(state) -> update` (sync or async). A role whose
first parameter is annotated with a pydantic model (as the agents' `PlannerInput`,
`SearchRequest`, ... are) receives that model built from the state, as LangGraph does for
node input schemas; a role may return a dict or a pydantic model whose fields are state keys
(the agents' `*Update` models). Budgets
(rounds, searches, model calls, tokens) are checked before each round and each fan-out, so
every run ends with the writer. Progress events go to LangGraph's custom stream
(`stream_mode="custom"`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send, interrupt
from pydantic import BaseModel

from agents import DebateWriter, Planner, Searcher, Selector, Writer, as_tool, load_chat_model
from agents.schemas import Counters, SearchRequest
from agents.tools import tool_name
from graph.config import ROLES, ResearchConfig
from graph.state import ResearchInput, ResearchOutput, ResearchState
from tools.cache import CachedRetriever
from tools.knowledge import KnowledgeBase
from tools.retrievers import WebRetriever
from tools.types import SearchBackend

Role = Callable[[Any], Any]


def _is_async(fn: Any) -> bool:
    call = type(fn).__call__ if not inspect.isfunction(fn) else fn
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def input_model(role: Role) -> type[BaseModel] | None:
    """The pydantic model a role reads: its `input_model`, else its first parameter's type."""
    model = getattr(role, "input_model", None)
    if model is None:
        fn = role if inspect.isfunction(role) or inspect.ismethod(role) else type(role).__call__
        try:
            params = list(inspect.signature(role).parameters)
            model = typing.get_type_hints(fn).get(params[0]) if params else None
        except (TypeError, ValueError, NameError):  # no signature or unresolvable hints
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def as_update(result: Any) -> dict[str, Any]:
    """A role's result as a state update: a dict, or a pydantic model's fields."""
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        return {name: getattr(result, name) for name in type(result).model_fields}
    if not isinstance(result, Mapping):
        raise TypeError(f"a role must return a dict or a pydantic model of state keys, not "
                        f"{type(result).__name__}")
    return dict(result)


def _node(role: Role, pre: Callable[[Any, ResearchConfig], tuple[Any, dict | None]],
          post: Callable[[Any, ResearchConfig, dict], dict],
          base: ResearchConfig) -> Callable[..., Any]:
    """Wrap a role: `pre` prepares its input (or short-circuits), `post` books the result."""
    model = input_model(role)

    def prepare(state: Any, config: RunnableConfig) -> tuple[ResearchConfig, Any, dict | None]:
        cfg = ResearchConfig.from_runnable_config(config, base=base)
        arg, done = pre(state, cfg)
        if done is None and model is not None:
            arg = arg if isinstance(arg, model) else model.model_validate(as_update(arg))
        elif done is None and isinstance(arg, BaseModel):
            arg = as_update(arg)  # a plain callable reads a dict
        return cfg, arg, done

    if _is_async(role):
        async def anode(state: Any, config: RunnableConfig) -> dict:
            cfg, arg, done = prepare(state, config)
            return done if done is not None else post(state, cfg, as_update(await role(arg)))
        return anode

    def node(state: Any, config: RunnableConfig) -> dict:
        cfg, arg, done = prepare(state, config)
        return done if done is not None else post(state, cfg, as_update(role(arg)))
    return node


def _emit(event: dict[str, Any]) -> None:
    try:
        get_stream_writer()(event)
    except RuntimeError:  # called outside a graph run
        pass


def budget_spent(state: dict[str, Any], cfg: ResearchConfig) -> str | None:
    """The reason a run must stop researching now, or None."""
    c = Counters() + state.get("counters")
    if state.get("round", 0) >= cfg.max_rounds:
        return "max_rounds"
    if c.searches >= cfg.max_searches:
        return "max_searches"
    if c.model_calls >= cfg.max_model_calls:
        return "max_model_calls"
    if c.tokens >= cfg.max_tokens:
        return "max_tokens"
    return None


# --------------------------------------------------------------------------- node bookkeeping


def _plan_pre(state: dict, cfg: ResearchConfig) -> tuple[Any, dict | None]:
    reason = budget_spent(state, cfg)
    if reason:
        return None, {"plan": [], "stop_reason": reason}
    return state, None


def _plan_post(state: dict, cfg: ResearchConfig, update: dict) -> dict:
    plan = [str(q) for q in (update.get("plan") or [])][: cfg.max_subquestions]
    rnd = state.get("round", 0) + 1
    _emit({"event": "plan", "round": rnd, "plan": plan})
    return {**update, "plan": plan, "sub_questions": plan, "round": rnd,
            **({} if plan else {"stop_reason": "planner_done"})}


def _approve(state: dict) -> dict:
    """Pause for a human: resume with True (keep), False (stop) or a new list of sub-questions."""
    if not state.get("plan"):
        return {}
    decision = interrupt({"question": state["question"], "round": state.get("round", 0),
                          "plan": state["plan"]})
    if decision is True or decision is None:
        return {}
    if decision is False:
        return {"plan": [], "stop_reason": "plan_rejected"}
    if isinstance(decision, list | tuple):
        return {"plan": [str(q) for q in decision]}
    raise ValueError(f"resume a plan approval with True, False or a list of sub-questions, "
                     f"not {decision!r}")


def _route_plan(base: ResearchConfig) -> Callable[..., Any]:
    def route(state: dict, config: RunnableConfig) -> Any:
        cfg = ResearchConfig.from_runnable_config(config, base=base)
        plan = state.get("plan") or []
        left = cfg.max_searches - (Counters() + state.get("counters")).searches
        if not plan or left <= 0:
            return "write"
        plan = plan[:left]
        seen = [p.chunk_id for p in state.get("passages") or []]
        known = [p.title for p in state.get("evidence") or [] if p.title]
        return [Send("search", SearchRequest(question=state["question"], sub_question=q,
                                             round=state.get("round", 0), seed=state.get("seed"),
                                             seen=seen, known=known,
                                             searches_left=max(1, left // len(plan))))
                for q in plan]
    return route


def _search_post(task: SearchRequest, cfg: ResearchConfig, update: dict) -> dict:
    for q in update.get("queries") or []:
        _emit({"event": "search", "sub_question": task.sub_question, "query": q.query,
               "new": q.new, "miss": q.miss, "error": q.error})
    return update


def _select_post(state: dict, cfg: ResearchConfig, update: dict) -> dict:
    evidence = update.get("evidence") or []
    _emit({"event": "select", "kept": len(evidence),
           "of": len(state.get("passages") or []), "titles": [p.title for p in evidence]})
    return update


def _route_select(base: ResearchConfig) -> Callable[..., str]:
    def route(state: dict, config: RunnableConfig) -> str:
        cfg = ResearchConfig.from_runnable_config(config, base=base)
        return "write" if budget_spent(state, cfg) else "plan"
    return route


def _write_post(state: dict, cfg: ResearchConfig, update: dict) -> dict:
    counters = Counters() + state.get("counters") + update.get("counters")
    stats = {**counters.model_dump(), "rounds": state.get("round", 0),
             "passages": len(state.get("passages") or [])}
    out = {**update, "stats": stats,
           "retrieved": list(state.get("passages") or []),
           "queries_made": list(state.get("queries") or []),
           "observations": list(state.get("notes") or []) + list(update.get("notes") or []),
           "stop_reason": state.get("stop_reason") or budget_spent(state, cfg) or "planner_done"}
    out.setdefault("evidence", state.get("evidence") or [])
    _emit({"event": "answer", "answer": out.get("answer", ""), "stats": stats})
    return out


def _passthrough(state: Any, cfg: ResearchConfig) -> tuple[Any, None]:
    return state, None


# --------------------------------------------------------------------------- the builder


def resolve_tools(tools: Sequence[Any], cfg: ResearchConfig) -> list[BaseTool]:
    """Knowledge bases (also behind a cache), web retrievers, search backends or LangChain
    tools -> tools."""
    out: list[BaseTool] = []
    for t in tools:
        if isinstance(t, KnowledgeBase):
            out.append(as_tool(t, mode=cfg.search_mode))
        elif isinstance(t, CachedRetriever) and isinstance(t.retriever, KnowledgeBase):
            out.append(as_tool(t, name=tool_name(t.retriever), mode=cfg.search_mode))
        elif isinstance(t, SearchBackend):
            out.append(as_tool(WebRetriever(t, pages=cfg.web_pages)))
        else:
            out.append(as_tool(t))
    return out


_FALLBACK = {"debater": "writer", "aggregator": "writer"}  # a debate serves the writer's model
ModelLike = str | BaseChatModel  # a model spec (agents.models.parse_spec) or a chat model


def _named(role: str, named: Mapping[str, ModelLike]) -> ModelLike | None:
    """The model named for `role` (or for the role it falls back to), else None."""
    for r in (role, _FALLBACK.get(role)):
        if r is not None and named.get(r) is not None:
            return named[r]
    return None


def role_models(roles: Iterable[str], *, model: ModelLike | None = None,
                models: Mapping[str, ModelLike] | None = None,
                config: ResearchConfig | None = None) -> dict[str, BaseChatModel]:
    """The chat model of each role: `models` (specs or objects), else `config.models`, else
    `model` (else `config.model`); each distinct spec is loaded once."""
    cfg = config or ResearchConfig()
    named = {**cfg.models, **(models or {})}
    unknown = sorted(set(named) - set(ROLES))
    if unknown:
        raise ValueError(f"models= names unknown roles {unknown}: the roles are {', '.join(ROLES)}")
    default = model if model is not None else cfg.model
    loaded: dict[str, BaseChatModel] = {}

    def load(spec: ModelLike) -> BaseChatModel:
        if isinstance(spec, BaseChatModel):
            return spec
        if spec not in loaded:
            loaded[spec] = load_chat_model(spec)
        return loaded[spec]

    return {r: load(_named(r, named) or default) for r in roles}


def graph_roles(config: ResearchConfig | None = None, *, replaced: Iterable[str] = (),
                models: Mapping[str, ModelLike] | None = None) -> list[str]:
    """The roles of the research graph that need a chat model, the `replaced` ones left out.

    The selector needs one when it judges passages; with `judge_passages=None` the selector's
    model card decides, so it is read when the selector's model is named or another role here
    loads the default model anyway.
    """
    cfg = config or ResearchConfig()
    gone = set(replaced)
    need = [r for r in ("planner", "searcher") if r not in gone]
    if "writer" not in gone:
        need += ["debater", "aggregator"] if cfg.writer == "debate" else ["writer"]
    named = {**cfg.models, **(models or {})}
    if "selector" not in gone and cfg.judge_passages is not False and (
            cfg.judge_passages or _named("selector", named) is not None
            or any(_named(r, named) is None for r in need)):
        need.append("selector")
    return need


def _role_opts(chat: BaseChatModel | None, cfg: ResearchConfig) -> dict[str, Any]:
    """Temperature, and whether the prompt shows worked examples (the model's own preference
    unless the config says)."""
    examples = cfg.prompt_examples
    if examples is None:
        examples = bool(getattr(chat, "prompt_examples", True))
    return {"temperature": cfg.temperature, "examples": examples}


def _prompt(chat: BaseChatModel | None, role: str) -> str | None:
    """A trained policy's own prompt file for `role` (its card names it), else None."""
    return dict(getattr(chat, "prompts", None) or {}).get(role)


def _writer(chats: Mapping[str, BaseChatModel], cfg: ResearchConfig, cap: dict[str, Any]) -> Role:
    """The writer stage `cfg.writer` names: the single Writer (with the policy's own writer
    prompt, if it names one) or the debate (agents.debate), each role on its own model."""
    if cfg.writer == "debate":
        debater, aggregator = chats["debater"], chats["aggregator"]
        return DebateWriter(debater, aggregator_model=aggregator, rounds=cfg.debate_rounds,
                            max_debaters=cfg.max_debaters, **_role_opts(debater, cfg), **cap)
    chat = chats["writer"]
    return Writer(chat, max_evidence=cfg.evidence_k, prompt=_prompt(chat, "writer"),
                  **_role_opts(chat, cfg), **cap)


def build_research_graph(*, planner: Role | None = None, searcher: Role | None = None,
                         selector: Role | None = None, writer: Role | None = None,
                         tools: Sequence[Any] = (), model: ModelLike | None = None,
                         models: Mapping[str, ModelLike] | None = None,
                         config: ResearchConfig | None = None, checkpointer: Any = None,
                         name: str = "research") -> Any:
    """Compile the research graph; any role may be any `(state) -> update` callable, and any
    role may have its own model (`models={"writer": chat_or_spec}`, else `config.models`)."""
    cfg = config or ResearchConfig()
    replaced = [r for r, fn in (("planner", planner), ("searcher", searcher),
                                ("selector", selector), ("writer", writer)) if fn is not None]
    chats = role_models(graph_roles(cfg, replaced=replaced, models=models), model=model,
                        models=models, config=cfg)
    if searcher is None and not tools:
        raise ValueError("build_research_graph needs tools= (a KnowledgeBase, a search backend, "
                         "a WebRetriever or LangChain tools) or a searcher= callable")
    cap = {"max_new_tokens": cfg.max_new_tokens} if cfg.max_new_tokens else {}
    if planner is None:
        chat = chats["planner"]
        planner = Planner(chat, max_subquestions=cfg.max_subquestions,
                          prompt=_prompt(chat, "planner"), **_role_opts(chat, cfg), **cap)
    if searcher is None:
        chat = chats["searcher"]
        searcher = Searcher(chat, resolve_tools(tools, cfg), k=cfg.k,
                            max_attempts=cfg.max_attempts, relevance=cfg.relevance,
                            prompt=_prompt(chat, "searcher"), **_role_opts(chat, cfg), **cap)
    if selector is None:
        chat = chats.get("selector")
        judge = cfg.judge_passages
        if judge is None:  # the policy's own card decides: judge only when trained to (CML)
            judge = bool(getattr(chat, "judges_passages", False))
        selector = Selector(chat if judge else None, k=cfg.evidence_k, judge=judge,
                            examples=_role_opts(chat, cfg)["examples"],
                            prompt=_prompt(chat, "selector"))
    writer = writer or _writer(chats, cfg, cap)

    g = StateGraph(ResearchState, input_schema=ResearchInput, output_schema=ResearchOutput)
    g.add_node("plan", _node(planner, _plan_pre, _plan_post, cfg))
    g.add_node("search", _node(searcher, _passthrough, _search_post, cfg))
    g.add_node("select", _node(selector, _passthrough, _select_post, cfg))
    g.add_node("write", _node(writer, _passthrough, _write_post, cfg))
    g.add_edge(START, "plan")
    if cfg.approve_plan:
        g.add_node("approve", _approve)
        g.add_edge("plan", "approve")
        g.add_conditional_edges("approve", _route_plan(cfg), ["search", "write"])
    else:
        g.add_conditional_edges("plan", _route_plan(cfg), ["search", "write"])
    g.add_edge("search", "select")
    g.add_conditional_edges("select", _route_select(cfg), ["plan", "write"])
    g.add_edge("write", END)
    return g.compile(checkpointer=checkpointer, name=name)
