"""Rewards: plain callables `(trajectory, gold) -> float`, and their weighted mix `Reward`.

Every reward reads only what the trajectory recorded (answer, report, citations, the
writer's evidence, tool hits, parse results, model calls) and a `Gold` (answer, aliases, gold
document ids and texts): the one passed in, else the one the trajectory carries. So stored
trajectories can be re-scored with new weights or new components without running anything
again (`TrajectoryStore.rescore`, `training.data.score`). Everything that scores takes a
`Reward`; `as_reward` turns a plain callable into one, once, where it enters.

`persistence` is the one that teaches searching again after a miss. Unlike ReZero's retry
reward (0.2 + 0.15·min(searches, 5) whenever an answer exists, which paid for searching
regardless of outcome and collapsed after ~350 steps), it pays only for *needed* retries —
searches that follow a miss while gold evidence is still missing —, is capped, and is 0
unless the final answer is correct (F1 at least `threshold`). `search_cost` charges every
search that brings no new gold document, more than a retry can earn, so neither searching a
lot and answering wrong nor padding a right run with searches pays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SearchOutcome:
    """What one search did for its run."""

    miss: bool  # it brought no new gold document (no new relevant passage without gold ids)
    after_miss: bool  # the search before it missed
    complete_before: bool  # every gold document had been retrieved before it


def search_outcomes(trajectory: Trajectory, gold: Gold | None = None) -> list[SearchOutcome]:
    """Each search of the run in order: did it miss, did it follow a miss, was the gold
    evidence already complete? Without gold document ids a hit is a new passage sharing half
    the question's content words, and evidence is never known to be complete."""
    gold_ids = set(gold_of(trajectory, gold).doc_ids)
    seen: set[str] = set()
    out: list[SearchOutcome] = []
    for step in searches(trajectory):
        complete = bool(gold_ids) and gold_ids <= seen
        new = [h for h in step.output if h.get("doc_id") and h["doc_id"] not in seen]
        seen.update(h["doc_id"] for h in new)
        if gold_ids:
            hit = any(h["doc_id"] in gold_ids for h in new)
        else:
            hit = any(overlap(trajectory.question, f"{h.get('title', '')} {h.get('text', '')}") >= 0.5
                      for h in new)
        out.append(SearchOutcome(miss=not hit, after_miss=bool(out) and out[-1].miss,
                                 complete_before=complete))
    return out


def search_misses(trajectory: Trajectory, gold: Gold | None = None) -> list[bool]:
    """Per search: did it miss (bring no new gold document)?"""
    return [o.miss for o in search_outcomes(trajectory, gold)]


def searches_after_miss(trajectory: Trajectory, gold: Gold | None = None) -> int:
    """How many searches came right after a search that missed."""
    return sum(o.after_miss for o in search_outcomes(trajectory, gold))


def needed_retries(trajectory: Trajectory, gold: Gold | None = None) -> int:
    """Searches right after a miss, made while gold evidence was still missing."""
    return sum(o.after_miss and not o.complete_before for o in search_outcomes(trajectory, gold))


def persistence(trajectory: Trajectory, gold: Gold | None = None, *,
                threshold: float = 0.5, cap: int = 3) -> float:
    """min(needed retries, cap) / cap, paid only when the answer is right (F1 >= threshold).

    A retry is *needed* when it follows a miss and the gold evidence is not yet complete:
    searching on after the evidence is in hand earns nothing (and `search_cost` charges it).

    >>> hit = ToolStep(tool="kb", output=[{"doc_id": "g1"}])
    >>> miss = ToolStep(tool="kb", output=[{"doc_id": "x"}])
    >>> gold = Gold(answer="Varo", doc_ids=["g1"])
    >>> persistence(Trajectory(answer="Varo", steps=[miss, hit]), gold)
    0.3333333333333333
    >>> persistence(Trajectory(answer="Varo", steps=[hit, miss, miss, miss]), gold)  # farming
    0.0
    >>> persistence(Trajectory(answer="Oslo", steps=[miss] * 9), gold)  # wrong: nothing to earn
    0.0
    """
    if f1(trajectory, gold) < threshold:
        return 0.0
    return min(needed_retries(trajectory, gold), cap) / cap


