"""Typed results of the agents' parsers and of their work."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Plan(BaseModel):
    """The planner's decision: sub-questions to research, or done."""

    sub_questions: list[str] = Field(default_factory=list)
    done: bool = False
    ok: bool = True


class SearchAction(BaseModel):
    """The searcher's query (None when the reply held none)."""

    query: str | None = None
    ok: bool = True


class Verdict(BaseModel):
    """The selector model's yes/no judgement of one passage."""

    relevant: bool = False
    ok: bool = True


class Draft(BaseModel):
    """The writer's reply: short answer, report, and the evidence numbers it cites."""

    answer: str = ""
    report: str = ""
    cited: list[int] = Field(default_factory=list)
    ok: bool = True


class Citation(BaseModel):
    """A numbered citation in a report, pointing at a passage retrieved in this run."""

    n: int
    chunk_id: str
    doc_id: str
    title: str = ""
    url: str | None = None


class QueryRecord(BaseModel):
    """One search the searcher ran, and whether it missed (no new relevant passage)."""

    sub_question: str
    query: str
    round: int = 0
    attempt: int = 0
    tool: str = ""
    retrieved: list[str] = Field(default_factory=list)
    new: int = 0
    relevant_new: int = 0
    miss: bool = False
    error: str | None = None
