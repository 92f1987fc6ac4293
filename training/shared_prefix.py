"""Shared-prefix policy-gradient updates: each distinct prompt prefix computed once.

Every call of a role begins with the same static prefix (the chat template's system turn, the
role's instructions, the worked examples when they are on). Run whole, an update computes
that prefix again for every call. Here the calls of an update that share a prefix are
grouped; the prefix runs forward once, with gradients, and its per-layer keys and values are
held as leaf tensors; each call then runs only its suffix (the rest of its prompt and its
completion) against them. Each call's loss is back-propagated through its suffix into the
weights and into the leaf keys and values, where the gradients add up; one backward pass
through the prefix then carries their sum into the weights. This is exact: the same
per-token logprobs and the same gradients as running every call whole, up to float rounding
(tests/test_shared_prefix.py checks both to 1e-5 on a tiny Llama, full and LoRA), because
a causal model's prefix states do not depend on what follows them. It is the idea of
"Prefix Grouper" for GRPO; the suffix forwards use the same cache operations as the batched
decoder (`agents.kvcache`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.utils import selective_log_softmax

from agents import kvcache
from training.data import Sample

MIN_SHARED = 16  # a shorter common prefix is not worth a separate forward pass


@dataclass
class PrefixGroup:
    """Indices of samples whose prompts all start with `prefix` (empty: run them whole)."""

    prefix: list[int]
    members: list[int]


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all the sequences share."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def group_by_prefix(samples: Sequence[Sample], min_shared: int = MIN_SHARED) -> list[PrefixGroup]:
    """The samples grouped by role, each group with the prompt prefix all its members share.

    The prefix stops at least one token before the shortest prompt (every member keeps a
    suffix to run, whose first logit predicts the first completion token). A role whose
    calls share fewer than `min_shared` tokens, or that has a single call, is run whole.
    """
    by_role: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_role[s.role].append(i)
    groups = []
    for members in by_role.values():
        prompts = [samples[i].prompt_ids for i in members]
        n = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        shared = len(members) > 1 and n >= min_shared
        groups.append(PrefixGroup(list(prompts[0][:n]) if shared else [], members))
    return groups


class SharedPrefix:
    """One prompt prefix run forward once with gradients; calls run as suffixes against it."""

    def __init__(self, model: Any, prefix: Sequence[int]):
        self.model = model
        self.prefix = list(prefix)
        self.length = len(self.prefix)
        cache = kvcache.empty()
        ids = torch.tensor([list(prefix)], device=_device(model))
        kvcache.forward(model, cache, input_ids=ids, logits_to_keep=1)
        self._states = [t for kv in kvcache.layers(cache) for t in kv]
        # the suffixes read detached copies; their gradients gather there until `backward`
        self._leaves = [t.detach().requires_grad_(t.requires_grad) for t in self._states]

    def completion_logps(self, sample: Sample, temperature: float) -> torch.Tensor:
        """Log-probabilities of a sample's completion tokens, its suffix run on this prefix."""
        if sample.prompt_ids[:self.length] != self.prefix:
            raise ValueError("this sample's prompt does not start with the shared prefix")
        device = _device(self.model)
        suffix = sample.prompt_ids[self.length:] + sample.completion_ids
        n = len(sample.completion_ids)
        cache = kvcache.from_layers(list(zip(self._leaves[::2], self._leaves[1::2], strict=True)))
        out = kvcache.forward(self.model, cache, input_ids=torch.tensor([suffix], device=device),
                              logits_to_keep=n + 1)
        logits = out.logits[0, :-1, :].float()
        return selective_log_softmax(logits / (temperature if temperature > 0 else 1.0),
                                     torch.tensor(sample.completion_ids, device=device))

    def backward(self) -> None:
        """Carry the gradients gathered on the prefix's keys and values into the weights."""
        pairs = [(s, leaf.grad) for s, leaf in zip(self._states, self._leaves, strict=True)
                 if s.requires_grad and leaf.grad is not None]
        if pairs:
            torch.autograd.backward([s for s, _ in pairs], grad_tensors=[g for _, g in pairs])
        self._states, self._leaves = [], []


def _device(model: Any) -> torch.device:
    return getattr(model, "device", None) or torch.device("cpu")
