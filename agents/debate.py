"""The debate writer (MADAM-RAG): one agent per document, rounds of debate, an aggregator.

Why not the single writer: when retrieved documents conflict (two things share a name, so
several answers are right; or a page asserts a wrong value, misinformation) a writer that reads
every passage at once tends to pick one answer or blend them. Here, as in MADAM-RAG (Wang et
al. 2025, RAMDocs), each debater reads one document and answers from it alone; in every later
round it also sees the other agents' last answers and explanations and may revise (which also
carries a multi-hop question's bridge fact from one document's agent to another's); the
aggregator reads the final answers and returns every supported one, joined in the one answer
format (`join_answers`: "A; B"), leaving out answers that only a contradicted document backs.

It is a LangGraph graph of its own, usable standalone (`build_debate_graph(model)`):

    START -> next_round -> debater x N (Send, one per document) -> next_round -> ...
             next_round -> aggregate (after `rounds` rounds, or with no document) -> END

`debater=` / `aggregator=` replace either role with any callable that takes a `DebaterInput` /
`AggregatorInput` and returns an update (a pydantic model or a dict of state keys).
`DebateWriter` runs it as the research graph's writer stage (`ResearchConfig(writer="debate")`)
and returns the Writer's `WriterUpdate`. Every model call goes through `Agent.call_model` with
the role `debater` or `aggregator`, so a `TrajectoryRecorder` records it and training trains it
like any other role.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel, Field

from agents.base import Agent, read_input
from agents.models import load_chat_model
from agents.parsing import parse_draft
from agents.prompting import brief, neutralize
from agents.schemas import Citation, Counters, WriterInput, WriterUpdate
from agents.writer import cite
from tools.text import normalize_answer
from tools.types import Passage

ANSWER_SEPARATOR = "; "  # the one answer format of several answers: "A; B"
NO_ANSWER = "unknown"  # what a debater answers when its document supports nothing
_SPLIT = re.compile(r"[;\n]")


def split_answers(text: str) -> list[str]:
    """The answers in an answer string ("A; B"), in order, normalised duplicates dropped.

    >>> split_answers("Varo; holm;  varo\\n")
    ['Varo', 'holm']
    """
    out: dict[str, str] = {}
    for part in _SPLIT.split(text or ""):
        key = normalize_answer(part) or part.strip().lower()  # "A" normalises to ""
        if key and key not in out:
            out[key] = part.strip()
    return list(out.values())


def join_answers(answers: Iterable[str]) -> str:
    """Several answers as one answer string, `unknown` dropped beside real answers.

    >>> join_answers(["Varo", "unknown", "Holm; Varo"])
    'Varo; Holm'
    """
    parts = split_answers("\n".join(answers))
    known = [p for p in parts if normalize_answer(p) != NO_ANSWER]
    return ANSWER_SEPARATOR.join(known or parts[:1])


class Turn(BaseModel):
    """One debater's answer in one round; `agent` n read document [n]."""

    agent: int
    round: int
    title: str = ""
    answer: str = ""
    explanation: str = ""
    ok: bool = True


class DebaterInput(BaseModel):
    """One debater's turn: its document, and the others' answers of the round before."""

    question: str
    agent: int
    round: int = 1
    document: Passage
    previous: Turn | None = None
    others: list[Turn] = Field(default_factory=list)
    seed: int | None = None


class DebaterUpdate(BaseModel):
    """A debater's turn as an update of the debate state."""

    turns: list[Turn] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)


class AggregatorInput(BaseModel):
    """What the aggregator reads: the question, the documents and every debater turn."""

    question: str
    evidence: list[Passage] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    seed: int | None = None


class DebateState(TypedDict, total=False):
    """The debate graph's state: `evidence` holds one passage per document, in citation order."""

    question: str
    seed: int | None
    evidence: list[Passage]
    round: int
    turns: Annotated[list[Turn], operator.add]
    notes: Annotated[list[str], operator.add]
    counters: Annotated[Counters, operator.add]
    answer: str
    report: str
    citations: list[Citation]


