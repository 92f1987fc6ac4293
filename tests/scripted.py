"""A scripted chat model for graph tests: replies chosen by role, no weights involved."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

ROLES = {"You plan research": "planner", "You search for facts": "searcher",
         "You judge evidence": "selector", "You answer questions": "writer",
         "You are one agent in a debate": "debater", "You combine the answers": "aggregator"}


def role_of(messages: list[BaseMessage]) -> str:
    """Which agent sent these messages (from its system prompt)."""
    system = str(messages[0].content) if messages else ""
    return next((r for prefix, r in ROLES.items() if system.startswith(prefix)), "other")


def field(messages: list[BaseMessage], name: str) -> str:
    """A `Name: value` line of the last user message."""
    m = re.search(rf"^{name}: (.*)$", str(messages[-1].content), re.M)
    return m.group(1).strip() if m else ""


def default_reply(role: str, messages: list[BaseMessage]) -> str:
    """Plan the question itself once, search the sub-question, answer with the first title."""
    last = str(messages[-1].content)
    if role == "planner":
        if "Evidence: none yet." in last:
            return f"<subquestions>\n1. {field(messages, 'Question')}\n</subquestions>"
        return "<done>"
    if role == "searcher":
        return f"<search>{field(messages, 'Sub-question')}</search>"
    if role == "selector":
        return "yes"
    if role == "writer":
        m = re.search(r"^\[1\] (.+?):", last, re.M)
        return f"<answer>{m.group(1) if m else 'unknown'}</answer>\nIt is in [1]."
    return "ok"


class ScriptedChatModel(BaseChatModel):
    """Replies with `script(role, messages) -> str`; counts calls per role; its replies carry
    `model_name`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: Callable[[str, list[BaseMessage]], str] = default_reply
    model_name: str = "scripted"  # what trajectories record as the model of its calls
    _calls: dict[str, int] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> dict[str, int]:
        """Calls so far, per role."""
        return dict(self._calls)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        role = role_of(messages)
        with self._lock:
            self._calls[role] = self._calls.get(role, 0) + 1
        text = self.script(role, messages)
        n_prompt = sum(len(str(m.content).split()) for m in messages)
        msg = AIMessage(content=text, response_metadata={"model_name": self.model_name},
                        usage_metadata={"input_tokens": n_prompt, "output_tokens": len(text.split()),
                                        "total_tokens": n_prompt + len(text.split())})
        return ChatResult(generations=[ChatGeneration(message=msg)])
