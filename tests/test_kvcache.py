"""Contract test for agents/kvcache.py: what it assumes about transformers' KV cache still holds.

Every check continues decoding from a cache the adapter built or changed and compares the
next-token logits with a reference the adapter did not touch (a full forward pass without a
cache, or the unchanged cache), so a transformers release that changes the cache's layout,
constructor, per-layer attributes or the forward argument's name fails here first.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agents import kvcache

KV_HEADS, HEAD_DIM, N_LAYERS = 2, 8, 2


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=N_LAYERS,
                      num_attention_heads=4, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                      initializer_range=0.2)  # large weights: the logits depend clearly on the context
    return LlamaForCausalLM(cfg).eval()


def ids(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(sum(shape)))


@torch.no_grad()
def prefill(model: LlamaForCausalLM, input_ids: torch.Tensor, **inputs) -> kvcache.Cache:
    cache = kvcache.empty()
    kvcache.forward(model, cache, input_ids=input_ids, **inputs)
    return cache


@torch.no_grad()
def next_logits(model: LlamaForCausalLM, cache: kvcache.Cache, tokens: torch.Tensor,
                **inputs) -> torch.Tensor:
    return kvcache.forward(model, cache, input_ids=tokens, **inputs).logits[:, -1].float()


@torch.no_grad()
def full_logits(model: LlamaForCausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, use_cache=False).logits[:, -1].float()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_forward_fills_layers_of_batch_heads_seq_dim(model):
    cache = prefill(model, ids(3, 5))
    kv = kvcache.layers(cache)
    assert len(kv) == N_LAYERS
    for k, v in kv:
        assert k.shape == v.shape == (3, KV_HEADS, 5, HEAD_DIM)
    assert not torch.equal(kv[0][0], kv[0][1])  # keys and values, not the same tensor twice


def test_from_layers_continues_like_the_original(model):
    prompt, nxt = ids(2, 6), ids(2, 1)
    original = prefill(model, prompt)
    rebuilt = kvcache.from_layers(kvcache.layers(original))
    for (k0, v0), (k1, v1) in zip(kvcache.layers(original), kvcache.layers(rebuilt), strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    from_rebuilt = next_logits(model, rebuilt, nxt)
    assert close(from_rebuilt, next_logits(model, original, nxt))
    # the cache was really read: continuing equals the whole sequence without a cache
    assert close(from_rebuilt, full_logits(model, torch.cat([prompt, nxt], dim=1)))
    assert not close(from_rebuilt, full_logits(model, nxt))
    assert kvcache.layers(rebuilt)[0][0].shape[2] == 7  # and extended by the new token


def test_select_rows_keeps_the_chosen_rows_in_order(model):
    prompt, nxt = ids(3, 5), ids(3, 1)
    full = prefill(model, prompt)
    picked = kvcache.from_layers(kvcache.layers(full))
    rows = torch.tensor([2, 0])
    kvcache.select_rows(picked, rows)
    assert kvcache.layers(picked)[0][0].shape[0] == 2
    assert close(next_logits(model, picked, nxt[rows]), next_logits(model, full, nxt)[rows])


def test_drop_columns_of_masked_left_padding_changes_nothing(model):
    pad, real = 4, ids(1, 5)
    padded = torch.cat([torch.zeros((1, pad), dtype=torch.long), real], dim=1)
    mask = torch.cat([torch.zeros((1, pad), dtype=torch.long), torch.ones((1, 5), dtype=torch.long)], dim=1)
    positions = torch.cat([torch.ones((1, pad), dtype=torch.long), torch.arange(5).unsqueeze(0)], dim=1)
    cache = prefill(model, padded, attention_mask=mask, position_ids=positions)
    kvcache.drop_columns(cache, pad)
    assert kvcache.layers(cache)[0][0].shape[2] == 5
    nxt = ids(1, 1)
    trimmed = next_logits(model, cache, nxt, attention_mask=torch.ones((1, 6), dtype=torch.long),
                          position_ids=torch.tensor([[5]]))
    assert close(trimmed, next_logits(model, prefill(model, real), nxt))
    assert close(trimmed, full_logits(model, torch.cat([real, nxt], dim=1)))
