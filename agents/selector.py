"""The selector: keeps the passages that bear on the question, one per document, ranked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables.config import ContextThreadPoolExecutor

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
    """Rules first (one passage per document; every sub-question's best passage kept, then
    the rest by lexical relevance to the question or any sub-question, with words in the
    title counting extra and retrieval order breaking ties); optionally a model's yes/no
    judgement of each remaining passage (the calls go out together, so a local model batches
    them).

    Covering each sub-question matters for multi-hop questions: the page that answers a
    later hop ("Where is the University of Zilford based?") shares few words with the
    question itself, and ranking by the question alone would drop it.
    """

    role = "selector"
    input_model = SelectorInput

    def __init__(self, model: Any = None, *, k: int = 6, judge: bool = False, **kwargs: Any):
        if judge and model is None:
            raise ValueError("Selector(judge=True) needs a model")
        self.k = k
        self.judge = _Judge(model, max_new_tokens=4, **kwargs) if judge else None

    def rank(self, state: SelectorInput | Mapping[str, Any]) -> list[Passage]:
        """Best passage per document: each sub-question's best first, then by relevance."""
        inp = read_input(SelectorInput, state)
        queries = [inp.question, *inp.sub_questions]
        best: dict[str, tuple[list[float], Passage]] = {}  # doc -> (relevance per query, passage)
        for i, p in enumerate(inp.passages):
            text = f"{p.title} {p.text}"
            # a page titled with the words asked about is the page about that thing
            rel = [overlap(q, text) + 0.5 * overlap(q, p.title) + 0.01 / (1 + i) for q in queries]
            if p.doc_id not in best or max(rel) > max(best[p.doc_id][0]):
                best[p.doc_id] = (rel, p)
        rows = list(best.values())
        covering = []
        for q in range(1, len(queries)):  # the best page for each sub-question, in order
            top = max(rows, key=lambda r: r[0][q], default=None)
            if top is not None and top[0][q] >= 0.5 and top[1] not in covering:
                covering.append(top[1])
        rest = [p for rel, p in sorted(rows, key=lambda r: -max(r[0]))
                if p not in covering and max(rel) > 0.05]
        return covering + rest or [p for _, p in rows]

    def __call__(self, state: SelectorInput | Mapping[str, Any]) -> SelectorUpdate:
        """Select the evidence for the writer (and the planner's next round)."""
        inp = read_input(SelectorInput, state)
        ranked = self.rank(inp)[: self.k * (2 if self.judge else 1)]
        out = SelectorUpdate()
        if self.judge is not None and ranked:
            judge = self.judge
            # calls made together are batched by a local model; the pool carries the run's
            # callbacks (LangChain's context-propagating executor), so each call is recorded
            with ContextThreadPoolExecutor(max_workers=len(ranked)) as pool:
                replies = list(pool.map(lambda p: judge.call_model(
                    inp.seed, question=inp.question, passage=brief(p)), ranked))
            kept = []
            for p, reply in zip(ranked, replies, strict=True):
                verdict = parse_verdict(reply.text)
                self.judge.report_parse(reply, verdict)
                out.counters += self.judge.usage(reply, verdict.ok)
                if verdict.relevant or not verdict.ok:
                    kept.append(p)
            ranked = kept or ranked[:2]
        out.evidence = ranked[: self.k]
        return out
