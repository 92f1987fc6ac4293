"""The planner: sub-questions to research next, or the decision that the evidence suffices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.base import Agent, read_input
from agents.parsing import parse_plan
from agents.prompting import brief
from agents.schemas import PlannerInput, PlannerUpdate

REASONED = "planner_reasoned"  # the prompt whose reply states the facts found, then the plan


def planner_reply(found: Sequence[str], sub_questions: Sequence[str],
                  prompt: str | None = None) -> str:
    """A demonstration reply in the format of the planner prompt `prompt` (None: the default
    planner, the plan alone; `REASONED`: the cited facts found first); no sub-questions
    means done."""
    plan = ("<subquestions>\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(sub_questions, 1))
            + "\n</subquestions>") if sub_questions else "<done>"
    if prompt == REASONED:
        return f"<found>{' '.join(found) or 'nothing yet'}</found>\n{plan}"
    return plan


class Planner(Agent):
    """Reads the question and the evidence so far; returns the next sub-questions (none = done)."""

    role = "planner"
    stop = ["</subquestions>", "<done>"]
    input_model = PlannerInput

    def __init__(self, model: Any, *, max_subquestions: int = 3, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.max_subquestions = max_subquestions

    def __call__(self, state: PlannerInput | Mapping[str, Any]) -> PlannerUpdate:
        """Plan the next round."""
        inp = read_input(PlannerInput, state)
        reply = self.call_model(inp.seed, question=inp.question,
                                evidence=[brief(p, 40) for p in inp.evidence[:4]],
                                max_subquestions=self.max_subquestions)
        plan = parse_plan(reply.text, self.max_subquestions)
        self.report_parse(reply, plan)
        notes = self.call_notes("planner", reply, plan.ok, "reply was not <subquestions> or <done>")
        seen = {q.lower() for q in inp.sub_questions}
        subs = [q for q in plan.sub_questions if q.lower() not in seen]
        if not plan.done and not subs and not inp.evidence:
            subs = [inp.question]  # nothing usable and nothing known: search the question
        return PlannerUpdate(plan=subs, notes=notes, counters=self.usage(reply, plan.ok))
