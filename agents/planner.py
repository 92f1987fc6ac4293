"""The planner: sub-questions to research next, or the decision that the evidence suffices."""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.parsing import parse_plan
from agents.prompting import brief


class Planner(Agent):
    """Reads the question and the evidence so far; returns `{"plan": [...]}` (empty = done)."""

    role = "planner"
    stop = ["</subquestions>", "<done>"]

    def __init__(self, model: Any, *, max_subquestions: int = 3, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.max_subquestions = max_subquestions

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        """Plan the next round."""
        evidence = state.get("evidence") or []
        asked = state.get("sub_questions") or []
        reply = self.call_model(state, question=state["question"],
                                evidence=[brief(p, 40) for p in evidence[:4]],
                                max_subquestions=self.max_subquestions)
        plan = parse_plan(reply.text, self.max_subquestions)
        self.report_parse(reply, plan)
        notes = []
        if reply.error:
            notes.append(f"planner: model call failed ({reply.error})")
        elif not plan.ok:
            notes.append("planner: reply was not <subquestions> or <done>")
        seen = {q.lower() for q in asked}
        subs = [q for q in plan.sub_questions if q.lower() not in seen]
        if not plan.done and not subs and not evidence:
            subs = [state["question"]]  # nothing usable and nothing known: search the question
        return {"plan": subs, "sub_questions": subs, "notes": notes,
                "counters": self.usage(reply, plan.ok)}
