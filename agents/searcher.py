"""The searcher: queries its tools for a sub-question; after a miss it reformulates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from langchain_core.tools import BaseTool

from agents.base import Agent
from agents.parsing import parse_search
from agents.schemas import QueryRecord
from agents.tools import as_tool
from tools.errors import ToolError
from tools.knowledge import Passage
from tools.retrievers import Retriever
from tools.text import overlap


class Searcher(Agent):
    """Turns `{"question", "sub_question", "seen", "searches_left"}` into passages and queries.

    A search *misses* when it brings no new passage relevant to the sub-question (at least
    `relevance` of its content words occur in the passage); then the searcher asks the model
    for a different query, up to `max_attempts` searches and the branch's search budget.
    """

    role = "searcher"
    stop = ["</search>"]

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
            try:
                for p in tool.invoke({"query": query, "k": self.k}):
                    found.setdefault(p.chunk_id, p)
            except ToolError as e:
                errors.append(f"{tool.name}: {e.message}")
        return list(found.values()), "; ".join(errors) or None, ",".join(t.name for t in self.tools)

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        """Search for one sub-question."""
        question = task["question"]
        sub_q = task.get("sub_question") or question
        seen = set(task.get("seen") or ())
        budget = min(self.max_attempts, task.get("searches_left", self.max_attempts))
        records: list[QueryRecord] = []
        passages: list[Passage] = []
        notes: list[str] = []
        counters: Counter[str] = Counter()
        for attempt in range(budget):
            reply = self.call_model(task, question=question, sub_question=sub_q,
                                    known=task.get("known") or [], attempts=records)
            action = parse_search(reply.text)
            self.report_parse(reply, action)
            counters.update(self.usage(reply, action.ok))
            query = action.query
            if query is None:
                notes.append(f"searcher: no <search> query in the reply for {sub_q!r}"
                             if not reply.error else f"searcher: model call failed ({reply.error})")
                if attempt:
                    break
                query = sub_q  # first attempt: search the sub-question itself
            results, error, tool = self._search(query)
            if error:
                notes.append(f"searcher: {error}")
            new = [p for p in results if p.chunk_id not in seen]
            relevant = [p for p in new if overlap(sub_q, f"{p.title} {p.text}") >= self.relevance]
            seen.update(p.chunk_id for p in new)
            passages.extend(new)
            after_miss = bool(records) and records[-1].miss
            records.append(QueryRecord(sub_question=sub_q, query=query, round=task.get("round", 0),
                                       attempt=attempt, tool=tool,
                                       retrieved=[p.chunk_id for p in results], new=len(new),
                                       relevant_new=len(relevant), miss=not relevant, error=error))
            counters.update({"searches": 1, "misses": int(not relevant),
                             "searches_after_miss": int(after_miss)})
            if relevant:
                break
        return {"passages": passages, "queries": records, "notes": notes,
                "counters": dict(counters)}
