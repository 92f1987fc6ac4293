"""Rewards: plain callables `(trajectory, gold) -> float`, and their weighted mix `Reward`.

Every reward reads only what the trajectory recorded (answer, citations, tool hits, parse
results, model calls) and a `Gold` (answer, aliases, gold document ids): the one passed in,
else the one the trajectory carries. So stored trajectories can be re-scored with new
weights or new components without running anything again (`TrajectoryStore.rescore`,
`training.data.score`). Everything that scores takes a `Reward`; `as_reward` turns a plain
callable into one, once, where it enters.

`persistence` is the one that teaches searching again after a miss. Unlike ReZero's retry
reward (0.2 + 0.15·min(searches, 5) whenever an answer exists, which paid for searching
regardless of outcome and collapsed after ~350 steps), it pays only for searches that
follow an observed miss, is capped, and is 0 unless the final answer is correct (F1 at least
`threshold`): searching a lot and answering wrong earns nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from graph.trajectory import Gold, ModelStep, ToolStep, Trajectory  # noqa: F401 (doctests)
from tools.text import normalize_answer, overlap

RewardFn = Callable[[Trajectory, Gold | None], float]


def gold_of(trajectory: Trajectory, gold: Gold | None = None) -> Gold:
    """The gold given, else the gold the trajectory carries, else an empty one."""
    return gold or trajectory.gold or Gold()


def _tokens_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """1.0 if the normalised answer equals the normalised gold answer or an alias.

    >>> exact_match(Trajectory(answer="The Eiffel Tower!"), Gold(answer="eiffel tower"))
    1.0
    >>> exact_match(Trajectory(answer="Paris"), Gold(answer="London", aliases=["paris"]))
    1.0
    """
    pred = normalize_answer(trajectory.answer)
    return float(any(pred == normalize_answer(a) for a in gold_of(trajectory, gold).answers))


def f1(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Token F1 between answer and gold (SQuAD normalisation), max over answer and aliases.

    >>> f1(Trajectory(answer="born in Varo city"), Gold(answer="Varo"))  # P 1/4, R 1
    0.4
    >>> f1(Trajectory(answer=""), Gold(answer="Varo"))
    0.0
    """
    return max((_tokens_f1(trajectory.answer, a) for a in gold_of(trajectory, gold).answers),
               default=0.0)


