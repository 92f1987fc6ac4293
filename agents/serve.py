"""Serve a policy over HTTP as an OpenAI-compatible API (`sleuth serve --model SPEC`).

A trained `local:smollm2-sleuth` or `hf:DIR` checkpoint then works with any OpenAI client or
framework (`ChatOpenAI(base_url=...)`, `load_chat_model("openai:NAME", base_url=...)`), as
ART serves its trained LoRA. Endpoints: `/v1/models`, `/v1/chat/completions`, and
`/v1/completions` with token-id prompts, so `agents.remote.OpenAISampler` (the "openai"
rollout engine) can sample from a served policy as it does from vLLM.

Why our own server rather than vLLM: the policy is a `LocalChatModel` on a CPU, and serving it
through its own batcher keeps what training relies on. Requests are answered on one asyncio
loop through the model's async API, so requests arriving together are decoded as one batch
(no lock); each choice reports the exact token ids it sampled and their logprobs under
softmax(logits / T) before top-p truncation (the trainer's distribution; T = 1 when greedy).
Where it departs from OpenAI's API:

- sampling parameters a request leaves out take the served model's own defaults (its
  `temperature`, `top_p`, `max_new_tokens`), as vLLM takes a model's generation config;
- `logprobs` list every sampled token, the end-of-turn token included, so their count is
  `usage.completion_tokens`; `top_logprobs: k` costs one extra forward pass over prompt and
  completion (exact with the transformers engine);
- `stream: true` streams a reply once it is decoded (the batcher has no per-token callback):
  the chunks and their logprobs are exact, the latency is not that of true streaming;
- a stop string ends the text before it, as in OpenAI; its tokens stay in the logprobs and
  the usage (`include_stop_str_in_output: true` keeps it, as in vLLM);
- tools, penalties, logit bias and JSON response formats are refused with a 400.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from agents.decoding import GenerationRequest
from agents.models import LocalChatModel, load_chat_model
from agents.openai_wire import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    cut_at_stop,
    envelope,
    parse,
    to_messages,
    usage,
)
from tools import device as devices

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError:  # pragma: no cover - the extra is missing
    raise ImportError("serving a policy needs the serve extra: pip install 'sleuth[serve]'") from None

MAX_TOKENS = 4096  # the most new tokens one request may ask for


def top_alternatives(chat: LocalChatModel, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                     temperature: float, k: int) -> list[list[tuple[int, float]]]:
    """The k likeliest tokens (id, logprob) at each completion position, under
    softmax(logits / T), from one forward pass over prompt and completion."""
    import torch

    if not completion_ids or k <= 0:
        return [[] for _ in completion_ids]
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=devices.of(chat.model))
    with torch.no_grad():
        logits = chat.model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    t = temperature if temperature > 0 else 1.0
    values, index = torch.log_softmax(logits / t, dim=-1).topk(k, dim=-1)
    return [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(index, values, strict=True)]


class PolicyApi:
    """The endpoints over one chat model; a `LocalChatModel` adds token ids and logprobs."""

    def __init__(self, chat: BaseChatModel, *, name: str | None = None,
                 api_key: str | None = None, max_tokens: int = MAX_TOKENS):
        self.chat = chat
        self.local = chat if isinstance(chat, LocalChatModel) else None
        self.name = name or str(getattr(chat, "model_name", None) or "sleuth")
        self.api_key, self.max_tokens = api_key, max_tokens

    # ------------------------------------------------------------------ plumbing

    async def _body(self, request: Request) -> Any:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "a valid API key is needed (Authorization: Bearer KEY)",
                           code="invalid_api_key")
        try:
            return json.loads(await request.body())
        except ValueError as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    def _check(self, req: Any, cap: int | None) -> None:
        if req.model not in (None, self.name):
            raise ApiError(404, f"model {req.model!r} is not served here; this server serves "
                           f"{self.name!r}", param="model", code="model_not_found")
        if cap is not None and cap > self.max_tokens:
            raise ApiError(400, f"at most {self.max_tokens} new tokens per request, not {cap}",
                           param="max_tokens")

    def _seed(self, req: Any, i: int) -> dict[str, int]:
        return {} if req.seed is None else {"seed": req.seed + i}

    def _options(self, req: Any, cap: int | None) -> dict[str, Any]:
        """The request's sampling parameters as the model's invoke options (set ones only)."""
        opts = {"temperature": req.temperature, "top_p": req.top_p, "max_new_tokens": cap,
                "min_new_tokens": req.min_tokens or None}
        return {k: v for k, v in opts.items() if v is not None}

    # ------------------------------------------------------------------ endpoints

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`: the one served model."""
        return JSONResponse({"object": "list", "data": [
            {"id": self.name, "object": "model", "created": 0, "owned_by": "sleuth"}]})

    async def chat_completions(self, request: Request) -> Response:
        """`POST /v1/chat/completions`."""
        req: ChatRequest = parse(ChatRequest, await self._body(request))
        self._check(req, req.new_tokens)
        if req.logprobs and self.local is None:
            raise ApiError(400, "this model reports no logprobs", param="logprobs")
        messages = to_messages(req.messages)
        replies = await self._replies(messages, req)
        tops = await self._tops(replies, req.top_logprobs or 0)
        choices = [self._chat_choice(i, r, req, tops[i]) for i, r in enumerate(replies)]
        n_prompt = self._prompt_tokens(replies[0])
        n_done = sum(self._completion_tokens(r) for r in replies)
        if req.stream:
            include = bool((req.stream_options or {}).get("include_usage"))
            events = self._sse(replies, choices, usage(n_prompt, n_done) if include else None)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(envelope("chat.completion", self.name, choices, usage(n_prompt, n_done)))

    async def completions(self, request: Request) -> Response:
        """`POST /v1/completions`: one prompt, as text or token ids (a local model only)."""
        req: CompletionRequest = parse(CompletionRequest, await self._body(request))
        self._check(req, req.max_tokens)
        if self.local is None:
            raise ApiError(400, "/v1/completions needs a local model (local: or hf:)")
        if req.stream:
            raise ApiError(400, "stream is not supported on /v1/completions", param="stream")
        prompt = self._prompt_ids(req.prompt)
        gens = [self._generation(req, prompt, i) for i in range(req.n or 1)]
        try:
            futures = [asyncio.wrap_future(self.local.sampler.submit(g)) for g in gens]
        except ValueError as e:  # the prompt and the new tokens exceed the context
            raise ApiError(400, str(e), param="max_tokens") from None
        await asyncio.gather(*futures)
        k = req.logprobs or 0
        tops = await asyncio.gather(*(asyncio.to_thread(
            top_alternatives, self.local, prompt, g.result.token_ids, g.temperature, k)
            for g in gens)) if k else [None] * len(gens)
        choices = [self._completion_choice(i, g, req, tops[i]) for i, g in enumerate(gens)]
        n_done = sum(len(g.result.token_ids) for g in gens)
        return JSONResponse(envelope("text_completion", self.name, choices, usage(len(prompt), n_done)))

    # ------------------------------------------------------------------ chat

    async def _replies(self, messages: list[BaseMessage], req: ChatRequest) -> list[AIMessage]:
        opts = self._options(req, req.new_tokens)
        calls = [self.chat.ainvoke(messages, stop=req.stops or None, **opts, **self._seed(req, i))
                 for i in range(req.n or 1)]
        try:
            return list(await asyncio.gather(*calls))
        except ValueError as e:  # e.g. the prompt and the new tokens exceed the context
            raise ApiError(400, str(e), param="messages") from None

    async def _tops(self, replies: list[AIMessage], k: int) -> list[Any]:
        if not k or self.local is None:
            return [None] * len(replies)
        jobs = []
        for r in replies:
            m = r.response_metadata
            jobs.append(asyncio.to_thread(top_alternatives, self.local, m["prompt_token_ids"],
                                          m["completion_token_ids"], m["temperature"], k))
        return list(await asyncio.gather(*jobs))

    def _text(self, text: str, req: Any) -> str:
        return text if req.include_stop_str_in_output else cut_at_stop(text, req.stops)

    def _chat_choice(self, i: int, reply: AIMessage, req: ChatRequest, top: Any) -> dict[str, Any]:
        meta = reply.response_metadata
        logprobs = None
        if req.logprobs and self.local is not None:
            logprobs = chat_logprobs(self.local.tokenizer, meta["completion_token_ids"],
                                     meta["logprobs"], top, req.return_tokens_as_token_ids)
        return {"index": i, "message": {"role": "assistant", "content": self._text(str(reply.content), req),
                                        "refusal": None},
                "logprobs": logprobs, "finish_reason": meta.get("finish_reason") or "stop"}

    def _prompt_tokens(self, reply: AIMessage) -> int:
        ids = reply.response_metadata.get("prompt_token_ids")
        return len(ids) if ids is not None else int((reply.usage_metadata or {}).get("input_tokens", 0))

    def _completion_tokens(self, reply: AIMessage) -> int:
        ids = reply.response_metadata.get("completion_token_ids")
        return len(ids) if ids is not None else int((reply.usage_metadata or {}).get("output_tokens", 0))

    def _pieces(self, reply: AIMessage, text: str) -> Iterator[tuple[str, int | None]]:
        """The text in per-token pieces, with the index of the token each piece ends at: a
        piece grows only while the decoded tokens are a prefix of the text (a split UTF-8
        character waits for its last byte; tokens past a stop string give empty pieces)."""
        ids = reply.response_metadata.get("completion_token_ids")
        if ids is None or self.local is None:
            yield text, None
            return
        sent = 0
        for k in range(len(ids)):
            so_far = self.local.tokenizer.decode(ids[:k + 1], skip_special_tokens=True)
            end = len(so_far) if text.startswith(so_far) else sent
            yield text[sent:max(end, sent)], k
            sent = max(end, sent)
        if sent < len(text):
            yield text[sent:], None

    def _sse(self, replies: list[AIMessage], choices: list[dict[str, Any]],
             final_usage: dict[str, int] | None) -> Iterator[str]:
        """The replies as `chat.completion.chunk` server-sent events, one per token."""
        rid = envelope("chat.completion.chunk", self.name, [], None)["id"]

        def event(choice: dict[str, Any] | None, use: dict[str, int] | None = None) -> str:
            body = envelope("chat.completion.chunk", self.name, [choice] if choice else [], use, rid)
            return f"data: {json.dumps(body)}\n\n"

        for reply, choice in zip(replies, choices, strict=True):
            i, lp = choice["index"], choice["logprobs"]
            yield event({"index": i, "delta": {"role": "assistant", "content": ""},
                         "logprobs": None, "finish_reason": None})
            for piece, k in self._pieces(reply, choice["message"]["content"]):
                entries = {"content": [lp["content"][k]], "refusal": None} if lp and k is not None else None
                yield event({"index": i, "delta": {"content": piece}, "logprobs": entries,
                             "finish_reason": None})
            yield event({"index": i, "delta": {}, "logprobs": None,
                         "finish_reason": choice["finish_reason"]})
        if final_usage is not None:
            yield event(None, final_usage)
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------ completions

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one prompt
        if isinstance(prompt, str):
            return list(self.local.tokenizer(prompt)["input_ids"])  # type: ignore[union-attr]
        if prompt and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        raise ApiError(400, "prompt must be one text or one list of token ids", param="prompt")

    def _generation(self, req: CompletionRequest, prompt: list[int], i: int) -> GenerationRequest:
        chat = self.local
        assert chat is not None
        seed = req.seed + i if req.seed is not None else int.from_bytes(os.urandom(6), "little")
        return GenerationRequest(
            prompt_ids=prompt, seed=seed, stop=req.stops, min_new_tokens=req.min_tokens,
            temperature=chat.temperature if req.temperature is None else req.temperature,
            top_p=chat.top_p if req.top_p is None else req.top_p,
            max_new_tokens=req.max_tokens or chat.max_new_tokens)

    def _completion_choice(self, i: int, gen: GenerationRequest, req: CompletionRequest,
                           top: Any) -> dict[str, Any]:
        out = gen.result
        assert out is not None and self.local is not None
        tok = self.local.tokenizer
        logprobs = None
        if req.logprobs is not None:
            logprobs = completion_logprobs(tok, out.token_ids, out.logprobs,
                                           req.return_tokens_as_token_ids)
            if top is not None:
                as_ids = req.return_tokens_as_token_ids
                logprobs["top_logprobs"] = [{(f"token_id:{t}" if as_ids else tok.decode([t])): v
                                             for t, v in alts} for alts in top]
        return {"index": i, "text": self._text(out.text, req), "logprobs": logprobs,
                "finish_reason": out.finish_reason}


