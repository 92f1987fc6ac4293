"""Retrievers as LangChain tools, so every search reaches callbacks (and the recorder).

A tool takes `{"query": str, "k": int}` and returns a list of `Passage`s; a `ToolError` is
re-raised after `on_tool_error` fires, for the agent to record as an observation.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from tools.knowledge import KnowledgeBase
from tools.retrievers import WebRetriever
from tools.types import Passage, Retriever


def tool_name(retriever: Any) -> str:
    """A stable tool name for a retriever."""
    if isinstance(retriever, KnowledgeBase):
        return "knowledge_base"
    if isinstance(retriever, WebRetriever):
        return "web_search"
    return getattr(retriever, "name", None) or type(retriever).__name__.lower()


def as_tool(retriever: Retriever | BaseTool, name: str | None = None,
            **search_kwargs: Any) -> BaseTool:
    """Wrap a retriever (anything with `search(query, k)`) as a LangChain tool; extra keyword
    arguments go to every `search` call (e.g. `mode="fts"` for a KnowledgeBase)."""
    if isinstance(retriever, BaseTool):
        return retriever
    if not hasattr(retriever, "search"):
        raise TypeError(f"a search tool needs a search(query, k) method: {retriever!r}")

    def search(query: str, k: int = 5) -> list[Passage]:
        """Search for passages relevant to the query."""
        return retriever.search(query, k=k, **search_kwargs)

    return StructuredTool.from_function(search, name=name or tool_name(retriever),
                                        description="Search for passages relevant to a query.")