def search_cost(trajectory: Trajectory, gold: Gold | None = None, *,
                per_search: float = 0.15, threshold: float = 0.5) -> float:
    """A charge of `per_search` for every wasted search: one that brought no new gold
    document in a right run (F1 >= threshold), or after the gold evidence was complete.

    It outweighs what one more retry can earn (`persistence` pays 1/3 · 0.2 per needed retry
    in the default mix), so a right run never earns more by adding searches that find nothing.
    A wrong run's misses before its evidence is complete are not charged: they are the
    searching on that persistence teaches (charging them taught GRPO to search less).

    >>> miss = ToolStep(tool="kb", output=[{"doc_id": "x"}])
    >>> hit = ToolStep(tool="kb", output=[{"doc_id": "g1"}])
    >>> gold = Gold(answer="a", doc_ids=["g1"])
    >>> search_cost(Trajectory(answer="a", steps=[miss, miss, hit]), gold)
    -0.3
    >>> search_cost(Trajectory(answer="b", steps=[miss, miss]), gold)  # wrong, still looking
    0.0
    >>> search_cost(Trajectory(answer="b", steps=[hit, miss]), gold)  # wrong, evidence in hand
    -0.15
    """
    right = f1(trajectory, gold) >= threshold
    wasted = sum(o.miss and (right or o.complete_before)
                 for o in search_outcomes(trajectory, gold))
    return -per_search * wasted if wasted else 0.0


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


