"""Correcting for a sampler that is not the trainer: truncated importance sampling.

A fast rollout engine (CTranslate2 int8, a vLLM server) samples from weights or kernels that
differ slightly from the trainer's, so its logprobs are not the policy's. Two choices, made
as TRL makes them for vLLM: the clipped ratio's denominator ("old" logprobs) is recomputed
with the trainer's weights — here without an extra forward pass: on the first of
`num_iterations` inner epochs the trainer's own logprobs of that very forward, detached, are
exactly the old policy's — and each token's loss is weighted by pi_trainer / pi_sampler,
truncated or masked (TRL's `vllm_importance_sampling_mode`: token_truncate, token_mask,
sequence_truncate, sequence_mask; bounds `vllm_importance_sampling_clip_min/max`), so the
gradient estimates the trainer's policy although another engine drew the tokens.
"""

from __future__ import annotations

import math

import torch

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, *,
                       mode: str = "sequence_mask", clip_min: float | None = None,
                       clip_max: float | None = 3.0) -> torch.Tensor:
    """Per-token weights pi_trainer / pi_sampler of one completion (shape of the inputs),
    per token or for the whole sequence, truncated to [clip_min, clip_max] or zeroed outside."""
    if mode not in MODES:
        raise ValueError(f"importance sampling mode must be one of {', '.join(MODES)}, not {mode!r}")
    diff = torch.nan_to_num(trainer_logps.detach() - sampler_logps, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True).expand_as(trainer_logps)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -math.inf
    high = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