def format_rate(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Share of model calls whose reply parsed (calls without parse information are skipped).

    >>> format_rate(Trajectory(steps=[ModelStep(parse_ok=True), ModelStep(parse_ok=False)]))
    0.5
    """
    known = [s.parse_ok for s in trajectory.model_steps if s.parse_ok is not None]
    return sum(known) / len(known) if known else 0.0


def searches(trajectory: Trajectory) -> list[ToolStep]:
    """The search tool calls, in order."""
    return [s for s in trajectory.tool_steps if s.error is None or s.output]


def search_misses(trajectory: Trajectory, gold: Gold | None = None) -> list[bool]:
    """Per search: did it miss, i.e. bring no new gold document (no new passage relevant to
    the question when the task has no gold documents)?"""
    gold_ids = set(gold_of(trajectory, gold).doc_ids)
    seen: set[str] = set()
    out = []
    for step in searches(trajectory):
        new = [h for h in step.output if h.get("doc_id") and h["doc_id"] not in seen]
        seen.update(h["doc_id"] for h in new)
        if gold_ids:
            hit = any(h["doc_id"] in gold_ids for h in new)
        else:
            hit = any(overlap(trajectory.question, f"{h.get('title', '')} {h.get('text', '')}") >= 0.5
                      for h in new)
        out.append(not hit)
    return out


def searches_after_miss(trajectory: Trajectory, gold: Gold | None = None) -> int:
    """How many searches came right after a search that missed."""
    misses = search_misses(trajectory, gold)
    return sum(1 for prev in misses[:-1] if prev)


def persistence(trajectory: Trajectory, gold: Gold | None = None, *,
                threshold: float = 0.5, cap: int = 3) -> float:
    """min(searches after a miss, cap) / cap, paid only when the answer is right (F1 >= threshold).

    >>> hit = ToolStep(tool="kb", output=[{"doc_id": "g1"}])
    >>> miss = ToolStep(tool="kb", output=[{"doc_id": "x"}])
    >>> gold = Gold(answer="Varo", doc_ids=["g1"])
    >>> persistence(Trajectory(answer="Varo", steps=[miss, hit]), gold)
    0.3333333333333333
    >>> persistence(Trajectory(answer="Oslo", steps=[miss] * 9), gold)  # wrong: nothing to farm
    0.0
    """
    if f1(trajectory, gold) < threshold:
        return 0.0
    return min(searches_after_miss(trajectory, gold), cap) / cap


def retrieved_doc_ids(trajectory: Trajectory) -> list[str]:
    """Distinct document ids the tools returned, in order."""
    return list(dict.fromkeys(h["doc_id"] for s in trajectory.tool_steps for h in s.output
                              if h.get("doc_id")))


def evidence_recall(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Share of the task's gold documents that some tool call retrieved (0 without gold docs).

    >>> t = Trajectory(steps=[ToolStep(tool="kb", output=[{"doc_id": "g1"}, {"doc_id": "x"}])])
    >>> evidence_recall(t, Gold(answer="a", doc_ids=["g1", "g2"]))
    0.5
    """
    gold_ids = set(gold_of(trajectory, gold).doc_ids)
    if not gold_ids:
        return 0.0
    return len(gold_ids & set(retrieved_doc_ids(trajectory))) / len(gold_ids)


def citation_precision(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Share of cited passages that were retrieved in the run and are gold (0 without citations).

    >>> t = Trajectory(citations=[{"doc_id": "g1"}, {"doc_id": "x"}],
    ...                steps=[ToolStep(tool="kb", output=[{"doc_id": "g1"}, {"doc_id": "x"}])])
    >>> citation_precision(t, Gold(answer="a", doc_ids=["g1"]))
    0.5
    """
    cited = [c.get("doc_id") for c in trajectory.citations]
    if not cited:
        return 0.0
    retrieved = set(retrieved_doc_ids(trajectory))
    gold_ids = set(gold_of(trajectory, gold).doc_ids)
    good = [d for d in cited if d in retrieved and (d in gold_ids if gold_ids else True)]
    return len(good) / len(cited)


def cost(trajectory: Trajectory, gold: Gold | None = None, *, budget: int = 12,
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

    def judged(trajectory: Trajectory, gold: Gold | None = None) -> float:
        answers = gold_of(trajectory, gold).answers
        if not trajectory.answer.strip() or not answers:
            return 0.0
        key = (trajectory.question, answers[0], trajectory.answer)
        if key not in cache:
            messages = render_messages(template, question=trajectory.question,
                                       gold=" / ".join(answers), answer=trajectory.answer)
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

    def scores(self, trajectory: Trajectory, gold: Gold | None = None) -> dict[str, float]:
        """Each component's value and the weighted total under "reward"."""
        out = {name: float(fn(trajectory, gold)) for name, (fn, _) in self.components.items()}
        out["reward"] = sum(w * out[name] for name, (_, w) in self.components.items())
        return out

    def __call__(self, trajectory: Trajectory, gold: Gold | None = None) -> float:
        return self.scores(trajectory, gold)["reward"]

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


def as_reward(reward: Reward | RewardFn) -> Reward:
    """A `Reward` as it is; a plain callable as a one-component `Reward` named after it.

    >>> as_reward(exact_match).scores(Trajectory(answer="Varo"), Gold(answer="varo"))
    {'exact_match': 1.0, 'reward': 1.0}
    """
    if isinstance(reward, Reward):
        return reward
    if not callable(reward):
        raise TypeError(f"a reward is a Reward or a callable (trajectory, gold) -> float, "
                        f"not {type(reward).__name__}")
    return Reward({getattr(reward, "__name__", "reward").strip("<>") or "reward": (reward, 1.0)})


__all__ = ["Reward", "citation_precision", "cost", "default", "evidence_recall",
           "exact_match", "f1", "format_rate", "judge", "persistence", "as_reward",
           "search_misses", "searches_after_miss"]