def documents(passages: Sequence[Passage | Mapping[str, Any]], limit: int) -> list[Passage]:
    """One passage per document (its chunks' texts joined, in order), at most `limit`."""
    grouped: dict[str, Passage] = {}
    for raw in passages:
        p = raw if isinstance(raw, Passage) else Passage.model_validate(dict(raw))
        if p.doc_id in grouped:
            first = grouped[p.doc_id]
            grouped[p.doc_id] = first.model_copy(update={"text": f"{first.text} {p.text}"})
        elif len(grouped) < limit:
            grouped[p.doc_id] = p
    return list(grouped.values())


def latest(turns: Iterable[Turn], before: int | None = None) -> dict[int, Turn]:
    """Each agent's last turn (of a round before `before`, when given), by agent number."""
    out: dict[int, Turn] = {}
    for t in sorted(turns, key=lambda t: t.round):
        if before is None or t.round < before:
            out[t.agent] = t
    return out


def _said(turn: Turn, words: int) -> dict[str, Any]:
    """A turn as prompt data: model text is data too, so its action tags are defused."""
    explanation = " ".join(turn.explanation.split()[:words])
    return {"agent": turn.agent, "title": neutralize(turn.title),
            "answer": neutralize(turn.answer).rstrip(". ") or NO_ANSWER,
            "explanation": neutralize(explanation)}


def _seed(seed: int | None, rnd: int, agent: int) -> int | None:
    """A distinct, reproducible seed per debater call (None stays None)."""
    return None if seed is None else (seed + 1_000 * rnd + agent) % 2**48


class Debater(Agent):
    """Answers from one document, and from round 2 on, in view of the other agents' answers."""

    role = "debater"
    input_model = DebaterInput
    stop = ["</answer>"]

    def __init__(self, model: Any, *, passage_words: int = 120, said_words: int = 40,
                 max_new_tokens: int = 128, **kwargs: Any):
        super().__init__(model, max_new_tokens=max_new_tokens, **kwargs)
        self.passage_words = passage_words
        self.said_words = said_words

    def __call__(self, state: DebaterInput | Mapping[str, Any]) -> DebaterUpdate:
        """One turn of one debater."""
        inp = read_input(DebaterInput, state)
        reply = self.call_model(
            inp.seed, question=inp.question, round=inp.round,
            document=brief(inp.document, self.passage_words),
            previous=_said(inp.previous, self.said_words) if inp.previous else None,
            others=[_said(t, self.said_words) for t in sorted(inp.others, key=lambda t: t.agent)])
        draft = parse_draft(reply.text)
        self.report_parse(reply, draft)
        turn = Turn(agent=inp.agent, round=inp.round, title=inp.document.title,
                    answer=draft.answer or NO_ANSWER, explanation=draft.report, ok=draft.ok)
        notes = self.call_notes(f"debater {inp.agent} round {inp.round}", reply, draft.ok,
                                "no <answer> in the reply")
        return DebaterUpdate(turns=[turn], notes=notes, counters=self.usage(reply, draft.ok))


class Aggregator(Agent):
    """Reads the debaters' final answers; returns every supported answer ("A; B") with citations."""

    role = "aggregator"
    input_model = AggregatorInput
    stop = ["</answer>"]

    def __init__(self, model: Any, *, said_words: int = 40, max_new_tokens: int = 128,
                 **kwargs: Any):
        super().__init__(model, max_new_tokens=max_new_tokens, **kwargs)
        self.said_words = said_words

    def __call__(self, state: AggregatorInput | Mapping[str, Any]) -> WriterUpdate:
        """The final answer, report and citations of the debate."""
        inp = read_input(AggregatorInput, state)
        final = [t for _, t in sorted(latest(inp.turns).items())]
        reply = self.call_model(inp.seed, question=inp.question,
                                agents=[_said(t, self.said_words) for t in final])
        draft = parse_draft(reply.text)
        self.report_parse(reply, draft)
        citations, dropped = cite(draft.cited, inp.evidence)
        notes = self.call_notes("aggregator", reply, draft.ok, "no <answer> in the reply", dropped)
        counters = self.usage(reply, draft.ok).model_copy(update={"dropped_citations": dropped})
        return WriterUpdate(answer=join_answers([draft.answer]) if draft.answer else "",
                            report=draft.report, citations=citations, evidence=inp.evidence,
                            notes=notes, counters=counters)


