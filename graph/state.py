"""The research graph's state, declared in one place, with its reducers.

Lists that branches add to (queries, notes, sub-questions) append; passages are merged by
chunk id (first copy wins); `Counters` add up field by field. Everything else is replaced by
the node that writes it. What each role reads and writes is declared by the agents' typed
contracts (`agents.schemas`): their field names are keys of this state.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from typing_extensions import TypedDict  # pydantic reads its schema on Python 3.11 (Studio's form)

from agents.schemas import Citation, Counters, QueryRecord
from tools.types import Passage


def merge_passages(old: list[Passage] | None, new: list[Passage] | None) -> list[Passage]:
    """Append passages not seen before (by chunk id), keeping order."""
    out = list(old or [])
    seen = {p.chunk_id for p in out}
    for p in new or []:
        if p.chunk_id not in seen:
            seen.add(p.chunk_id)
            out.append(p)
    return out


class ResearchState(TypedDict, total=False):
    """Everything a research run knows."""

    question: str
    task_id: str | None
    seed: int | None
    round: int
    plan: list[str]
    sub_questions: Annotated[list[str], operator.add]
    queries: Annotated[list[QueryRecord], operator.add]
    passages: Annotated[list[Passage], merge_passages]
    evidence: list[Passage]
    notes: Annotated[list[str], operator.add]
    counters: Annotated[Counters, operator.add]
    answer: str
    report: str
    citations: list[Citation]
    stats: dict[str, Any]
    stop_reason: str


class ResearchInput(TypedDict, total=False):
    """What a run starts from."""

    question: str
    task_id: str | None
    seed: int | None


class ResearchOutput(TypedDict, total=False):
    """What a run returns (no list reducers: safe to use the graph as a subgraph)."""

    question: str
    answer: str
    report: str
    citations: list[Citation]
    evidence: list[Passage]
    retrieved: list[Passage]
    queries_made: list[QueryRecord]
    observations: list[str]
    stats: dict[str, Any]
    stop_reason: str
