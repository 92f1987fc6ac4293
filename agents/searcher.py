"""The searcher: queries its tools for a sub-question; after a miss it reformulates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.tools import BaseTool

from agents.base import Agent, read_input
from agents.parsing import parse_search
from agents.schemas import Counters, QueryRecord, SearchRequest, SearchUpdate
from agents.tools import as_tool, fetch_failures
from tools.errors import ToolError
from tools.text import overlap
from tools.types import Passage, Retriever


class Searcher(Agent):
    """Turns a `SearchRequest` (one sub-question) into passages and the queries that found them.

    A search *misses* when it brings no new passage relevant to the sub-question (at least
    `relevance` of its content words occur in the passage); then the searcher asks the model
    for a different query, up to `max_attempts` searches and the branch's search budget.
    Tool failures (a search that failed, a page that could not be fetched) are observations:
    notes, and the `error` of the query's record.
    """

    role = "searcher"
    stop = ["</search>"]
    input_model = SearchRequest

    def __init__(self, model: Any, tools: Sequence[Retriever | BaseTool], *, k: int = 5,
                 max_attempts: int = 3, relevance: float = 0.5, **kwargs: Any):
        super().__init__(model, **kwargs)
        if not tools:
            raise ValueError("a Searcher needs at least one tool (a KnowledgeBase, a "
                             "WebRetriever, or anything with search(query, k))")
        self.tools = [as_tool(t) for t in tools]
        self.k = k
        self.max_attempts = max_attempts
        self.relevance = relevance

    def _search(self, query: str) -> tuple[list[Passage], str | None, str]:
        found: dict[str, Passage] = {}
        errors = []
        for tool in self.tools:
            with fetch_failures() as failed:  # pages a web search could not fetch
                try:
                    for p in tool.invoke({"query": query, "k": self.k}):
                        found.setdefault(p.chunk_id, p)
                except ToolError as e:
                    errors.append(f"{tool.name}: {e.message}")
            errors.extend(f"{tool.name}: {f}" for f in failed)
        return list(found.values()), "; ".join(errors) or None, ",".join(t.name for t in self.tools)

    def __call__(self, request: SearchRequest | Mapping[str, Any]) -> SearchUpdate:
        """Search for one sub-question."""
        req = read_input(SearchRequest, request)
        sub_q = req.sub_question or req.question
        seen = set(req.seen)
        records: list[QueryRecord] = []
        out = SearchUpdate()
        for attempt in range(min(self.max_attempts, req.searches_left)):
            reply = self.call_model(req.seed, question=req.question, sub_question=sub_q,
                                    known=req.known, attempts=records)
            action = parse_search(reply.text)
            self.report_parse(reply, action)
            out.counters += self.usage(reply, action.ok)
            query = action.query
            if query is None:
                out.notes.append(f"searcher: no <search> query in the reply for {sub_q!r}"
                                 if not reply.error else f"searcher: model call failed ({reply.error})")
                if attempt:
                    break
                query = sub_q  # first attempt: search the sub-question itself
            results, error, tool = self._search(query)
            if error:
                out.notes.append(f"searcher: {error}")
            new = [p for p in results if p.chunk_id not in seen]
            relevant = [p for p in new if overlap(sub_q, f"{p.title} {p.text}") >= self.relevance]
            seen.update(p.chunk_id for p in new)
            out.passages.extend(new)
            after_miss = bool(records) and records[-1].miss
            records.append(QueryRecord(sub_question=sub_q, query=query, round=req.round,
                                       attempt=attempt, tool=tool,
                                       retrieved=[p.chunk_id for p in results], new=len(new),
                                       relevant_new=len(relevant), miss=not relevant, error=error))
            out.counters += Counters(searches=1, misses=int(not relevant),
                                     searches_after_miss=int(after_miss))
            if relevant:
                break
        out.queries = records
        return out