# --------------------------------------------------------------------------- the app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return await _api_error(request, ApiError(exc.status_code, f"{request.method} {request.url.path}: "
                                              f"{exc.detail}", code=code))


async def _server_error(request: Request, exc: Exception) -> Response:
    return await _api_error(request, ApiError(500, f"{type(exc).__name__}: {exc}", kind="server_error"))


def create_app(chat: BaseChatModel, *, name: str | None = None, api_key: str | None = None,
               max_tokens: int = MAX_TOKENS) -> Starlette:
    """The ASGI app serving `chat` (run it with any ASGI server, or use `PolicyServer`)."""
    api = PolicyApi(chat, name=name, api_key=api_key, max_tokens=max_tokens)
    routes = [Route("/v1/models", api.models, methods=["GET"]),
              Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
              Route("/v1/completions", api.completions, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.api = api
    return app


class PolicyServer:
    """A chat model served on host:port (127.0.0.1 by default; port 0 picks a free one).

    As a context manager it serves from a background thread; `serve_forever()` serves in
    this one until Ctrl-C.
    """

    def __init__(self, model: str | BaseChatModel, *, host: str = "127.0.0.1", port: int = 0,
                 name: str | None = None, api_key: str | None = None, max_tokens: int = MAX_TOKENS):
        self.chat = load_chat_model(model)
        self.app = create_app(self.chat, name=name, api_key=api_key, max_tokens=max_tokens)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family)
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning",
                                                     lifespan="off", access_log=False))
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The model name clients ask for."""
        return self.app.state.api.name

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:8000/v1."""
        host, port = self._sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def start(self) -> PolicyServer:
        """Serve from a background thread; returns once the server accepts requests."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True, name="sleuth-serve")
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server at {self.url} did not start")
            self._thread.join(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
