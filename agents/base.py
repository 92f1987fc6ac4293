"""What every agent shares: a prompt file, a chat model, and one instrumented model call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import ensure_config
from pydantic import BaseModel

from agents.models import LocalChatModel
from agents.prompting import declared_stops, load_template, render_messages
from agents.schemas import Counters

PARSED_EVENT = "sleuth.parsed"
In = TypeVar("In", bound=BaseModel)


def read_input(model: type[In], state: In | Mapping[str, Any]) -> In:
    """A role's typed input from its model or from any mapping holding its keys (the state)."""
    return state if isinstance(state, model) else model.model_validate(dict(state))


class Reply(BaseModel):
    """A model reply with what it cost; `error` is set when the call itself failed."""

    text: str = ""
    call_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Agent:
    """A role: a prompt file rendered strictly, a chat model, a lenient parser."""

    role = "agent"
    stop: list[str] | None = None
    input_model: ClassVar[type[BaseModel]]

    def __init__(self, model: BaseChatModel, *, prompt: str | Path | None = None,
                 max_new_tokens: int = 96, temperature: float | None = None,
                 examples: bool = True):
        if not isinstance(model, BaseChatModel):
            raise TypeError(f"{type(self).__name__} needs a langchain-core BaseChatModel, "
                            f"got {type(model).__name__} (see agents.load_chat_model)")
        self.model = model
        self.template = load_template(prompt or self.role)
        declared = declared_stops(self.template)
        if declared is not None:  # the prompt file knows where its replies end
            self.stop = declared
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.examples = examples

    def call_model(self, seed: int | None, **context: Any) -> Reply:
        """Render the prompt, call the model once (tagged with this role), never raise."""
        messages = render_messages(self.template, examples=self.examples, **context)
        call_id = uuid.uuid4().hex
        kwargs: dict[str, Any] = {}
        if isinstance(self.model, LocalChatModel):
            kwargs["max_new_tokens"] = self.max_new_tokens
            if seed is not None:
                kwargs["seed"] = seed
            if self.temperature is not None:
                kwargs["temperature"] = self.temperature
        metadata = {**(ensure_config().get("metadata") or {}), "sleuth_role": self.role,
                    "sleuth_call_id": call_id}
        # API servers (OpenAI, vLLM) cut the stop string that ended a reply out of its text,
        # and the closing tag or `<done>` is what the parsers read: they get no stop strings
        stop = self.stop if isinstance(self.model, LocalChatModel) else None
        try:
            msg = self.model.invoke(messages, config={"metadata": metadata, "run_name": self.role},
                                    stop=stop, **kwargs)
        except Exception as e:  # noqa: BLE001 - a failed call is an observation, not a crash
            return Reply(call_id=call_id, error=f"{type(e).__name__}: {e}")
        usage = msg.usage_metadata or {}
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        return Reply(text=text, call_id=call_id, prompt_tokens=usage.get("input_tokens", 0),
                     completion_tokens=usage.get("output_tokens", 0))

    def report_parse(self, reply: Reply, parsed: BaseModel) -> None:
        """Tell recorders how the reply parsed (a no-op outside a LangChain run)."""
        try:
            dispatch_custom_event(PARSED_EVENT, {"call_id": reply.call_id, "role": self.role,
                                                 "parsed": parsed.model_dump(),
                                                 "ok": bool(getattr(parsed, "ok", True))})
        except RuntimeError:
            pass

    @staticmethod
    def call_notes(who: str, reply: Reply, ok: bool, unparsed: str,
                   dropped: int = 0) -> list[str]:
        """The observations one call leaves: a failed call or an unusable reply (`unparsed`
        says how), and citations dropped for pointing at no passage."""
        notes = []
        if reply.error:
            notes.append(f"{who}: model call failed ({reply.error})")
        elif not ok:
            notes.append(f"{who}: {unparsed}")
        if dropped:
            notes.append(f"{who}: dropped {dropped} citation(s) to passages not retrieved")
        return notes

    @staticmethod
    def usage(reply: Reply, ok: bool) -> Counters:
        """Counter increments for one model call."""
        return Counters(model_calls=1, prompt_tokens=reply.prompt_tokens,
                        completion_tokens=reply.completion_tokens,
                        tokens=reply.prompt_tokens + reply.completion_tokens,
                        format_failures=0 if ok else 1, model_errors=1 if reply.error else 0)
