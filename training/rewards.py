"""Rewards: plain callables `(trajectory, task) -> float`, and their weighted mix `Reward`.

Every reward reads only what the trajectory recorded (answer, citations, tool hits, parse
results, model calls) and the task's gold (`answer`, `aliases`, gold `docs`, or the
`gold` a trajectory carries), so stored trajectories can be re-scored with new weights or
new components without running anything again (`rescore`).

`persistence` is the one that teaches searching again after a miss. Unlike ReZero's retry
reward (0.2 + 0.15·min(searches, 5) whenever an answer exists, which paid for searching
regardless of outcome and collapsed after ~350 steps), it pays only for searches that
follow an observed miss, is capped, and is 0 unless the final answer is correct (F1 at least
`threshold`): searching a lot and answering wrong earns nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from graph.trajectory import ModelStep, ToolStep, Trajectory  # noqa: F401 (ModelStep: doctests)
from tools.text import normalize_answer, overlap

RewardFn = Callable[[Trajectory, dict[str, Any] | None], float]


@dataclass(frozen=True)
class Gold:
    """What a trajectory is scored against."""

    answers: tuple[str, ...]
    doc_ids: frozenset[str]
    question: str


def gold_of(trajectory: Trajectory, task: dict[str, Any] | None = None) -> Gold:
    """The task's gold (answer + aliases, gold doc ids), else the gold the trajectory carries."""
    src = task if task is not None else (trajectory.gold or {})
    answers = [src.get("answer") or ""] + list(src.get("aliases") or [])
    if "gold_doc_ids" in src:
        ids = set(src["gold_doc_ids"])
    else:
        ids = {d["doc_id"] for d in src.get("docs") or [] if d.get("gold")}
    return Gold(answers=tuple(a for a in answers if a), doc_ids=frozenset(ids),
                question=src.get("question") or trajectory.question)


def _tokens_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
    """1.0 if the normalised answer equals the normalised gold answer or an alias.

    >>> exact_match(Trajectory(answer="The Eiffel Tower!"), {"answer": "eiffel tower"})
    1.0
    >>> exact_match(Trajectory(answer="Paris"), {"answer": "London", "aliases": ["paris"]})
    1.0
    """
    pred = normalize_answer(trajectory.answer)
    return float(any(pred == normalize_answer(a) for a in gold_of(trajectory, task).answers))