def _fields(update: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A role's result (a pydantic model or a dict of state keys) as a state update."""
    if isinstance(update, BaseModel):
        return {name: getattr(update, name) for name in type(update).model_fields}
    return dict(update)


def _routes(rounds: int, max_debaters: int) -> tuple[Any, Any]:
    """The `next_round` node and the router that fans its round out to the debaters."""
    def next_round(state: DebateState) -> dict[str, Any]:
        rnd = state.get("round", 0)
        if rnd == 0:  # the debate opens: one debater per document
            return {"round": 1, "evidence": documents(state.get("evidence") or [], max_debaters)}
        return {"round": rnd + 1}

    def route(state: DebateState) -> Any:
        rnd, docs = state["round"], state.get("evidence") or []
        if rnd > rounds or not docs:
            return "aggregate"
        before = latest(state.get("turns") or [], before=rnd)
        return [Send("debater", DebaterInput(
                    question=state["question"], agent=n, round=rnd, document=doc,
                    previous=before.get(n), others=[t for a, t in before.items() if a != n],
                    seed=_seed(state.get("seed"), rnd, n)))
                for n, doc in enumerate(docs, 1)]
    return next_round, route


def build_debate_graph(model: str | BaseChatModel | None = None, *, debater: Any = None,
                       aggregator: Any = None, rounds: int = 2, max_debaters: int = 5,
                       checkpointer: Any = None, name: str = "debate") -> Any:
    """Compile the debate graph: input `question`, `evidence` (passages), optional `seed`."""
    if rounds < 1 or max_debaters < 1:
        raise ValueError("a debate needs rounds >= 1 and max_debaters >= 1")
    if debater is None or aggregator is None:
        if model is None:
            raise ValueError("build_debate_graph needs a model (or both debater= and aggregator=)")
        chat = load_chat_model(model) if isinstance(model, str) else model
        debater = debater or Debater(chat)
        aggregator = aggregator or Aggregator(chat)
    next_round, route = _routes(rounds, max_debaters)
    g = StateGraph(DebateState)
    g.add_node("next_round", next_round)
    g.add_node("debater", lambda inp: _fields(debater(inp)))
    g.add_node("aggregate", lambda state: _fields(aggregator(AggregatorInput(
        question=state["question"], evidence=state.get("evidence") or [],
        turns=state.get("turns") or [], seed=state.get("seed")))))
    g.add_edge(START, "next_round")
    g.add_conditional_edges("next_round", route, ["debater", "aggregate"])
    g.add_edge("debater", "next_round")
    g.add_edge("aggregate", END)
    return g.compile(checkpointer=checkpointer, name=name)


class DebateWriter:
    """The writer stage as a debate: reads the Writer's input, returns the Writer's update.

    Its documents are the selected evidence (or the best retrieved passages when none was
    selected), grouped by document, at most `max_debaters`; citations are numbers into them.
    The debaters run on `model`, the aggregator on `aggregator_model` (default: `model`).
    """

    role = "debate"
    input_model = WriterInput

    def __init__(self, model: Any, *, rounds: int = 2, max_debaters: int = 5,
                 passage_words: int = 120, debater_prompt: str | None = None,
                 aggregator_prompt: str | None = None, aggregator_model: Any = None,
                 **kwargs: Any):
        self.debater = Debater(model, passage_words=passage_words, prompt=debater_prompt, **kwargs)
        self.aggregator = Aggregator(aggregator_model if aggregator_model is not None else model,
                                     prompt=aggregator_prompt, **kwargs)
        self.graph = build_debate_graph(debater=self.debater, aggregator=self.aggregator,
                                        rounds=rounds, max_debaters=max_debaters)

    def __call__(self, state: WriterInput | Mapping[str, Any]) -> WriterUpdate:
        """Debate over the evidence, then aggregate."""
        inp = read_input(WriterInput, state)
        passages = inp.evidence or sorted(inp.passages, key=lambda p: -p.score)
        out = self.graph.invoke({"question": inp.question, "evidence": passages,
                                 "seed": inp.seed})
        return WriterUpdate(answer=out.get("answer", ""), report=out.get("report", ""),
                            citations=out.get("citations") or [],
                            evidence=out.get("evidence") or [], notes=out.get("notes") or [],
                            counters=out.get("counters") or Counters())


__all__ = ["ANSWER_SEPARATOR", "NO_ANSWER", "Aggregator", "DebateState", "DebateWriter",
           "Debater", "Turn", "build_debate_graph", "documents", "join_answers",
           "split_answers"]
