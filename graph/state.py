"""The research graph's state, declared in one place, with its reducers.

Lists that branches add to (queries, notes, sub-questions) append; passages are merged by
chunk id (first copy wins); counters add up key by key. Everything else is replaced by
the node that writes it.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from agents.schemas import Citation, QueryRecord
from tools.knowledge import Passage


def merge_passages(old: list[Passage] | None, new: list[Passage] | None) -> list[Passage]:
    """Append passages not seen before (by chunk id), keeping order."""
    out = list(old or [])
    seen = {p.chunk_id for p in out}
    for p in new or []:
        if p.chunk_id not in seen:
            seen.add(p.chunk_id)
            out.append(p)
    return out


def add_counts(old: dict[str, int] | None, new: dict[str, int] | None) -> dict[str, int]:
    """Add counters key by key."""
    out = dict(old or {})
    for k, v in (new or {}).items():
        out[k] = out.get(k, 0) + v
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
    counters: Annotated[dict[str, int], add_counts]
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


class SearchTask(TypedDict, total=False):
    """What one searcher branch receives through `Send`."""

    question: str
    sub_question: str
    round: int
    seed: int | None
    seen: list[str]
    known: list[str]
    searches_left: int