def f1(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
    """Token F1 between answer and gold (SQuAD normalisation), max over answer and aliases.

    >>> f1(Trajectory(answer="born in Varo city"), {"answer": "Varo"})  # P 1/4, R 1
    0.4
    >>> f1(Trajectory(answer=""), {"answer": "Varo"})
    0.0
    """
    return max((_tokens_f1(trajectory.answer, a) for a in gold_of(trajectory, task).answers),
               default=0.0)


def format_rate(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
    """Share of model calls whose reply parsed (calls without parse information are skipped).

    >>> format_rate(Trajectory(steps=[ModelStep(parse_ok=True), ModelStep(parse_ok=False)]))
    0.5
    """
    known = [s.parse_ok for s in trajectory.model_steps if s.parse_ok is not None]
    return sum(known) / len(known) if known else 0.0


def searches(trajectory: Trajectory) -> list[ToolStep]:
    """The search tool calls, in order."""
    return [s for s in trajectory.tool_steps if s.error is None or s.output]


def search_misses(trajectory: Trajectory, task: dict[str, Any] | None = None) -> list[bool]:
    """Per search: did it miss, i.e. bring no new gold document (no new passage relevant to
    the question when the task has no gold documents)?"""
    gold = gold_of(trajectory, task)
    seen: set[str] = set()
    out = []
    for step in searches(trajectory):
        new = [h for h in step.output if h.get("doc_id") and h["doc_id"] not in seen]
        seen.update(h["doc_id"] for h in new)
        if gold.doc_ids:
            hit = any(h["doc_id"] in gold.doc_ids for h in new)
        else:
            hit = any(overlap(gold.question, f"{h.get('title', '')} {h.get('text', '')}") >= 0.5
                      for h in new)
        out.append(not hit)
    return out


def searches_after_miss(trajectory: Trajectory, task: dict[str, Any] | None = None) -> int:
    """How many searches came right after a search that missed."""
    misses = search_misses(trajectory, task)
    return sum(1 for prev in misses[:-1] if prev)


def persistence(trajectory: Trajectory, task: dict[str, Any] | None = None, *,
                threshold: float = 0.5, cap: int = 3) -> float:
    """min(searches after a miss, cap) / cap, paid only when the answer is right (F1 >= threshold).

    >>> hit = ToolStep(tool="kb", output=[{"doc_id": "g1"}])
    >>> miss = ToolStep(tool="kb", output=[{"doc_id": "x"}])
    >>> task = {"answer": "Varo", "docs": [{"doc_id": "g1", "gold": True}]}
    >>> persistence(Trajectory(answer="Varo", steps=[miss, hit]), task)
    0.3333333333333333
    >>> persistence(Trajectory(answer="Oslo", steps=[miss] * 9), task)  # wrong: nothing to farm
    0.0
    """
    if f1(trajectory, task) < threshold:
        return 0.0
    return min(searches_after_miss(trajectory, task), cap) / cap


def retrieved_doc_ids(trajectory: Trajectory) -> list[str]:
    """Distinct document ids the tools returned, in order."""
    return list(dict.fromkeys(h["doc_id"] for s in trajectory.tool_steps for h in s.output
                              if h.get("doc_id")))


def evidence_recall(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
    """Share of the task's gold documents that some tool call retrieved (0 without gold docs).

    >>> t = Trajectory(steps=[ToolStep(tool="kb", output=[{"doc_id": "g1"}, {"doc_id": "x"}])])
    >>> evidence_recall(t, {"answer": "a", "docs": [{"doc_id": "g1", "gold": True},
    ...                                            {"doc_id": "g2", "gold": True}]})
    0.5
    """
    gold = gold_of(trajectory, task).doc_ids
    if not gold:
        return 0.0
    return len(gold & set(retrieved_doc_ids(trajectory))) / len(gold)


def citation_precision(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
    """Share of cited passages that were retrieved in the run and are gold (0 without citations).

    >>> t = Trajectory(citations=[{"doc_id": "g1"}, {"doc_id": "x"}],
    ...                steps=[ToolStep(tool="kb", output=[{"doc_id": "g1"}, {"doc_id": "x"}])])
    >>> citation_precision(t, {"answer": "a", "docs": [{"doc_id": "g1", "gold": True}]})
    0.5
    """
    cited = [c.get("doc_id") for c in trajectory.citations]
    if not cited:
        return 0.0
    retrieved = set(retrieved_doc_ids(trajectory))
    gold = gold_of(trajectory, task).doc_ids
    good = [d for d in cited if d in retrieved and (d in gold if gold else True)]
    return len(good) / len(cited)


def cost(trajectory: Trajectory, task: dict[str, Any] | None = None, *, budget: int = 12,
         per_call: float = 0.02) -> float:
    """A penalty of `per_call` for every model call beyond `budget` (0 or negative).

    >>> cost(Trajectory(steps=[ModelStep()] * 15))
    -0.06
    """
    return -per_call * max(0, len(trajectory.model_steps) - budget)


def judge(model: Any, *, prompt: str = "judge") -> RewardFn:
    """An LLM-as-judge reward with any chat model: 1.0 when it says the answer holds the gold
    information, else 0.0 (for answers that F1 under-scores). The prompt is
    `agents/prompts/judge.jinja`."""
    from agents.parsing import parse_verdict
    from agents.prompting import load_template, render_messages

    template = load_template(prompt)
    cache: dict[tuple[str, str, str], float] = {}

    def judged(trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
        gold = gold_of(trajectory, task)
        if not trajectory.answer.strip() or not gold.answers:
            return 0.0
        key = (gold.question, gold.answers[0], trajectory.answer)
        if key not in cache:
            messages = render_messages(template, question=gold.question,
                                       gold=" / ".join(gold.answers), answer=trajectory.answer)
            reply = model.invoke(messages)
            text = reply.content if isinstance(reply.content, str) else str(reply.content)
            cache[key] = float(parse_verdict(text).relevant)
        return cache[key]

    judged.__name__ = "judge"
    return judged


class Reward:
    """A weighted sum of named reward components; `scores` returns every component too."""

    def __init__(self, components: dict[str, tuple[RewardFn, float]]):
        if not components:
            raise ValueError("a Reward needs at least one component")
        self.components = dict(components)

    def scores(self, trajectory: Trajectory, task: dict[str, Any] | None = None) -> dict[str, float]:
        """Each component's value and the weighted total under "reward"."""
        out = {name: float(fn(trajectory, task)) for name, (fn, _) in self.components.items()}
        out["reward"] = sum(w * out[name] for name, (_, w) in self.components.items())
        return out

    def __call__(self, trajectory: Trajectory, task: dict[str, Any] | None = None) -> float:
        return self.scores(trajectory, task)["reward"]

    @property
    def weights(self) -> dict[str, float]:
        """Component weights."""
        return {name: w for name, (_, w) in self.components.items()}


def default() -> Reward:
    """The mix training uses: correctness first, then evidence, persistence, format, cost.

    reward = 1.0·f1 + 0.5·exact_match + 0.2·persistence + 0.2·evidence_recall
             + 0.1·citation_precision + 0.1·format + 1.0·cost
    """
    return Reward({"f1": (f1, 1.0), "exact_match": (exact_match, 0.5),
                   "persistence": (persistence, 0.2), "evidence_recall": (evidence_recall, 0.2),
                   "citation_precision": (citation_precision, 0.1),
                   "format": (format_rate, 0.1), "cost": (cost, 1.0)})


def rescore(trajectories: Iterable[Trajectory], reward: Reward | RewardFn,
            tasks: dict[str, dict[str, Any]] | None = None) -> list[dict[str, float]]:
    """Score stored trajectories again (tasks by id, else the gold each trajectory carries)."""
    out = []
    for t in trajectories:
        task = (tasks or {}).get(t.task_id or "")
        if isinstance(reward, Reward):
            out.append(reward.scores(t, task))
        else:
            out.append({"reward": float(reward(t, task))})
    return out


__all__ = ["Reward", "citation_precision", "cost", "default", "evidence_recall",
           "exact_match", "f1", "format_rate", "judge", "persistence", "rescore",
           "search_misses", "searches_after_miss"]
