"""The agents' typed contracts: what each role reads, what it returns, what its parsers give.

A role's input model names the research-state keys it reads and its update model the keys it
writes (field names are state keys), so the graph converts state to input and update to
state generically, and a role knows nothing of the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from tools.types import Passage


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


class SectionDraft(BaseModel):
    """The reporter's reply: a section's paragraph and the evidence numbers it cites."""

    text: str = ""
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


class Counters(BaseModel):
    """What a run has spent and how it went, added up across nodes and branches."""

    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    format_failures: int = 0
    model_errors: int = 0
    searches: int = 0
    misses: int = 0
    searches_after_miss: int = 0
    dropped_citations: int = 0

    def __add__(self, other: Counters | Mapping[str, int] | None) -> Counters:
        values = other.model_dump() if isinstance(other, Counters) else dict(other or {})
        unknown = set(values) - set(Counters.model_fields)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}: the counters are "
                             f"{list(Counters.model_fields)}")
        return Counters(**{k: getattr(self, k) + int(values.get(k, 0))
                           for k in Counters.model_fields})


# --------------------------------------------------------------------------- what roles read


class PlannerInput(BaseModel):
    """What the planner reads: the question, the evidence so far, the sub-questions asked."""

    question: str
    evidence: list[Passage] = Field(default_factory=list)
    sub_questions: list[str] = Field(default_factory=list)
    seed: int | None = None


class SearchRequest(BaseModel):
    """One searcher branch: a sub-question, what was already seen, and its search budget."""

    question: str
    sub_question: str = ""
    round: int = 0
    seed: int | None = None
    seen: list[str] = Field(default_factory=list, description="Chunk ids already retrieved.")
    known: list[str] = Field(default_factory=list, description="Titles of the evidence so far.")
    searches_left: int = 3


class SelectorInput(BaseModel):
    """What the selector reads: the question, its sub-questions and every passage retrieved."""

    question: str
    sub_questions: list[str] = Field(default_factory=list)
    passages: list[Passage] = Field(default_factory=list)
    seed: int | None = None


class WriterInput(BaseModel):
    """What the writer reads: the question, the selected evidence, every passage retrieved."""

    question: str
    evidence: list[Passage] = Field(default_factory=list)
    passages: list[Passage] = Field(default_factory=list)
    seed: int | None = None


class ReporterInput(BaseModel):
    """What the reporter reads for one section: the question, the section's topic (a
    sub-question, or the summary with the short answer) and the evidence it may cite."""

    question: str
    topic: str
    evidence: list[Passage] = Field(default_factory=list)
    seed: int | None = None


# --------------------------------------------------------------------------- what roles return
# Field names are the research state's keys: a role's result is a state update.


class PlannerUpdate(BaseModel):
    """The next round's sub-questions (empty: the evidence suffices)."""

    plan: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)


class SearchUpdate(BaseModel):
    """New passages and the queries that found them."""

    passages: list[Passage] = Field(default_factory=list)
    queries: list[QueryRecord] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)


class SelectorUpdate(BaseModel):
    """The evidence kept for the writer and the next plan."""

    evidence: list[Passage] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)


class WriterUpdate(BaseModel):
    """The answer, the report, and citations that point at retrieved passages."""

    answer: str = ""
    report: str = ""
    citations: list[Citation] = Field(default_factory=list)
    evidence: list[Passage] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)
