"""The writer: a short answer and a report whose numbered citations point at retrieved passages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agents.base import Agent, read_input
from agents.parsing import parse_draft
from agents.prompting import brief
from agents.schemas import Citation, WriterInput, WriterUpdate
from tools.types import Passage

REASONED = "writer_reasoned"  # the prompt whose reply states the linking facts, then the answer


def writer_reply(reasons: str, answer: str, prompt: str | None = None) -> str:
    """A demonstration reply in the format of the writer prompt `prompt` (None: the default
    writer, the answer first; `REASONED`: the cited facts first, then the answer)."""
    if prompt == REASONED:
        return f"{reasons}\n<answer>{answer}</answer>"
    return f"<answer>{answer}</answer>\n{reasons}"


def cite(cited: Iterable[int], evidence: Sequence[Passage]) -> tuple[list[Citation], int]:
    """Citations for the numbers that point at an evidence passage, and how many did not."""
    citations, dropped = [], 0
    for n in cited:
        if 1 <= n <= len(evidence):
            p = evidence[n - 1]
            citations.append(Citation(n=n, chunk_id=p.chunk_id, doc_id=p.doc_id,
                                      title=p.title, url=p.url))
        else:
            dropped += 1
    return citations, dropped


class Writer(Agent):
    """Answers from the selected evidence (or the best retrieved passages when none was selected).

    Citations are numbers into that evidence list; a number that points at no passage of this
    run is dropped and counted in `dropped_citations`.
    """

    role = "writer"
    input_model = WriterInput

    def __init__(self, model: Any, *, max_evidence: int = 5, passage_words: int = 60,
                 max_new_tokens: int = 128, **kwargs: Any):
        super().__init__(model, max_new_tokens=max_new_tokens, **kwargs)
        self.max_evidence = max_evidence
        self.passage_words = passage_words

    def __call__(self, state: WriterInput | Mapping[str, Any]) -> WriterUpdate:
        """Write the answer and report."""
        inp = read_input(WriterInput, state)
        evidence = inp.evidence or sorted(inp.passages, key=lambda p: -p.score)
        evidence = evidence[: self.max_evidence]
        reply = self.call_model(inp.seed, question=inp.question,
                                evidence=[brief(p, self.passage_words) for p in evidence])
        draft = parse_draft(reply.text)
        self.report_parse(reply, draft)
        citations, dropped = cite(draft.cited, evidence)
        notes = self.call_notes("writer", reply, draft.ok, "no <answer> in the reply", dropped)
        counters = self.usage(reply, draft.ok).model_copy(update={"dropped_citations": dropped})
        return WriterUpdate(answer=draft.answer, report=draft.report, citations=citations,
                            evidence=evidence, notes=notes, counters=counters)
