"""Rollout engines: what decodes a `LocalChatModel`'s requests, behind one protocol.

A sampler takes `GenerationRequest`s (prompt token ids and sampling parameters) and fills
each one's `GenerationOutput` (completion token ids, per-token logprobs under softmax(logits
/ T), text, finish reason); `weights_changed()` tells it the trainer has updated the weights
it samples from. Engines:

- "transformers" (default): `agents.decoding.Batcher`, in-process, on the model's own
  weights (exact logprobs; per-request seeds; continuous batching; prefix KV cache).
- "ct2-int8": `agents.ct2.CT2Sampler`, CTranslate2 int8 on the CPU (several times faster
  decoding; logprobs from int8 weights, so the trainer corrects for the mismatch).

A model served elsewhere (vLLM or any OpenAI-compatible server) is `agents.remote`.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

from agents.decoding import GenerationRequest

ENGINES = ("transformers", "ct2-int8")


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
                 max_batch: int = 16, prefix_cache_size: int = 16) -> Sampler:
    """The sampler of an engine name (see the module docstring) for this model."""
    if engine == "transformers":
        from agents.decoding import Batcher

        return Batcher(model, tokenizer, window_s=window_s, max_batch=max_batch,
                       prefix_cache_size=prefix_cache_size)
    if engine == "ct2-int8":
        from agents.ct2 import CT2Sampler

        return CT2Sampler(model, tokenizer, window_s=window_s, max_batch=max_batch)
    raise ValueError(f"unknown engine {engine!r}: the engines are {', '.join(ENGINES)}")
