"""The trajectory schema: the contract between the graph (which records) and training.

A trajectory is one research run: the question, the answer, and every step in order.
A `ModelStep` is one chat-model call with the exact token ids and logprobs the model
reported (what training optimises); a `ToolStep` is one tool call (what the agent saw).
Only the completion tokens of model steps are ever trainable.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


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
    gold: dict[str, Any] | None = None
    answer: str = ""
    report: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    model: str = ""
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_steps(self) -> list[ModelStep]:
        """The model calls, in order."""
        return [s for s in self.steps if isinstance(s, ModelStep)]

    @property
    def tool_steps(self) -> list[ToolStep]:
        """The tool calls, in order."""
        return [s for s in self.steps if isinstance(s, ToolStep)]
