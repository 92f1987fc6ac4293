"""Shared-prefix policy-gradient updates: each distinct prompt prefix computed once.

Every call of a role begins with the same static prefix (the chat template's system turn, the
role's instructions, the worked examples when they are on), and the rollouts of one task share
more: the same question, often the same first calls word for word. Run whole, an update
computes all of that again for every call. Here the prompts of an update form a prefix tree
(`prefix_tree`): each prefix that several calls share runs forward once, with gradients,
against its parent's keys and values, and its own per-layer keys and values are held as leaf
tensors; each call then runs only its suffix (the rest of its prompt and its completion)
against the deepest prefix it shares. Each call's loss is back-propagated through its suffix
into the weights and into the leaf keys and values, where the gradients add up; once a
prefix's calls and child prefixes are done, one backward pass through it carries their sum
into the weights and into its parent's leaves. This is exact: the same
per-token logprobs and the same gradients as running every call whole, up to float rounding
(tests/test_shared_prefix.py checks both to 1e-5 on a tiny Llama, full and LoRA), because
a causal model's prefix states do not depend on what follows them. It is the idea of
"Prefix Grouper" for GRPO; the suffix forwards use the same cache operations as the batched
decoder (`agents.kvcache`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl.trainer.utils import selective_log_softmax

from agents import kvcache
from tools import device as devices
from training.data import Sample

MIN_SHARED = 16  # a shorter common prefix is not worth a separate forward pass


@dataclass
class PrefixNode:
    """A prompt prefix several samples share: `members` (sample indices) run as suffixes on
    it, `children` are longer prefixes that start with it. The root has no prefix: its
    members run whole."""

    prefix: list[int]
    members: list[int] = field(default_factory=list)
    children: list[PrefixNode] = field(default_factory=list)

    def shared_tokens(self, parent: int = 0) -> int:
        """Prompt tokens not computed again thanks to this subtree's prefixes."""
        below = self.size()
        saved = (len(self.prefix) - parent) * (below - 1) if self.prefix else 0
        return saved + sum(c.shared_tokens(len(self.prefix)) for c in self.children)

    def size(self) -> int:
        """Samples in this subtree."""
        return len(self.members) + sum(c.size() for c in self.children)

    def nodes(self) -> int:
        """Prefixes computed (the root, without one, not counted)."""
        return bool(self.prefix) + sum(c.nodes() for c in self.children)


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all the sequences share."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def prefix_tree(samples: Sequence[Sample], min_shared: int = MIN_SHARED) -> PrefixNode:
    """The samples' prompts as a tree of shared prefixes.

    A prefix becomes a node when at least two samples share it and it adds at least
    `min_shared` tokens to its parent's; it stops at least one token before each of its
    samples' prompts end (every sample keeps a suffix to run, whose first logit predicts its
    first completion token).
    """
    root = PrefixNode([])
    _grow(root, list(range(len(samples))), [s.prompt_ids[:-1] for s in samples], 0, min_shared)
    return root


def _grow(node: PrefixNode, members: list[int], shareable: list[list[int]], depth: int,
          min_shared: int) -> None:
    """Attach `members` (all sharing `shareable[i][:depth]`, depth past the node's prefix)
    below `node`: as suffixes of it, or in child prefixes."""
    branches: dict[int, list[int]] = defaultdict(list)
    for i in members:
        if len(shareable[i]) > depth:
            branches[shareable[i][depth]].append(i)
        else:
            node.members.append(i)
    for branch in branches.values():
        if len(branch) == 1:
            node.members.extend(branch)
            continue
        end = depth + common_prefix_length([shareable[i][depth:] for i in branch])
        if end - len(node.prefix) >= min_shared:
            child = PrefixNode(list(shareable[branch[0]][:end]))
            node.children.append(child)
            _grow(child, branch, shareable, end, min_shared)
        else:  # too short to be worth its own forward pass: branch further down from here
            _grow(node, branch, shareable, end, min_shared)


class SharedPrefix:
    """One prompt prefix run forward once with gradients; calls run as suffixes against it."""

    def __init__(self, model: Any, prefix: Sequence[int], parent: SharedPrefix | None = None):
        self.model = model
        self.prefix = list(prefix)
        self.length = len(self.prefix)
        start = parent.length if parent is not None else 0
        if parent is not None and self.prefix[:start] != parent.prefix:
            raise ValueError("a prefix must extend its parent's")
        cache = parent.cache() if parent is not None else kvcache.empty()
        ids = torch.tensor([self.prefix[start:]], device=devices.of(model))
        kvcache.forward(model, cache, input_ids=ids, logits_to_keep=1)
        self._states = [t for kv in kvcache.layers(cache) for t in kv]
        # the suffixes read detached copies; their gradients gather there until `backward`
        self._leaves = [t.detach().requires_grad_(t.requires_grad) for t in self._states]

    def completion_logps(self, sample: Sample, temperature: float) -> torch.Tensor:
        """Log-probabilities of a sample's completion tokens, its suffix run on this prefix."""
        if sample.prompt_ids[:self.length] != self.prefix:
            raise ValueError("this sample's prompt does not start with the shared prefix")
        device = devices.of(self.model)
        suffix = sample.prompt_ids[self.length:] + sample.completion_ids
        n = len(sample.completion_ids)
        out = kvcache.forward(self.model, self.cache(), input_ids=torch.tensor([suffix], device=device),
                              logits_to_keep=n + 1)
        logits = out.logits[0, :-1, :].float()
        return selective_log_softmax(logits / (temperature if temperature > 0 else 1.0),
                                     torch.tensor(sample.completion_ids, device=device))

    def cache(self) -> kvcache.Cache:
        """A fresh cache holding this prefix's keys and values (the gradient-gathering leaves)."""
        return kvcache.from_layers(list(zip(self._leaves[::2], self._leaves[1::2], strict=True)))

    def backward(self) -> None:
        """Carry the gradients gathered on the prefix's keys and values into the weights."""
        pairs = [(s, leaf.grad) for s, leaf in zip(self._states, self._leaves, strict=True)
                 if s.requires_grad and leaf.grad is not None]
        if pairs:
            torch.autograd.backward([s for s, _ in pairs], grad_tensors=[g for _, g in pairs])
        self._states, self._leaves = [], []
