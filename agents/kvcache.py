"""The KV-cache operations the batched decoder needs, over transformers' `DynamicCache`.

Why this module: the decoder builds caches from tensors, reads them back, drops rows and
leading positions, and hands a cache to the model's forward. transformers changes how all of
that is spelled between releases (the cache's constructor, its per-layer objects and their
attributes, even the name of the forward argument: `past_key_values` until 5.23, `cache`
from 5.24). This is the one place that knows; `agents.decoding` works with plain
per-layer (keys, values) tensors of shape (batch, kv_heads, seq, head_dim) and these
functions. tests/test_kvcache.py checks every assumption made here against the installed
transformers; pyproject.toml caps transformers at the newest release it passed with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import DynamicCache

Cache = DynamicCache
KV = tuple[torch.Tensor, torch.Tensor]

# transformers 5.24 renamed the forward argument (the old name still works there, with a warning)
_CACHE_ARG = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


def empty() -> DynamicCache:
    """A cache with no layers filled yet, for a forward pass to fill."""
    return DynamicCache()


def from_layers(kv: Sequence[KV]) -> DynamicCache:
    """A cache holding the given per-layer (keys, values)."""
    return DynamicCache(ddp_cache_data=list(kv))


def layers(cache: DynamicCache) -> list[KV]:
    """The cache's per-layer (keys, values), each (batch, kv_heads, seq, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def select_rows(cache: DynamicCache, idx: torch.Tensor) -> None:
    """Keep only the batch rows `idx`, in that order (in place)."""
    _map(cache, lambda t: t[idx])


def drop_columns(cache: DynamicCache, first: int) -> None:
    """Drop the first `first` positions of every layer (in place)."""
    _map(cache, lambda t: t[:, :, first:])


def forward(model: torch.nn.Module, cache: DynamicCache, **inputs: Any) -> Any:
    """Run the model on `inputs`, reading and extending `cache`."""
    return model(**inputs, **{_CACHE_ARG: cache}, use_cache=True)


def _map(cache: DynamicCache, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = fn(layer.keys), fn(layer.values)