def retrieval_accuracy(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Retrieval accuracy as monitored: `evidence_recall` under its evaluation name, the share
    of gold documents retrieved (hit@k, k = every passage the run's tools returned).

    >>> t = Trajectory(steps=[ToolStep(tool="kb", output=[{"doc_id": "g1"}, {"doc_id": "x"}])])
    >>> retrieval_accuracy(t, Gold(answer="a", doc_ids=["g1", "g2"]))
    0.5
    """
    return evidence_recall(trajectory, gold)


def selected_doc_ids(trajectory: Trajectory) -> list[str]:
    """Distinct document ids of the passages the writer answered from, in order."""
    return list(dict.fromkeys(p["doc_id"] for p in trajectory.evidence if p.get("doc_id")))


def evidence_f1(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Set F1 of the selected passages' documents against the gold documents (knowledge
    selection; 0 without gold documents or without selected evidence).

    >>> t = Trajectory(evidence=[{"doc_id": "g1"}, {"doc_id": "x"}])  # P 1/2, R 1/2
    >>> evidence_f1(t, Gold(answer="a", doc_ids=["g1", "g2"]))
    0.5
    """
    selected, gold_ids = set(selected_doc_ids(trajectory)), set(gold_of(trajectory, gold).doc_ids)
    common = len(selected & gold_ids)
    if not common:
        return 0.0
    precision, recall = common / len(selected), common / len(gold_ids)
    return 2 * precision * recall / (precision + recall)


def knowledge_f1(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """Knowledge F1 (KF1, as knowledge-grounded dialogue work defines it): unigram F1, SQuAD
    normalisation, between the answer and report together and the gold documents' text
    (0 without gold texts). It rewards grounding in the gold knowledge, not correctness.

    >>> gold = Gold(answer="Varo", doc_ids=["g1"], doc_texts=["Ada Lenn was born in Varo."])
    >>> round(knowledge_f1(Trajectory(answer="Varo"), gold), 3)  # P 1, R 1/6
    0.286
    >>> round(knowledge_f1(Trajectory(answer="Varo", report="Ada Lenn was born in Varo."),
    ...                    gold), 3)  # P 6/7, R 1
    0.923
    """
    texts = " ".join(gold_of(trajectory, gold).doc_texts)
    if not texts.strip():
        return 0.0
    return _tokens_f1(f"{trajectory.answer} {trajectory.report}", texts)


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
             + 0.1·citation_precision + 0.1·format + 1.0·cost + 1.0·search_cost
    """
    return Reward({"f1": (f1, 1.0), "exact_match": (exact_match, 0.5),
                   "persistence": (persistence, 0.2), "evidence_recall": (evidence_recall, 0.2),
                   "citation_precision": (citation_precision, 0.1),
                   "format": (format_rate, 0.1), "cost": (cost, 1.0),
                   "search_cost": (search_cost, 1.0)})


def grounded_exact_match(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """`exact_match` times the share of gold documents the run retrieved (`evidence_recall`);
    `exact_match` itself when the gold names no documents.

    >>> gold = Gold(answer="Varo", doc_ids=["g1", "g2"])
    >>> grounded_exact_match(Trajectory(answer="Varo"), gold)  # right, but nothing read
    0.0
    >>> grounded_exact_match(Trajectory(answer="Varo", steps=[
    ...     ToolStep(tool="kb", output=[{"doc_id": "g1"}])]), gold)
    0.5
    """
    return exact_match(trajectory, gold) * _grounding(trajectory, gold)


def grounded_f1(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """`f1` times the share of gold documents the run retrieved (`f1` without gold documents)."""
    return f1(trajectory, gold) * _grounding(trajectory, gold)


def _grounding(trajectory: Trajectory, gold: Gold | None) -> float:
    return evidence_recall(trajectory, gold) if gold_of(trajectory, gold).doc_ids else 1.0


def grounded() -> Reward:
    """`default()` with correctness paid in proportion to the gold evidence the run retrieved.

    A comparison question has two candidate answers, so a policy that stops searching still
    answers half of them right: under `default()` a GRPO run from a warm start learned exactly
    that (searches per rollout fell to 0 within 41 steps, `benchmarks/results/learning_rall_grpo.json`).
    Here a right answer with no gold page retrieved earns no correctness reward, one with half
    of them half of it.

    reward = 1.0·grounded_f1 + 0.5·grounded_exact_match + (default()'s other components)
    """
    rest = {k: v for k, v in default().components.items() if k not in ("f1", "exact_match")}
    return Reward({"grounded_f1": (grounded_f1, 1.0),
                   "grounded_exact_match": (grounded_exact_match, 0.5), **rest})


MIXES: dict[str, Callable[[], Reward]] = {"default": default, "grounded": grounded}


def mix(name: str) -> Reward:
    """A named reward mix: "default" or "grounded"."""
    if name not in MIXES:
        raise ValueError(f"unknown reward mix {name!r}: the mixes are {', '.join(MIXES)}")
    return MIXES[name]()


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


__all__ = ["Reward", "citation_precision", "cost", "default", "evidence_f1", "evidence_recall",
           "exact_match", "f1", "format_rate", "grounded", "grounded_exact_match", "grounded_f1",
           "judge", "knowledge_f1", "mix", "persistence",
           "as_reward", "needed_retries", "retrieval_accuracy", "search_cost", "search_misses",
           "search_outcomes", "searches_after_miss", "selected_doc_ids"]


def conflict_accuracy(trajectory: Trajectory, gold: Gold | None = None) -> float:
    """1.0 when the answer gives every valid answer and no wrong one, else 0.0 (RAMDocs' rule).

    The answer is read in the debate's format (`agents.debate.split_answers`: "A; B"); an
    answer counts as given when, normalised, it is a part or whole words of one. Without
    `valid_answers` the gold answer (or an alias) is the one valid answer.

    >>> g = Gold(answer="Varo", valid_answers=["Varo", "Holm"], wrong_answers=["Oslo"])
    >>> conflict_accuracy(Trajectory(answer="Holm; Varo"), g)
    1.0
    >>> conflict_accuracy(Trajectory(answer="Varo"), g)  # a valid answer missing
    0.0
    >>> conflict_accuracy(Trajectory(answer="Varo; Holm; Oslo"), g)  # a wrong one given
    0.0
    """
    from agents.debate import split_answers  # the format's one definition

    g = gold_of(trajectory, gold)
    parts = [f" {normalize_answer(p)} " for p in split_answers(trajectory.answer)]

    def given(answer: str) -> bool:
        a = normalize_answer(answer)
        return bool(a) and any(f" {a} " in p for p in parts)

    valid = g.valid_answers or [g.answer]
    first = any(given(a) for a in [valid[0], *(g.aliases if valid[0] == g.answer else [])])
    right = bool(valid[0]) and first and all(given(a) for a in valid[1:])
    return float(right and not any(given(w) for w in g.wrong_answers))


__all__ += ["conflict_accuracy"]
