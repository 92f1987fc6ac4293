"""The trajectory schema: the contract between the graph (which records) and training.

A trajectory is one research run: the question, the answer, and every step in order.
A `ModelStep` is one chat-model call with the exact token ids and logprobs the model
reported (what training optimises); a `ToolStep` is one tool call (what the agent saw).
Only the completion tokens of model steps are ever trainable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field

from tools.text import clean_data

SCHEMA_VERSION = 1


class Gold(BaseModel):
    """What a run is scored against: the gold answer, its aliases, the question type, and the
    ids and texts of the gold (supporting) documents (`doc_texts[i]` is `doc_ids[i]`'s text;
    golds stored before texts were kept have none)."""

    answer: str = ""
    aliases: list[str] = Field(default_factory=list)
    type: str = ""
    doc_ids: list[str] = Field(default_factory=list,
                               validation_alias=AliasChoices("doc_ids", "gold_doc_ids"))
    doc_texts: list[str] = Field(default_factory=list)
    # a conflict task's (tools.worlds, RAMDocs-style): every valid answer of an ambiguous
    # question (`answer` first) and the values only misinformation backs; empty otherwise
    valid_answers: list[str] = Field(default_factory=list)
    wrong_answers: list[str] = Field(default_factory=list)

    @classmethod
    def from_task(cls, task: Mapping[str, Any]) -> Gold | None:
        """The gold of a task in the shared JSONL format (None when it has no answer)."""
        if "answer" not in task:
            return None
        gold = [d for d in task.get("docs") or [] if d.get("gold")]
        return cls(answer=str(task["answer"] or ""), aliases=[str(a) for a in task.get("aliases") or []],
                   type=str(task.get("type") or ""), doc_ids=[d["doc_id"] for d in gold],
                   doc_texts=[str(d.get("text") or "") for d in gold],
                   valid_answers=[str(a) for a in task.get("answers") or []],
                   wrong_answers=[str(a) for a in task.get("wrong_answers") or []])

    @property
    def answers(self) -> list[str]:
        """The answer and its aliases, empty strings dropped."""
        return [a for a in (self.answer, *self.aliases) if a]


class ModelStep(BaseModel):
    """One chat-model call."""

    kind: Literal["model"] = "model"
    role: str = ""
    node: str = ""
    prompt_messages: list[dict[str, Any]] = Field(default_factory=list)
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    text: str = ""
    parsed: Any = None
    parse_ok: bool | None = None
    model: str = ""
    started_at: float = 0.0
    latency_s: float = 0.0
    error: str | None = None


class ToolStep(BaseModel):
    """One tool call: what was asked and what came back."""

    kind: Literal["tool"] = "tool"
    tool: str
    node: str = ""
    input: Any = None
    output: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    started_at: float = 0.0
    latency_s: float = 0.0


Step = Annotated[ModelStep | ToolStep, Field(discriminator="kind")]


class Trajectory(BaseModel):
    """One recorded research run."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task_id: str | None = None
    group_id: str | None = None
    question: str = ""
    gold: Gold | None = None
    answer: str = ""
    report: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list)
    # the passages the writer answered from (the selector's evidence): chunk_id, doc_id, title,
    # url; empty in trajectories recorded before it was kept
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    model: str = ""
    config: dict[str, Any] = Field(default_factory=dict)

    def storable(self) -> Trajectory:
        """A copy whose strings hold no lone surrogate (each becomes U+FFFD), so it serialises
        to JSON and Arrow; `TrajectoryStore.append` falls back to it when a dump fails."""
        return Trajectory.model_validate(clean_data(self.model_dump()))

    @property
    def model_steps(self) -> list[ModelStep]:
        """The model calls, in order."""
        return [s for s in self.steps if isinstance(s, ModelStep)]

    @property
    def tool_steps(self) -> list[ToolStep]:
        """The tool calls, in order."""
        return [s for s in self.steps if isinstance(s, ToolStep)]
