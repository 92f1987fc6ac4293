"""The reporter: a long-form Markdown report whose numbered citations point at retrieved passages.

It runs after the research graph has answered. The report's structure is the code's: a summary,
one section per sub-question, then the sources; each section's paragraph is one model call (role
`reporter`), because a 135M model keeps a short paragraph on topic but not a whole multi-section
document. A section's citations are numbers into the evidence shown for that section, checked
with the writer's `cite` (a number that points at no passage is dropped and counted), then
renumbered into one Sources list in the order the report first cites them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from agents.base import Agent, read_input
from agents.parsing import parse_section, replace_citations
from agents.prompting import brief
from agents.schemas import Citation, Counters, QueryRecord, ReporterInput
from agents.writer import cite
from tools.types import Passage

SUMMARY = "Summary"
NO_EVIDENCE = "No passage was retrieved for this sub-question."


class SectionUpdate(BaseModel):
    """One section as the reporter wrote it: citations numbered into its own evidence."""

    text: str = ""
    citations: list[Citation] = Field(default_factory=list)
    dropped_citations: int = 0
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)


class Section(BaseModel):
    """A section of the finished report: citations numbered into the report's sources."""

    heading: str
    topic: str
    text: str
    citations: list[Citation] = Field(default_factory=list)
    dropped_citations: int = 0


class Reporter(Agent):
    """Writes one report section (a topic and its numbered evidence) as a cited paragraph."""

    role = "reporter"
    input_model = ReporterInput

    def __init__(self, model: Any, *, passage_words: int = 60, max_new_tokens: int = 160,
                 **kwargs: Any):
        super().__init__(model, max_new_tokens=max_new_tokens, **kwargs)
        self.passage_words = passage_words

    def __call__(self, state: ReporterInput | Mapping[str, Any]) -> SectionUpdate:
        """Write the section; citations to passages not shown are dropped and counted."""
        inp = read_input(ReporterInput, state)
        if not inp.evidence:
            return SectionUpdate(text=NO_EVIDENCE)
        reply = self.call_model(inp.seed, question=inp.question, topic=inp.topic,
                                evidence=[brief(p, self.passage_words) for p in inp.evidence])
        draft = parse_section(reply.text, cut=reply.completion_tokens >= self.max_new_tokens)
        self.report_parse(reply, draft)
        citations, dropped = cite(draft.cited, inp.evidence)
        notes = self.call_notes("reporter", reply, draft.ok,
                                f"an empty section for {inp.topic!r}", dropped)
        counters = self.usage(reply, draft.ok).model_copy(update={"dropped_citations": dropped})
        return SectionUpdate(text=draft.text, citations=citations, dropped_citations=dropped,
                             notes=notes, counters=counters)


# --------------------------------------------------------------------------- planning


def sub_questions(queries: Sequence[QueryRecord]) -> list[str]:
    """The sub-questions the run searched, in the order first searched."""
    return list(dict.fromkeys(q.sub_question for q in queries if q.sub_question.strip()))


def section_evidence(sub_question: str, queries: Sequence[QueryRecord],
                     passages: Sequence[Passage], evidence: Sequence[Passage],
                     k: int = 4) -> list[Passage]:
    """The passages a sub-question's searches retrieved, the selected evidence first, at most k."""
    by_id = {p.chunk_id: p for p in [*passages, *evidence]}
    found = [cid for q in queries if q.sub_question == sub_question for cid in q.retrieved]
    found = [cid for cid in dict.fromkeys(found) if cid in by_id]
    selected = {p.chunk_id for p in evidence}
    ranked = sorted(found, key=lambda cid: (cid not in selected, -by_id[cid].score))
    return [by_id[cid] for cid in ranked[:k]]


def plan_sections(question: str, answer: str, *, evidence: Sequence[Passage],
                  passages: Sequence[Passage], queries: Sequence[QueryRecord], k: int = 4,
                  seed: int | None = None) -> list[tuple[str, ReporterInput]]:
    """(heading, reporter input) of every section: the summary, then one per sub-question."""
    top = list(evidence) or sorted(passages, key=lambda p: -p.score)
    topic = f"{SUMMARY} (short answer: {answer})" if answer else SUMMARY
    plan = [(SUMMARY, ReporterInput(question=question, topic=topic, evidence=top[:k], seed=seed))]
    for i, sq in enumerate(sub_questions(queries), 1):
        ev = section_evidence(sq, queries, passages, evidence, k)
        plan.append((f"{i}. {sq}", ReporterInput(question=question, topic=sq, evidence=ev,
                                                 seed=None if seed is None else seed + i)))
    return plan


# --------------------------------------------------------------------------- assembly


def _tidy(text: str) -> str:
    """Spaces left before punctuation or doubled where a citation was dropped."""
    return re.sub(r"[ \t]{2,}", " ", re.sub(r"[ \t]+([.,;:!?])", r"\1", text)).strip()


def number_sources(parts: Sequence[tuple[str, str, SectionUpdate]]
                   ) -> tuple[list[Section], list[Citation]]:
    """Sections with their citations renumbered into one sources list (by first citation);
    `parts` are (heading, topic, update) in document order."""
    sources: dict[str, Citation] = {}
    sections = []
    for heading, topic, upd in parts:
        local = {c.n: c for c in upd.citations}

        def renumber(n: int, local: dict[int, Citation] = local) -> str:
            c = local.get(n)
            if c is None:  # cite() dropped it and counted it already
                return ""
            if c.chunk_id not in sources:
                sources[c.chunk_id] = c.model_copy(update={"n": len(sources) + 1})
            return f"[{sources[c.chunk_id].n}]"

        text = _tidy(replace_citations(upd.text, renumber))
        cited = [sources[c.chunk_id] for c in upd.citations if c.chunk_id in sources]
        sections.append(Section(heading=heading, topic=topic, text=text,
                                citations=list({c.n: c for c in cited}.values()),
                                dropped_citations=upd.dropped_citations))
    return sections, list(sources.values())


def source_line(c: Citation) -> str:
    """A sources-list entry: number, title, and the URL or document id."""
    where = f"<{c.url}>" if c.url else f"document `{c.doc_id}`"
    return f"{c.n}. {c.title or c.doc_id} — {where}"


def render_markdown(question: str, answer: str, sections: Sequence[Section],
                    sources: Sequence[Citation], dropped: int = 0) -> str:
    """The report as Markdown: title, short answer, sections, then the numbered sources."""
    lines = [f"# {' '.join(question.split())}", "", f"**Answer:** {answer or '(none)'}", ""]
    for s in sections:
        lines += [f"## {' '.join(s.heading.split())}", "", s.text or "(no text)", ""]
    lines += ["## Sources", ""]
    lines += [source_line(c) for c in sources] or ["No passage was cited."]
    if dropped:
        lines += ["", f"_{dropped} citation(s) that pointed at no retrieved passage were dropped._"]
    return "\n".join(lines) + "\n"


__all__ = ["NO_EVIDENCE", "SUMMARY", "Reporter", "Section", "SectionUpdate", "number_sources",
           "plan_sections", "render_markdown", "section_evidence", "source_line", "sub_questions"]
