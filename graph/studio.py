"""The research graph for LangGraph Server and Studio (`langgraph dev`; see langgraph.json).

`langgraph.json` names `make_graph`, a graph factory: the server calls it with each run's
`RunnableConfig` and runs the compiled graph it returns. Nothing is loaded when this module is
imported, so the server starts without a model or a knowledge base; the first call loads the
model (once per process: `load_chat_model` keeps local models) and opens the sources.

Where the graph's model and sources come from, first found wins:

- `configurable`: `model` (a spec string), `knowledge` (a LanceDB folder; in process also a
  `KnowledgeBase`), `web` (a SearXNG-compatible search URL), and any `ResearchConfig` field
  (`max_rounds`, `temperature`, `search_mode`, ...), which the nodes also read at run time;
- the environment: `SLEUTH_MODEL`, `SLEUTH_KB`, `SLEUTH_SEARCH_URL`;
- the defaults: `local:smollm2`, and no source: the graph still builds (Studio shows it), and
  a run stops at its first search with a message that says how to give one.

In process, `studio_graph(config, model=chat)` builds the same graph around a chat model
object (`make_graph` takes the config alone, as the server calls it).
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from graph.builder import build_research_graph
from graph.config import ResearchConfig
from graph.run import resolve_sources
from tools.knowledge import KnowledgeBase

ENV = {"model": "SLEUTH_MODEL", "knowledge": "SLEUTH_KB", "web": "SLEUTH_SEARCH_URL"}


@lru_cache(maxsize=8)
def _open_kb(folder: str) -> KnowledgeBase:
    """A knowledge base opened once per folder (its embedder loads once)."""
    return resolve_sources(knowledge=Path(folder))[0]


def setting(config: RunnableConfig | None, key: str) -> Any:
    """`model`, `knowledge` or `web`: from `configurable`, else the environment, else None."""
    value = ((config or {}).get("configurable") or {}).get(key)
    return value if value not in (None, "") else os.environ.get(ENV[key]) or None


NO_SOURCE = ("the research graph needs a source: set SLEUTH_KB (a knowledge-base folder) and/or "
             "SLEUTH_SEARCH_URL (a web search spec: a SearXNG URL, brave:, tavily:), or pass configurable "
             "knowledge=/web=")


def sources(config: RunnableConfig | None = None) -> list[Any]:
    """The knowledge base and/or web search the config or the environment names ([] if none)."""
    knowledge, web = setting(config, "knowledge"), setting(config, "web")
    if knowledge is None and web is None:
        return []
    if isinstance(knowledge, str | Path):
        knowledge = _open_kb(str(Path(knowledge).expanduser().resolve()))
        knowledge.refresh()  # see what was ingested since it was opened
    return resolve_sources(knowledge, web)


def _no_source(request: Any) -> dict[str, Any]:
    """The searcher of a graph built without a source: Studio can still show the graph."""
    raise ValueError(NO_SOURCE)


def research_config(config: RunnableConfig | None = None) -> ResearchConfig:
    """The `ResearchConfig` of a run: the defaults, `SLEUTH_MODEL`, then `configurable`."""
    configurable = dict((config or {}).get("configurable") or {})
    model = setting(config, "model")
    if model is not None:
        configurable["model"] = model
    return ResearchConfig.from_runnable_config({"configurable": configurable})


def studio_graph(config: RunnableConfig | None = None, *, model: BaseChatModel | None = None) -> Any:
    """The research graph a run's config describes; `model` replaces the configured spec
    (a chat model object, in process)."""
    cfg = research_config(config)
    tools = sources(config)
    return build_research_graph(tools=tools, searcher=None if tools else _no_source,
                                model=model, config=cfg)


async def make_graph(config: RunnableConfig) -> Any:
    """The compiled research graph for a run's config: the factory langgraph.json names.

    Built in a worker thread: loading a model and opening a knowledge base block, and the
    server calls its factories on its event loop (`langgraph dev` refuses blocking calls there).
    """
    return await asyncio.to_thread(studio_graph, config)
