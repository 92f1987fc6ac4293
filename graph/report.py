"""`write_report`: a long-form Markdown report of a finished research run.

    result = research(question, knowledge="kb/")
    report = write_report(result, load_chat_model("local:smollm2"))
    Path("report.md").write_text(report.markdown)

The reporter (`agents.reporter`) writes a summary and one section per sub-question from the
run's own passages; every model call is recorded with role `reporter` and appended to a copy
of the run's trajectory (`report.trajectory`, ready for a `TrajectoryStore`), so the reporter
can be trained like the other roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel, Field

from agents import load_chat_model
from agents.reporter import Reporter, Section, SectionUpdate, number_sources, plan_sections, render_markdown
from agents.schemas import Citation, Counters, QueryRecord
from graph.recording import TrajectoryRecorder
from graph.trajectory import Trajectory
from tools.types import Passage


class Report(BaseModel):
    """A finished report: Markdown, its sections and sources, and what writing it cost."""

    question: str
    answer: str = ""
    markdown: str
    sections: list[Section] = Field(default_factory=list)
    sources: list[Citation] = Field(default_factory=list)
    dropped_citations: int = 0
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)
    trajectory: Trajectory | None = None


def _field(source: Any, *names: str) -> Any:
    """The first of these attributes (a ResearchResult) or keys (a research state) present."""
    for name in names:
        value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
        if value is not None:
            return value
    return None


def _models(items: Any, model: type[BaseModel]) -> list[Any]:
    return [x if isinstance(x, model) else model.model_validate(x) for x in items or []]


def _with_steps(trajectory: Trajectory | None, recorder: TrajectoryRecorder,
                report: Report) -> Trajectory | None:
    """A copy of the run's trajectory with the reporter's calls and the report's counts."""
    if trajectory is None:
        return None
    steps = recorder.trajectory().steps
    metrics = {**trajectory.metrics, "report_sections": len(report.sections),
               "report_sources": len(report.sources),
               "report_dropped_citations": report.dropped_citations}
    return trajectory.model_copy(update={"steps": [*trajectory.steps, *steps], "metrics": metrics})


def write_report(source: Any, model: str | BaseChatModel, *, evidence_k: int = 4,
                 passage_words: int = 60, max_new_tokens: int = 160,
                 temperature: float | None = None, seed: int | None = None,
                 examples: bool | None = None, prompt: str | None = None,
                 callbacks: list[Any] | None = None, concurrency: int = 4) -> Report:
    """Write a report of a `ResearchResult` or a research graph's output (or state) mapping.

    One reporter call per section (the summary, then each sub-question with the passages its
    searches retrieved, at most `evidence_k`), run `concurrency` at once (a local model
    batches them). `callbacks` see the calls too (e.g. your own `TrajectoryRecorder`).
    """
    chat = load_chat_model(model)
    question = str(_field(source, "question") or "")
    answer = str(_field(source, "answer") or "")
    plan = plan_sections(question, answer,
                         evidence=_models(_field(source, "evidence"), Passage),
                         passages=_models(_field(source, "passages", "retrieved"), Passage),
                         queries=_models(_field(source, "queries", "queries_made"), QueryRecord),
                         k=evidence_k, seed=seed)
    if examples is None:
        examples = bool(getattr(chat, "prompt_examples", True))
    prompt = prompt or (getattr(chat, "prompts", None) or {}).get("reporter")
    reporter = Reporter(chat, passage_words=passage_words, max_new_tokens=max_new_tokens,
                        temperature=temperature, examples=examples, prompt=prompt)
    recorder = TrajectoryRecorder()
    updates: list[SectionUpdate] = RunnableLambda(reporter, name="reporter").batch(
        [inp for _, inp in plan],
        {"callbacks": [recorder, *(callbacks or [])], "max_concurrency": max(1, concurrency)})
    sections, sources = number_sources([(h, inp.topic, u)
                                        for (h, inp), u in zip(plan, updates, strict=True)])
    dropped = sum(u.dropped_citations for u in updates)
    counters = sum((u.counters for u in updates), Counters())
    report = Report(question=question, answer=answer,
                    markdown=render_markdown(question, answer, sections, sources, dropped),
                    sections=sections, sources=sources, dropped_citations=dropped,
                    notes=[n for u in updates for n in u.notes], counters=counters)
    trajectory = _field(source, "trajectory")
    report.trajectory = _with_steps(trajectory if isinstance(trajectory, Trajectory) else None,
                                    recorder, report)
    return report


__all__ = ["Report", "write_report"]
