"""Retrievers as LangChain tools, so every search reaches callbacks (and the recorder).

A tool takes `{"query": str, "k": int}` and returns a list of `Passage`s; a `ToolError` is
re-raised after `on_tool_error` fires, for the agent to record as an observation.

A web search whose page fetch fails still returns the hit's snippet; the failed fetch is
reported through the same callbacks as a failed `fetch_page` tool call (so the trajectory
holds a tool step with `error` set) and collected for the searcher by `fetch_failures()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import CallbackManager
from langchain_core.runnables import ensure_config
from langchain_core.tools import BaseTool, StructuredTool

from tools.errors import ToolError
from tools.knowledge import KnowledgeBase
from tools.retrievers import WebRetriever
from tools.types import Passage, Retriever

FETCH_TOOL = "fetch_page"
_FAILURES: ContextVar[list[str] | None] = ContextVar("sleuth_fetch_failures", default=None)


def tool_name(retriever: Any) -> str:
    """A stable tool name for a retriever."""
    if isinstance(retriever, KnowledgeBase):
        return "knowledge_base"
    if isinstance(retriever, WebRetriever):
        return "web_search"
    return getattr(retriever, "name", None) or type(retriever).__name__.lower()


@contextmanager
def fetch_failures() -> Iterator[list[str]]:
    """Collect the page fetches that fail inside search tools called in this block."""
    failures: list[str] = []
    token = _FAILURES.set(failures)
    try:
        yield failures
    finally:
        _FAILURES.reset(token)


def record_fetch_error(url: str, error: ToolError) -> None:
    """Report a failed page fetch as a failed `fetch_page` tool call, and to `fetch_failures`.

    The callbacks are those of the run in progress, so a `TrajectoryRecorder` makes it a tool
    step with `error` set.
    """
    # the fetch ran inside the web search tool; its run's config (callbacks, tags, the graph
    # node in metadata) is the context's, so the failed call nests under that tool's run
    config = ensure_config()
    manager = CallbackManager.configure(config.get("callbacks"),
                                        inheritable_tags=config.get("tags"),
                                        inheritable_metadata=config.get("metadata"))
    run = manager.on_tool_start({"name": FETCH_TOOL}, url, inputs={"url": url})
    run.on_tool_error(error)
    failures = _FAILURES.get()
    if failures is not None:
        failures.append(f"{FETCH_TOOL}: {error.message} (kept the search snippet)")


def as_tool(retriever: Retriever | BaseTool, name: str | None = None,
            **search_kwargs: Any) -> BaseTool:
    """Wrap a retriever (anything with `search(query, k)`) as a LangChain tool; extra keyword
    arguments go to every `search` call (e.g. `mode="fts"` for a KnowledgeBase)."""
    if isinstance(retriever, BaseTool):
        return retriever
    if not hasattr(retriever, "search"):
        raise TypeError(f"a search tool needs a search(query, k) method: {retriever!r}")
    if isinstance(retriever, WebRetriever):
        search_kwargs.setdefault("on_fetch_error", record_fetch_error)

    def search(query: str, k: int = 5) -> list[Passage]:
        """Search for passages relevant to the query."""
        return retriever.search(query, k=k, **search_kwargs)

    return StructuredTool.from_function(search, name=name or tool_name(retriever),
                                        description="Search for passages relevant to a query.")
