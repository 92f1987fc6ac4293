"""The OpenAI wire format that `agents.serve` speaks: requests in, replies and errors out.

Only the parts a served policy can honour are accepted; the rest is a 400 that says so, never
silently ignored. Shapes follow OpenAI's chat-completions and completions APIs; two vLLM
extensions are kept under vLLM's names (`return_tokens_as_token_ids`,
`include_stop_str_in_output`, plus `min_tokens`), so `agents.remote.OpenAISampler` can sample
from a served policy as it does from vLLM.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 8  # choices per request; each one is a row of the batch
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


class ApiError(Exception):
    """An error the client caused (or the server hit), answered as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        """`{"error": {message, type, param, code}}`, as OpenAI answers."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


class _Sampling(BaseModel):
    """Sampling parameters both endpoints share; None means the served model's default."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(1, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    min_tokens: int = Field(0, ge=0)  # vLLM
    include_stop_str_in_output: bool = False  # vLLM
    return_tokens_as_token_ids: bool = False  # vLLM
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @property
    def stops(self) -> list[str]:
        """The stop strings as a list (OpenAI accepts one string or up to four)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class ChatRequest(_Sampling):
    """A `/v1/chat/completions` request."""

    messages: list[Any]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @property
    def new_tokens(self) -> int | None:
        """The reply's token cap: `max_completion_tokens`, else the older `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    """A `/v1/completions` request: a prompt as text or token ids."""

    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


def parse(cls: type[_Sampling], body: Any) -> Any:
    """The request model of a JSON body; a 400 naming the first bad field otherwise."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        req = cls.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param) from None
    _refuse_unsupported(req)
    return req


def _refuse_unsupported(req: _Sampling) -> None:
    """A 400 for what a local policy cannot do, rather than a reply that ignores it."""
    unsupported = {"presence_penalty": bool(req.presence_penalty),
                   "frequency_penalty": bool(req.frequency_penalty),
                   "logit_bias": bool(req.logit_bias)}
    if isinstance(req, ChatRequest):
        fmt = (req.response_format or {}).get("type", "text")
        unsupported |= {"tools": bool(req.tools), "functions": bool(req.functions),
                        "tool_choice": req.tool_choice not in (None, "none", "auto"),
                        "response_format": fmt != "text"}
        if req.top_logprobs and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    else:
        unsupported |= {"echo": req.echo, "suffix": bool(req.suffix),
                        "best_of": req.best_of not in (None, 1)}
    for name, used in unsupported.items():
        if used:
            raise ApiError(400, f"{name} is not supported by this server (a local policy "
                           "served by sleuth)", param=name, code="unsupported_parameter")
    if len(req.stops) > 4:
        raise ApiError(400, "at most 4 stop sequences", param="stop")


# --------------------------------------------------------------------------- messages

_ROLES = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage,
          "assistant": AIMessage}


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise ApiError(400, f"{where}: only text content parts are supported",
                               param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where}: content must be a string or a list of text parts", param=where)


def to_messages(raw: Sequence[Any]) -> list[BaseMessage]:
    """OpenAI chat messages as LangChain messages (system/developer, user, assistant, tool)."""
    if not raw:
        raise ApiError(400, "messages must hold at least one message", param="messages")
    out: list[BaseMessage] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"{where} must be an object with a role", param=where)
        role, text = m["role"], _text(m.get("content"), f"{where}.content")
        if role == "tool":
            out.append(ToolMessage(content=text, tool_call_id=str(m.get("tool_call_id") or "")))
        elif role in _ROLES:
            out.append(_ROLES[role](content=text))
        else:
            raise ApiError(400, f"{where}.role {role!r} is not one of system, developer, user, "
                           "assistant, tool", param=f"{where}.role")
    return out


# --------------------------------------------------------------------------- replies


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to (not including) the first stop string in it, as OpenAI returns it.

    >>> cut_at_stop("Paris.</answer> more", ["</answer>"])
    'Paris.'
    """
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(ends)] if ends else text


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable-character table (GPT-2, SmolLM2)."""
    byte_values = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    char_codes = byte_values[:]
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            char_codes.append(256 + len(char_codes) - 188)  # 188 bytes print as themselves
    return {chr(c): b for b, c in zip(byte_values, char_codes, strict=True)}


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """The UTF-8 bytes a token stands for (exact for byte-level BPE, else its decoded text's)."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    table = _byte_decoder()
    if isinstance(piece, str) and piece and all(ch in table for ch in piece):
        return [table[ch] for ch in piece]
    return list(tokenizer.decode([token_id]).encode("utf-8"))


def token_name(tokenizer: Any, token_id: int, as_id: bool) -> str:
    """A token as a logprobs entry names it: its text, or vLLM's `token_id:N`."""
    return f"token_id:{token_id}" if as_id else tokenizer.decode([token_id])


def chat_logprobs(tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float],
                  top: Sequence[Sequence[tuple[int, float]]] | None, as_ids: bool) -> dict[str, Any]:
    """A chat choice's `logprobs`: one entry per sampled token (end of turn included)."""
    def entry(tid: int, lp: float) -> dict[str, Any]:
        return {"token": token_name(tokenizer, tid, as_ids), "logprob": float(lp),
                "bytes": token_bytes(tokenizer, tid)}

    content = []
    for k, (tid, lp) in enumerate(zip(ids, logprobs, strict=True)):
        alts = [entry(t, v) for t, v in top[k]] if top is not None else []
        content.append({**entry(tid, lp), "top_logprobs": alts})
    return {"content": content, "refusal": None}


def completion_logprobs(tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float],
                        as_ids: bool) -> dict[str, Any]:
    """A completions choice's `logprobs` (the legacy shape: parallel lists)."""
    offsets, pos = [], 0
    for t in ids:  # where each token's text starts in the completion's text
        offsets.append(pos)
        pos += len(tokenizer.decode([t]))
    return {"tokens": [token_name(tokenizer, t, as_ids) for t in ids],
            "token_logprobs": [float(v) for v in logprobs], "top_logprobs": None,
            "text_offset": offsets}


def envelope(kind: str, model: str, choices: list[dict[str, Any]],
             usage: dict[str, int] | None, rid: str | None = None) -> dict[str, Any]:
    """The reply object around the choices (`chat.completion`, `chat.completion.chunk`, ...)."""
    prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
    out = {"id": rid or f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
           "model": model, "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage block."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
