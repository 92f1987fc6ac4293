"""The selector: keeps the passages that bear on the question, one per document, ranked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.base import Agent, read_input
from agents.parsing import parse_verdict
from agents.prompting import brief
from agents.schemas import SelectorInput, SelectorUpdate
from tools.text import overlap
from tools.types import Passage


class _Judge(Agent):
    role = "selector"
    stop = None


class Selector:
    """Rules first (dedup by document, lexical relevance to the question and sub-questions,
    retrieval rank); optionally a model's yes/no judgement of each remaining passage."""

    role = "selector"
    input_model = SelectorInput

    def __init__(self, model: Any = None, *, k: int = 6, judge: bool = False, **kwargs: Any):
        if judge and model is None:
            raise ValueError("Selector(judge=True) needs a model")
        self.k = k
        self.judge = _Judge(model, max_new_tokens=4, **kwargs) if judge else None

    def rank(self, state: SelectorInput | Mapping[str, Any]) -> list[Passage]:
        """Best passage per document, by relevance to the question and its sub-questions."""
        inp = read_input(SelectorInput, state)

        def relevance(p: Passage) -> float:
            text = f"{p.title} {p.text}"
            sub = max((overlap(q, text) for q in inp.sub_questions), default=0.0)
            return overlap(inp.question, text) + 0.5 * sub

        best: dict[str, tuple[float, float, Passage]] = {}
        for i, p in enumerate(inp.passages):
            rel = relevance(p)
            score = rel + 0.1 / (1 + i)  # retrieval order breaks ties
            if p.doc_id not in best or score > best[p.doc_id][0]:
                best[p.doc_id] = (score, rel, p)
        ranked = sorted(best.values(), key=lambda t: -t[0])
        return [p for _, rel, p in ranked if rel > 0] or [p for _, _, p in ranked]

    def __call__(self, state: SelectorInput | Mapping[str, Any]) -> SelectorUpdate:
        """Select the evidence for the writer (and the planner's next round)."""
        inp = read_input(SelectorInput, state)
        ranked = self.rank(inp)[: self.k * (2 if self.judge else 1)]
        out = SelectorUpdate()
        if self.judge is not None and ranked:
            kept = []
            for p in ranked:
                reply = self.judge.call_model(inp.seed, question=inp.question, passage=brief(p))
                verdict = parse_verdict(reply.text)
                self.judge.report_parse(reply, verdict)
                out.counters += self.judge.usage(reply, verdict.ok)
                if verdict.relevant or not verdict.ok:
                    kept.append(p)
            ranked = kept or ranked[:2]
        out.evidence = ranked[: self.k]
        return out
