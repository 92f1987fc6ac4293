"""Run configuration: a frozen pydantic model, also readable from `RunnableConfig`."""

from __future__ import annotations

from typing import Literal

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, field_validator

ROLES = ("planner", "searcher", "selector", "writer", "debater", "aggregator")
"""The roles a model can be named for; `debater` and `aggregator` (the debate writer's) fall
back to `writer`, every role to `model`."""


class ResearchConfig(BaseModel):
    """Models, budgets and tool settings of a research run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("local:smollm2", description="Model spec for every role not named in "
                       "`models`.")
    models: dict[str, str] = Field(default_factory=dict, description=(
        "A model spec per role (planner, searcher, selector, writer, debater, aggregator), as "
        "open_deep_research configures one per role; roles not named use `model` (debater and "
        "aggregator: the writer's first). Read when the graph is built."))
    max_rounds: int = Field(3, ge=1, description="Plan -> search -> select rounds.")
    max_subquestions: int = Field(3, ge=1, description="Sub-questions per round (fan-out).")
    max_searches: int = Field(8, ge=0, description="Searches in the whole run.")
    max_attempts: int = Field(3, ge=1,
                              description="Searches per sub-question (retries after a miss).")
    max_model_calls: int = Field(24, ge=1, description="Model calls before the writer is forced.")
    max_tokens: int = Field(40_000, ge=1,
                            description="Prompt + completion tokens before the writer is forced.")
    k: int = Field(5, ge=1, description="Passages per search.")
    evidence_k: int = Field(5, ge=1, description="Passages the selector keeps (and the writer reads).")
    search_mode: Literal["hybrid", "vector", "fts"] = "hybrid"
    relevance: float = Field(0.5, ge=0, le=1, description=(
        "Share of the sub-question's content words a new passage must hold to count as "
        "relevant; a search with no new relevant passage is a miss."))
    judge_passages: bool | None = Field(
        None, description="Let the model judge each passage in the selector; None (default): "
        "when the loaded policy was trained to (its card says judges_passages, see training.cml).")
    approve_plan: bool = Field(False, description="Interrupt after each plan for approval "
                               "(needs a checkpointer).")
    prompt_examples: bool | None = Field(None, description=(
        "Show each role's worked examples in its prompt. None: the model's own preference "
        "(a policy trained on the formats runs without them), else True."))
    temperature: float = Field(0.7, ge=0)
    max_new_tokens: int | None = Field(None, ge=1, description="Cap on every reply's length "
                                       "(None: each role's own default).")
    seed: int | None = Field(None, description="Run seed: the same seed samples the same run.")
    web_pages: int = Field(3, ge=1, description="Pages fetched per web search.")
    writer: Literal["single", "debate"] = Field("single", description=(
        "The writer stage: one writer over all evidence, or a MADAM-RAG debate (one agent per "
        "document, then an aggregator; agents.debate). Read when the graph is built."))
    debate_rounds: int = Field(2, ge=1, description="Debate rounds (writer=\"debate\"; read "
                               "when the graph is built).")
    max_debaters: int = Field(5, ge=1, description="Documents debated, one agent each "
                              "(writer=\"debate\"; read when the graph is built).")

    @field_validator("models")
    @classmethod
    def _known_roles(cls, models: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(models) - set(ROLES))
        if unknown:
            raise ValueError(f"models names unknown roles {unknown}: the roles are "
                             f"{', '.join(ROLES)}")
        return models

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None = None, *,
                             base: ResearchConfig | None = None) -> ResearchConfig:
        """`base` (or the defaults) updated from `config["configurable"]`: flat keys, or a
        `research` entry holding a `ResearchConfig` or a dict."""
        configurable = dict((config or {}).get("configurable") or {})
        values = base.model_dump() if base is not None else {}
        nested = configurable.get("research")
        if isinstance(nested, ResearchConfig):
            values.update(nested.model_dump(exclude_unset=True))
        else:
            values.update({k: v for k, v in configurable.items() if k in cls.model_fields})
            if isinstance(nested, dict):
                values.update(nested)
        if base is not None and values == base.model_dump():
            return base
        return cls(**values)
