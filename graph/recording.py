"""`TrajectoryRecorder`: a LangChain callback handler that records any graph's run.

Pass it in `config["callbacks"]` of any LangGraph graph (the research graph, a custom graph,
the research graph used as a subgraph): every chat-model call is recorded with its role and
node (from the call's metadata), prompt messages, the token ids and logprobs the model
reported, text and latency; every tool call with its input, hits and error. Agents report
how each reply parsed through a custom callback event, matched to the call by id.

Text enters a trajectory here, and is made storable on the way in (`tools.text.clean_text`:
a lone surrogate in a reply, prompt or page becomes U+FFFD), so a recorded trajectory can
always be written to a `TrajectoryStore`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agents.base import PARSED_EVENT
from graph.trajectory import ModelStep, ToolStep, Trajectory
from tools.text import clean_data, clean_text

_HIT_FIELDS = ("chunk_id", "doc_id", "title", "url", "score", "text", "rank", "snippet")


def _message(m: BaseMessage) -> dict[str, Any]:
    return {"role": m.type, "content": clean_data(m.content)}


def _hits(output: Any) -> list[dict[str, Any]]:
    if output is None:
        return []
    items = output if isinstance(output, list | tuple) else [output]
    hits = []
    for item in items:
        data = item.model_dump() if hasattr(item, "model_dump") else item
        if isinstance(data, dict):
            hits.append({k: clean_data(data[k]) for k in _HIT_FIELDS if k in data})
        else:
            hits.append({"text": clean_text(str(data))})
    return hits


@dataclass
class _Call:
    """A model or tool call in flight or done: its step, when it started, and (for a model
    call) the id agents use to report how its reply parsed."""

    step: ModelStep | ToolStep
    t0: float
    call_id: str = ""

    def done(self) -> _Call:
        """Set the step's latency; return self."""
        self.step.latency_s = time.perf_counter() - self.t0
        return self


class TrajectoryRecorder(BaseCallbackHandler):
    """Collects the model and tool calls of one run; `trajectory()` returns them in order."""

    run_inline = True  # record in the calling thread, in order, even under asyncio
    raise_error = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[UUID, _Call] = {}
        self._parsed: dict[str, dict[str, Any]] = {}
        self.calls: list[_Call] = []

    # ------------------------------------------------------------------ model calls

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            *, run_id: UUID, metadata: dict[str, Any] | None = None,
                            **kwargs: Any) -> None:
        md = metadata or {}
        step = ModelStep(role=str(md.get("sleuth_role") or md.get("langgraph_node") or ""),
                         node=str(md.get("langgraph_node") or ""),
                         prompt_messages=[_message(m) for m in messages[0]],
                         model=str(md.get("ls_model_name") or ""), started_at=time.time())
        with self._lock:
            self._pending[run_id] = _Call(step, time.perf_counter(), str(md.get("sleuth_call_id") or ""))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._pending.pop(run_id, None)
        if call is None or not isinstance(call.step, ModelStep):
            return
        step = call.step
        gen = response.generations[0][0] if response.generations and response.generations[0] else None
        if gen is not None:
            msg = getattr(gen, "message", None)
            meta = getattr(msg, "response_metadata", None) or {}
            step.text = clean_text(gen.text)
            step.prompt_token_ids = meta.get("prompt_token_ids")
            step.completion_token_ids = meta.get("completion_token_ids")
            step.logprobs = meta.get("logprobs")
            step.model = str(meta.get("model_name") or meta.get("model") or step.model)
        with self._lock:
            self.calls.append(call.done())

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._pending.pop(run_id, None)
            if call is not None:
                call.step.error = clean_text(f"{type(error).__name__}: {error}")
                self.calls.append(call.done())

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name == PARSED_EVENT and isinstance(data, dict) and data.get("call_id"):
            with self._lock:
                self._parsed[data["call_id"]] = clean_data(data)

    # ------------------------------------------------------------------ tool calls

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      metadata: dict[str, Any] | None = None,
                      inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        md = metadata or {}
        step = ToolStep(tool=str((serialized or {}).get("name") or kwargs.get("name") or "tool"),
                        node=str(md.get("langgraph_node") or ""),
                        input=clean_data(inputs if inputs is not None else input_str),
                        started_at=time.time())
        with self._lock:
            self._pending[run_id] = _Call(step, time.perf_counter())

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._pending.pop(run_id, None)
            if call is not None and isinstance(call.step, ToolStep):
                call.step.output = _hits(output)
                self.calls.append(call.done())

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._pending.pop(run_id, None)
            if call is not None and isinstance(call.step, ToolStep):
                call.step.error = clean_text(str(getattr(error, "message", None)
                                                 or f"{type(error).__name__}: {error}"))
                self.calls.append(call.done())

    # ------------------------------------------------------------------ result

    def trajectory(self, **fields: Any) -> Trajectory:
        """The recorded steps in start order, as a `Trajectory` with the given fields."""
        with self._lock:
            calls = sorted(self.calls, key=lambda c: c.step.started_at)
            parsed = dict(self._parsed)
        out = []
        for call in calls:
            step = call.step.model_copy()
            if isinstance(step, ModelStep) and call.call_id in parsed:
                step.parsed = parsed[call.call_id].get("parsed")
                step.parse_ok = bool(parsed[call.call_id].get("ok"))
            out.append(step)
        return Trajectory(steps=out, **fields)

    def reset(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._pending.clear()
            self._parsed.clear()
            self.calls.clear()
