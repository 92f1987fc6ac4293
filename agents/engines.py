"""Rollout engines: what decodes a `LocalChatModel`'s requests, behind one protocol.

A sampler takes `GenerationRequest`s (prompt token ids and sampling parameters) and fills
each one's `GenerationOutput` (completion token ids, per-token logprobs under softmax(logits
/ T), text, finish reason); `weights_changed()` tells it the trainer has updated the weights
it samples from. Engines:

- "transformers" (default): `agents.decoding.Batcher`, in-process, on the model's own
  weights (exact logprobs; per-request seeds; continuous batching; prefix KV cache).
- "ct2-int8": `agents.ct2.CT2Sampler`, CTranslate2 int8 on the CPU (batches of one static
  prefix and one length band, decoded in parallel; logprobs from int8 weights, so the
  trainer corrects for the mismatch).
- "openai": `agents.remote.OpenAISampler`, a vLLM (or other OpenAI-compatible) server
  sampling from the base model plus the trainer's LoRA adapter, pushed after every update
  (options: `base_url`, `served_model`, `api_key`).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

from agents.decoding import GenerationRequest

ENGINES = ("transformers", "ct2-int8", "openai")
LOCAL_ENGINES = ENGINES[:2]  # the engines that decode in this process, no server


class Sampler(Protocol):
    """Decodes generation requests from a policy's current weights."""

    exact: bool  # True when its logprobs are the trainer's (same weights, same kernels)

    def submit(self, req: GenerationRequest) -> Future:
        """Queue a request; the future resolves once `req.result` is set."""
        ...

    def weights_changed(self) -> None:
        """The weights were updated: sample from the new ones from the next request on."""
        ...

    def close(self) -> None:
        """Stop, after the queued requests."""
        ...


def make_sampler(engine: str, model: Any, tokenizer: Any, *, window_s: float = 0.005,
                 max_batch: int = 16, prefix_cache_size: int = 16, **options: Any) -> Sampler:
    """The sampler of an engine name (see the module docstring) for this model; `options`
    go to the engine ("openai": base_url, served_model, api_key)."""
    if engine == "transformers":
        from agents.decoding import Batcher

        return Batcher(model, tokenizer, window_s=window_s, max_batch=max_batch,
                       prefix_cache_size=prefix_cache_size)
    if engine == "ct2-int8":
        from agents.ct2 import CT2Sampler

        return CT2Sampler(model, tokenizer, window_s=window_s, max_batch=max_batch, **options)
    if engine == "openai":
        from agents.remote import OpenAISampler

        if "base_url" not in options or "served_model" not in options:
            raise ValueError("the openai engine needs engine_options base_url (e.g. "
                             "http://127.0.0.1:8000/v1) and served_model (the server's model name)")
        return OpenAISampler(tokenizer=tokenizer, model=model, max_concurrency=max_batch, **options)
    raise ValueError(f"unknown engine {engine!r}: the engines are {', '.join(ENGINES)}")
