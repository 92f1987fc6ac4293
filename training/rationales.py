"""Rationale chains as demonstrations: the gold reasoning of generated tasks, played through
the agents' own prompts, for a supervised warm start before RL.

A generated world knows each task's chain (`meta.rationale`: per hop the sub-question, a
query that finds the hop's page, the intermediate answer and that page). `ChainTeacher` is
a scripted chat model that plays it: run through the real research graph, the planner,
searcher and writer send it their real prompts (with the passages really retrieved), and it
answers as a policy that knows the chain would — ask the next hop whose page is not in the
evidence yet, search that hop's query (another wording after a miss), stop when every hop's
page is in hand, answer with the gold answer and cite the pages it read, each hop's fact
with its page number (with the reasoned writer prompt, `agents.writer.REASONED`, the facts
come first and the answer last; with the reasoned planner prompt, `agents.planner.REASONED`,
the planner first states the facts of the hops already in the evidence, so the next
sub-question names the entity they revealed). So demonstrations
carry the prompts the policy will see, and a miss in retrieval becomes a demonstrated retry.
Runs whose answer is not exactly right (a hop's page never surfaced) are dropped.

The teacher reads the prompt formats of `agents/prompts/` (the `Question:` and
`Sub-question:` lines, `[n] Title: text` evidence lines): a custom prompt file with other
fields needs its own teacher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from agents.planner import planner_reply
from agents.writer import writer_reply
from graph.config import ResearchConfig
from graph.run import research_many
from graph.trajectory import Trajectory
from training import rewards

_EVIDENCE = re.compile(r"^\[(\d+)\] (.+?): (.*)$", re.M)
Hop = Mapping[str, str]


def _field(text: str, name: str) -> str:
    m = re.search(rf"^{name}: (.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def _key(question: str) -> str:
    return " ".join(question.split()).lower()


def chains_of(task: Mapping[str, Any]) -> list[list[Hop]]:
    """A task's rationale: one list of hops per chain (two for a comparison); [] if none."""
    return list((task.get("meta") or {}).get("rationale") or [])


class ChainTeacher(BaseChatModel):
    """Answers each agent's prompt as a policy that knows the task's gold chain would."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chains: dict[str, list[list[dict[str, str]]]]  # by normalised question
    answers: dict[str, str]
    prompts: dict[str, str] = {}  # role -> prompt file the graph renders (and the reply format)

    @classmethod
    def for_tasks(cls, tasks: Iterable[Mapping[str, Any]],
                  prompts: Mapping[str, str] | None = None) -> ChainTeacher:
        """A teacher for every task that carries a rationale (`prompts`: as a policy card's)."""
        rows = [t for t in tasks if chains_of(t)]
        return cls(chains={_key(t["question"]): chains_of(t) for t in rows},
                   answers={_key(t["question"]): str(t["answer"]) for t in rows},
                   prompts=dict(prompts or {}))

    @property
    def _llm_type(self) -> str:
        return "sleuth-chain-teacher"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        role = str(((run_manager.metadata if run_manager else None) or {}).get("sleuth_role", ""))
        prompt = str(messages[-1].content)
        key = _key(_field(prompt, "Question"))
        if key not in self.chains:
            raise ValueError(f"the teacher knows no rationale for {_field(prompt, 'Question')!r}")
        reply = {"planner": self._plan, "searcher": self._search,
                 "writer": self._write}.get(role, lambda *_: "no")(key, prompt)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])

    def _plan(self, key: str, prompt: str) -> str:
        numbers = {m.group(2): int(m.group(1)) for m in _EVIDENCE.finditer(prompt)}
        found = [f"{h['fact']} [{numbers[h['title']]}]." for chain in self.chains[key]
                 for h in chain if h["title"] in numbers]
        todo = [next(h for h in chain if h["title"] not in numbers)["sub_question"]
                for chain in self.chains[key] if any(h["title"] not in numbers for h in chain)]
        return planner_reply(found, todo, self.prompts.get("planner"))

    def _search(self, key: str, prompt: str) -> str:
        sub = _field(prompt, "Sub-question")
        hop = next((h for chain in self.chains[key] for h in chain if h["sub_question"] == sub),
                   None)
        if hop is None:  # a sub-question the teacher did not ask: search it as it is
            return f"<search>{sub}</search>"
        retry = "found nothing new" in prompt  # an earlier query of this branch missed
        return f"<search>{hop['title'] if retry else hop['query']}</search>"

    def _write(self, key: str, prompt: str) -> str:
        numbers = {m.group(2): int(m.group(1)) for m in _EVIDENCE.finditer(prompt)}
        hops = [h for chain in self.chains[key] for h in chain]
        if any(h["title"] not in numbers for h in hops):
            return writer_reply("The evidence does not hold every step.", "unknown",
                                self.prompts.get("writer"))
        facts = " ".join(f"{h['fact']} [{numbers[h['title']]}]." for h in hops)
        return writer_reply(facts, self.answers[key], self.prompts.get("writer"))


def demonstrations(tasks: Iterable[Mapping[str, Any]], *, knowledge: Any = None, web: Any = None,
                   config: ResearchConfig | None = None, concurrency: int = 4,
                   prompts: Mapping[str, str] | None = None) -> list[Trajectory]:
    """The teacher's runs of these tasks through the research graph, the exactly right ones
    (`prompts`: the prompt files the student will run with, e.g. {"writer": REASONED})."""
    rows = [dict(t) for t in tasks if chains_of(t)]
    if not rows:
        raise ValueError("no task carries a rationale chain (generated worlds do: "
                         "tools.worlds.generate_world)")
    results = research_many(rows, model=ChainTeacher.for_tasks(rows, prompts), knowledge=knowledge,
                            web=web, config=config, concurrency=concurrency)
    return [r.trajectory for r in results
            if r.trajectory is not None and rewards.exact_match(r.trajectory) == 1.0]


__all__ = ["ChainTeacher", "chains_of", "demonstrations"]
